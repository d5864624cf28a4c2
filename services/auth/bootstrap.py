"""The first start (SPEC section 5): with no user yet, auth creates an admin user and an API
key with every scope, and writes the key to `<data_dir>/admin.key` (0600) for the operator.

The check, the inserts and the file write are one transaction, so two auth processes starting
at once on the same database create exactly one admin; a file that cannot be written undoes
the inserts. An existing `admin.key` is never overwritten.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from services.auth import api_keys
from services.auth.api_keys import ApiKey, User
from services.auth.store import Store
from services.common.context import SCOPES

log = logging.getLogger("saga.auth.bootstrap")

ADMIN_KEY_FILE = "admin.key"
ADMIN_KEY_NAME = "admin"
DEFAULT_TENANT = "default"


class StaleAdminKey(Exception):
    """`admin.key` exists although the database has no user: it belongs to another database."""


def _write_new(path: Path, secret: str) -> None:
    # O_EXCL: never overwrite; 0o600 at creation, so the key is never readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
        f.flush()
        os.fsync(f.fileno())


async def create_admin_key(store: Store, data_dir: Path) -> ApiKey | None:
    """Create the first admin and write its key to `data_dir/admin.key`, if there is no
    user yet; the key's record when created, None otherwise."""
    path = data_dir / ADMIN_KEY_FILE
    now = time.time()
    secret = api_keys.generate_key()
    user = User(user_id=api_keys.new_user_id("admin"), tenant=DEFAULT_TENANT, created_at=now)
    key = ApiKey(
        key_id=api_keys.new_key_id(),
        user_id=user.user_id,
        name=ADMIN_KEY_NAME,
        prefix=api_keys.display_prefix(secret),
        scopes=SCOPES,
        created_at=now,
    )
    written = False

    def write() -> None:
        nonlocal written
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            _write_new(path, secret)
        except FileExistsError:
            raise StaleAdminKey(
                f"{path} exists but the auth database has no user: it belongs to another "
                "database. Restore that database, or remove the file to create a new admin key"
            ) from None
        written = True

    try:
        created = await store.create_first_user(user, key, api_keys.hash_key(secret), write)
    except BaseException:
        if written:  # the commit failed after the file was written: do not leave a dead key
            path.unlink(missing_ok=True)
        raise
    if not created:
        return None
    log.info(
        "admin key created",
        extra={"path": str(path), "key_id": key.key_id, "user_id": user.user_id},
    )
    return key
