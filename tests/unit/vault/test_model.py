"""A stateful property test: random sequences of put / get / delete / rotate / rewrap /
concurrent compare-and-set against a model dict — the vault never loses a secret, never
returns another secret's (or another version's) bytes, and never leaves a row under a key the
keyring does not hold. In-process on the domain modules, over SQLite."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from services.common.errors import SagaError
from services.vault.barrier import Barrier
from services.vault.keyring_sources import FileKeyring
from services.vault.rotation import rewrap, rotate_key, status
from services.vault.store import SecretStore

T = TypeVar("T")

OWNERS = st.sampled_from(["user:a", "user:b"])
NAMES = st.sampled_from(["token", "refresh", "key"])
PAYLOADS = st.binary(max_size=48)
CAS = st.sampled_from(["none", "current", "absent", "stale"])


@dataclass
class Modelled:
    """What the vault should hold for one (owner, name)."""

    versions: dict[int, bytes] = field(default_factory=dict)
    current: int = 0
    last: int = 0


class VaultMachine(RuleBasedStateMachine):
    """The vault against a model (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="vault-model-"))
        self.source = FileKeyring(self.dir / "keyring.json")
        self.store = self.run(SecretStore.open("", "model", self.dir))
        self.barrier = self.run(Barrier.open(self.store, self.source, self.source.load()))
        self.model: dict[tuple[str, str], Modelled] = {}
        self.rotations = 0

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(work)

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()
        shutil.rmtree(self.dir)

    def entry(self, owner: str, name: str) -> Modelled:
        return self.model.setdefault((owner, name), Modelled())

    def expected(self, entry: Modelled, cas: str) -> int | None:
        return {"none": None, "current": entry.current, "absent": 0, "stale": entry.last + 7}[cas]

    def attempt(self, work: Coroutine[Any, Any, T]) -> tuple[T | None, str]:
        """What `work` returns, or the reason it fails with ("" when it succeeds)."""
        try:
            return self.run(work), ""
        except SagaError as error:
            return None, error.reason

    @rule(owner=OWNERS, name=NAMES, payload=PAYLOADS, cas=CAS)
    def put(self, owner: str, name: str, payload: bytes, cas: str) -> None:
        entry = self.entry(owner, name)
        expected = self.expected(entry, cas)
        version, reason = self.attempt(
            self.barrier.put(owner, name, payload, {"p": str(len(payload))}, expected)
        )
        if expected is not None and expected != entry.current:
            assert (version, reason) == (None, "VERSION_CONFLICT")
            return
        assert (version, reason) == (entry.last + 1, "")
        entry.versions[entry.last + 1] = payload
        entry.current = entry.last = entry.last + 1

    @rule(owner=OWNERS, name=NAMES, data=st.data())
    def get(self, owner: str, name: str, data: st.DataObject) -> None:
        entry = self.entry(owner, name)
        version = data.draw(st.sampled_from([0, *entry.versions, entry.last + 1]))
        wanted = entry.versions.get(version or entry.current)
        secret, reason = self.attempt(self.barrier.get(owner, name, version))
        if wanted is None:
            assert (secret, reason) == (None, "SECRET_NOT_FOUND")
            return
        assert secret is not None
        assert (secret.payload, secret.version) == (wanted, version or entry.current)

    @rule(owner=OWNERS, name=NAMES, cas=CAS)
    def delete(self, owner: str, name: str, cas: str) -> None:
        entry = self.entry(owner, name)
        expected = self.expected(entry, cas)
        _, reason = self.attempt(self.barrier.delete(owner, name, expected))
        if entry.current == 0:
            assert reason == "SECRET_NOT_FOUND"
        elif expected is not None and expected != entry.current:
            assert reason == "VERSION_CONFLICT"
        else:
            assert reason == ""
            entry.versions.clear()
            entry.current = 0

    @rule(owner=OWNERS, name=NAMES, payloads=st.lists(PAYLOADS, min_size=2, max_size=6))
    def concurrent_compare_and_set(self, owner: str, name: str, payloads: list[bytes]) -> None:
        entry = self.entry(owner, name)

        async def race() -> list[int | BaseException]:
            return await asyncio.gather(
                *(self.barrier.put(owner, name, p, {}, entry.current) for p in payloads),
                return_exceptions=True,
            )

        results = self.run(race())
        winners = [(i, r) for i, r in enumerate(results) if isinstance(r, int)]
        assert len(winners) == 1, results
        index, version = winners[0]
        assert all(
            isinstance(r, SagaError) and r.reason == "VERSION_CONFLICT"
            for r in results
            if not isinstance(r, int)
        )
        assert version == entry.last + 1
        entry.versions[version] = payloads[index]
        entry.current = entry.last = version

    @precondition(lambda self: self.rotations < 4)
    @rule()
    def rotate(self) -> None:
        before = self.barrier.keyring.active_id
        assert self.run(rotate_key(self.barrier)) != before
        self.rotations += 1

    @rule(
        batch_size=st.integers(min_value=1, max_value=4), stop_after=st.none() | st.integers(0, 3)
    )
    def rewrap(self, batch_size: int, stop_after: int | None) -> None:
        async def drive() -> None:
            stream = rewrap(self.barrier, batch_size)
            try:
                seen = 0
                async for progress in stream:
                    if stop_after is not None and seen == stop_after and not progress.done:
                        return  # interrupted: the next rewrap goes on from here
                    seen += 1
            finally:
                await stream.aclose()

        self.run(drive())
        if stop_after is None:
            current = self.run(status(self.barrier))
            assert current.key_ids_in_use == (self.barrier.keyring.active_id,)
            assert self.barrier.keyring.ids == (self.barrier.keyring.active_id,)

    @invariant()
    def every_live_version_reads_back_exactly(self) -> None:
        for (owner, name), entry in self.model.items():
            for version, payload in entry.versions.items():
                assert self.run(self.barrier.get(owner, name, version)).payload == payload

    @invariant()
    def listing_matches_the_model(self) -> None:
        for owner in ("user:a", "user:b"):
            infos, _ = self.run(self.barrier.list(owner))
            listed = {i.name: i.version for i in infos}
            assert listed == {
                n: e.current for (o, n), e in self.model.items() if o == owner and e.current
            }

    @invariant()
    def every_row_is_under_a_key_the_keyring_holds(self) -> None:
        in_use = set(self.run(status(self.barrier)).key_ids_in_use)
        assert in_use <= set(self.barrier.keyring.ids)
        assert set(FileKeyring(self.dir / "keyring.json").load().ids) == set(
            self.barrier.keyring.ids
        )


VaultMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_the_vault_never_loses_or_mixes_a_secret = VaultMachine.TestCase
