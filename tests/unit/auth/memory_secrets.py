"""An in-memory `SecretStore` with the token-vault's compare-and-set semantics, for unit
tests of auth's domain logic (the real vault is another service; the integration tests
use it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.auth.secret_store import Secret, SecretConflict


@dataclass
class MemorySecrets:
    """Secrets by (owner, name); `fail_puts` makes the next writes fail as if the vault
    were down."""

    rows: dict[tuple[str, str], Secret] = field(default_factory=dict)
    gets: int = 0
    puts: int = 0
    fail_puts: int = 0

    async def get(self, owner: str, name: str) -> Secret | None:
        self.gets += 1
        return self.rows.get((owner, name))

    async def put(
        self,
        owner: str,
        name: str,
        payload: bytes,
        metadata: Mapping[str, str],
        expected_version: int | None,
    ) -> int:
        self.puts += 1
        if self.fail_puts:
            self.fail_puts -= 1
            raise ConnectionError("vault unavailable")
        current = self.rows.get((owner, name))
        version = current.version if current is not None else 0
        if expected_version is not None and expected_version != version:
            raise SecretConflict(f"{owner}/{name} is at {version}, not {expected_version}")
        self.rows[(owner, name)] = Secret(bytes(payload), version + 1, dict(metadata))
        return version + 1

    async def delete(self, owner: str, name: str) -> None:
        self.rows.pop((owner, name), None)
