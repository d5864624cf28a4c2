"""Access tokens: EdDSA JWTs with kid, iss, aud, sub, exp, iat, jti and scope, verified with
pinned algorithms; signing keys persisted (public half in the database, private half in the
vault) and rotated, old keys published until their last token has expired."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.auth.secret_store import AUTH_OWNER
from services.auth.signing_keys import LEEWAY_SECONDS, SigningKeys, vault_name
from services.auth.tokens import AccessTokens
from services.common.context import ContextSigner, key_id
from services.common.database import Database
from services.common.errors import Unauthenticated
from tests.clock import Clock
from tests.conftest import Backend
from tests.tamper import changed_at
from tests.unit.auth.conftest import open_auth_db
from tests.unit.auth.memory_secrets import MemorySecrets

TTL = 900.0
ROTATION = 86_400.0


def keys_of(db: Database, vault: MemorySecrets, clock: Clock) -> SigningKeys:
    return SigningKeys(db, vault, rotation_seconds=ROTATION, token_ttl_seconds=TTL, clock=clock)


@pytest.fixture
def keys(db: Database, vault: MemorySecrets, clock: Clock) -> SigningKeys:
    return keys_of(db, vault, clock)


@pytest.fixture
def tokens(keys: SigningKeys, clock: Clock) -> AccessTokens:
    return AccessTokens(keys, TTL, clock)


def segments(token: str) -> tuple[dict[str, object], dict[str, object]]:
    def part(text: str) -> dict[str, object]:
        decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(text + "=="))
        return decoded

    header, claims, _ = token.split(".")
    return part(header), part(claims)


async def reason(tokens: AccessTokens, token: str) -> str:
    try:
        await tokens.verify(token)
    except Unauthenticated as error:
        return error.reason
    return "OK"


async def test_a_token_carries_the_documented_header_and_claims(
    tokens: AccessTokens, keys: SigningKeys, clock: Clock
) -> None:
    issued = await tokens.issue("usr_1", "default", ("execute", "sessions", "usage:read"))
    header, claims = segments(issued.token)
    current = await keys.current()
    assert header == {"alg": "EdDSA", "typ": "JWT", "kid": current.kid}
    assert claims == {
        "iss": "saga-auth",
        "aud": "saga",
        "sub": "usr_1",
        "ten": "default",
        "scope": "execute sessions usage:read",
        "iat": int(clock.now),
        "exp": int(clock.now + TTL),
        "jti": issued.token_id,
    }
    assert issued.expires_at == int(clock.now + TTL)


async def test_a_token_verifies_to_the_same_principal_shape_as_a_key(
    tokens: AccessTokens,
) -> None:
    issued = await tokens.issue("usr_1", "default", ("execute",))
    principal = await tokens.verify(issued.token)
    assert principal.user_id == "usr_1"
    assert principal.tenant == "default"
    assert principal.scopes == ("execute",)
    assert principal.credential_id == issued.token_id
    assert principal.expires_at == issued.expires_at
    assert principal.kind == "jwt"


async def test_expiry_is_checked(tokens: AccessTokens, clock: Clock) -> None:
    issued = await tokens.issue("usr_1", "default", ("execute",))
    clock.now += TTL - 1
    assert await reason(tokens, issued.token) == "OK"
    clock.now += 5
    assert await reason(tokens, issued.token) == "CREDENTIAL_EXPIRED"


async def test_forged_and_foreign_tokens_are_unknown(
    tokens: AccessTokens, keys: SigningKeys, vault: MemorySecrets, clock: Clock
) -> None:
    issued = await tokens.issue("usr_1", "default", ("admin",))
    assert await reason(tokens, issued.token) == "OK"  # positive control
    current = await keys.current()
    header, claims = segments(issued.token)
    unknown = "CREDENTIAL_UNKNOWN"

    # A flipped signature, an altered claim.
    head, body, signature = issued.token.split(".")
    # Not the last character: its low bits may be padding that decodes to the same bytes.
    flipped = changed_at(signature, -2)
    assert await reason(tokens, f"{head}.{body}.{flipped}") == unknown
    forged_claims = base64.urlsafe_b64encode(
        json.dumps({**claims, "sub": "usr_admin"}).encode()
    ).decode()
    assert await reason(tokens, f"{head}.{forged_claims.rstrip('=')}.{signature}") == unknown
    # alg none, and HS256 keyed with the public key (algorithm confusion).
    none = jwt.encode(claims, None, algorithm="none", headers={"kid": current.kid})
    assert await reason(tokens, none) == unknown
    public_x = current.private_key.public_key().public_bytes_raw()
    hs256 = jwt.encode(claims, public_x, algorithm="HS256", headers={"kid": current.kid})
    assert await reason(tokens, hs256) == unknown
    # A key auth does not hold, even with a kid auth knows.
    stranger = Ed25519PrivateKey.generate()
    assert await reason(tokens, jwt.encode(claims, stranger, algorithm="EdDSA")) == unknown
    signed_by_stranger = jwt.encode(
        claims, stranger, algorithm="EdDSA", headers={"kid": current.kid}
    )
    assert await reason(tokens, signed_by_stranger) == unknown
    # The right key, the wrong audience or issuer: a gateway request context is no token.
    for wrong in ({"aud": "saga-internal"}, {"iss": "saga-gateway"}):
        other = jwt.encode(
            {**claims, **wrong}, current.private_key, algorithm="EdDSA", headers=header
        )
        assert await reason(tokens, other) == unknown
    context = ContextSigner(stranger, 60).mint(
        execution_id="exe_x",
        user_id="usr_1",
        tenant="default",
        scopes=["admin"],
        credential_id="c",
        ttl_seconds=60,
    )
    assert await reason(tokens, context) == unknown
    # Missing claims, junk.
    no_jti = {k: v for k, v in claims.items() if k != "jti"}
    missing = jwt.encode(no_jti, current.private_key, algorithm="EdDSA", headers=header)
    assert await reason(tokens, missing) == unknown
    assert await reason(tokens, "a.b.c") == unknown
    assert await reason(tokens, "eyJh.eyJz.sig") == unknown


async def test_time_claims_no_timestamp_can_hold_are_unknown(
    tokens: AccessTokens, keys: SigningKeys
) -> None:
    issued = await tokens.issue("usr_1", "default", ("admin",))
    header, claims = segments(issued.token)
    current = await keys.current()

    def signed(**times: object) -> str:
        return jwt.encode({**claims, **times}, current.private_key, "EdDSA", headers=header)

    assert await reason(tokens, signed()) == "OK"  # positive control: re-signed as issued
    for times in ({"exp": 1e300}, {"exp": 10**30}, {"iat": -1}, {"exp": float("inf")}):
        assert await reason(tokens, signed(**times)) == "CREDENTIAL_UNKNOWN", times


async def test_signing_keys_persist_across_restarts(
    backend: Backend, tmp_path: Path, vault: MemorySecrets, clock: Clock
) -> None:
    first_db = await open_auth_db(backend, tmp_path)
    try:
        issued = await AccessTokens(keys_of(first_db, vault, clock), TTL, clock).issue(
            "usr_1", "default", ("execute",)
        )
    finally:
        await first_db.close()
    second_db = await open_auth_db(backend, tmp_path)  # "a restarted process"
    try:
        restarted = AccessTokens(keys_of(second_db, vault, clock), TTL, clock)
        assert (await restarted.verify(issued.token)).user_id == "usr_1"
        again = await restarted.issue("usr_2", "default", ("execute",))
        assert segments(again.token)[0]["kid"] == segments(issued.token)[0]["kid"]
    finally:
        await second_db.close()


async def test_the_private_key_lives_in_the_vault_not_the_database(
    tokens: AccessTokens, keys: SigningKeys, db: Database, vault: MemorySecrets
) -> None:
    await tokens.issue("usr_1", "default", ("execute",))
    current = await keys.current()
    raw = current.private_key.private_bytes_raw()
    stored = vault.rows[(AUTH_OWNER, vault_name(current.kid))]
    assert stored.payload == raw
    rows = await db.fetch("SELECT * FROM signing_keys")
    assert len(rows) == 1
    dumped = repr(rows)
    assert base64.urlsafe_b64encode(raw).decode().rstrip("=") not in dumped
    assert raw.hex() not in dumped


async def test_rotation_signs_with_a_new_key_and_drops_keys_without_live_tokens(
    tokens: AccessTokens, keys: SigningKeys, clock: Clock
) -> None:
    old = await tokens.issue("usr_1", "default", ("execute",))
    old_kid = segments(old.token)[0]["kid"]
    assert [key_id(k) for k in await keys.published()] == [old_kid]
    clock.now += ROTATION  # due: the next token is signed by a new key
    new = await tokens.issue("usr_1", "default", ("execute",))
    new_kid = segments(new.token)[0]["kid"]
    assert new_kid != old_kid
    # Every token of the old key expired long before it retired: it is not published.
    assert await reason(tokens, old.token) == "CREDENTIAL_EXPIRED"
    assert [key_id(k) for k in await keys.published()] == [new_kid]


async def test_a_retired_key_stays_published_until_its_last_token_expires(
    tokens: AccessTokens, keys: SigningKeys, vault: MemorySecrets, clock: Clock
) -> None:
    await tokens.issue("usr_1", "default", ("execute",))
    clock.now += ROTATION - 10
    last_old = await tokens.issue("usr_1", "default", ("execute",))  # 10 s before rotating
    old_kid = segments(last_old.token)[0]["kid"]
    clock.now += 10
    new = await tokens.issue("usr_1", "default", ("execute",))
    new_kid = segments(new.token)[0]["kid"]
    assert new_kid != old_kid
    assert [key_id(k) for k in await keys.published()] == [old_kid, new_kid]
    assert await reason(tokens, last_old.token) == "OK"  # verifiable after rotation

    clock.now = last_old.expires_at - 1
    assert [key_id(k) for k in await keys.published()] == [old_kid, new_kid]
    clock.now = last_old.expires_at + LEEWAY_SECONDS + 1  # every old token has expired
    assert [key_id(k) for k in await keys.published()] == [new_kid]
    assert (AUTH_OWNER, vault_name(str(old_kid))) in vault.rows

    clock.now += ROTATION  # the next rotation deletes the key nothing can use any more
    newest = await tokens.issue("usr_1", "default", ("execute",))
    newest_kid = segments(newest.token)[0]["kid"]
    assert (AUTH_OWNER, vault_name(str(old_kid))) not in vault.rows
    assert [key_id(k) for k in await keys.published()] == [newest_kid]


async def test_replicas_rotating_together_agree_on_one_key(
    backend: Backend, tmp_path: Path, vault: MemorySecrets, clock: Clock
) -> None:
    dbs = [await open_auth_db(backend, tmp_path) for _ in range(3)]
    try:
        replicas = [AccessTokens(keys_of(d, vault, clock), TTL, clock) for d in dbs]
        issued = await asyncio.gather(
            *(r.issue("usr_1", "default", ("execute",)) for r in replicas)
        )
        kids = {segments(i.token)[0]["kid"] for i in issued}
        assert len(kids) == 1
        assert len([k for k in vault.rows if k[0] == AUTH_OWNER]) == 1  # losers cleaned up
        for replica in replicas:
            for token in issued:
                assert (await replica.verify(token.token)).user_id == "usr_1"
    finally:
        for d in dbs:
            await d.close()


async def test_a_signing_key_lost_from_the_vault_is_replaced(
    tokens: AccessTokens, db: Database, vault: MemorySecrets, clock: Clock
) -> None:
    first = await tokens.issue("usr_1", "default", ("execute",))
    vault.rows.clear()  # e.g. the vault's data was restored from an older backup
    restarted = AccessTokens(keys_of(db, vault, clock), TTL, clock)
    second = await restarted.issue("usr_1", "default", ("execute",))
    assert segments(second.token)[0]["kid"] != segments(first.token)[0]["kid"]
    assert (await restarted.verify(second.token)).user_id == "usr_1"
