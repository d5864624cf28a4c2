"""The stored OAuth token set, and defensive reading of an access token's expiry: anything
auth cannot date counts as expired."""

from __future__ import annotations

import base64
import json
import time

import pytest

from services.auth.oauth_state import OAuthState, jwt_expiry
from tests.fakes.entra import access_token


def jwt_with(claims: object) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    return f"{b64(b'{}')}.{b64(json.dumps(claims).encode())}.sig"


def test_a_well_formed_exp_is_read() -> None:
    token = access_token(600)
    expiry = jwt_expiry(token)
    assert expiry is not None
    assert abs(expiry - (time.time() + 600)) < 5


@pytest.mark.parametrize(
    "token",
    [
        "",
        "opaque-token",
        "a.b",
        "a.b.c.d",
        "header..sig",
        "x.!!!.y",
        "x.bm90IGpzb24.y",  # "not json"
        jwt_with([1, 2, 3]),
        jwt_with({}),  # no exp
        jwt_with({"exp": "1900000000"}),  # a string
        jwt_with({"exp": None}),
        jwt_with({"exp": True}),
        jwt_with({"exp": -5}),
        jwt_with({"exp": 1e300}),
        access_token(600, exp="soon"),
        "a." + "b" * 20_000 + ".c",
    ],
)
def test_anything_malformed_cannot_be_dated(token: str) -> None:
    assert jwt_expiry(token) is None
    assert OAuthState(access_token=token, expires_at=time.time() + 3600).expires() == 0


def test_the_earlier_of_the_endpoints_expiry_and_the_jwts_counts() -> None:
    token = access_token(600)
    claimed = jwt_expiry(token)
    assert claimed is not None
    assert OAuthState(access_token=token, expires_at=claimed - 100).expires() == claimed - 100
    assert OAuthState(access_token=token, expires_at=claimed + 100).expires() == claimed
    assert OAuthState(access_token=token, expires_at=0).expires() == claimed
    assert OAuthState(access_token="", expires_at=claimed).expires() == 0


def test_payloads_round_trip_and_junk_is_refused() -> None:
    state = OAuthState("rt", access_token(60), 123.5, ("a", "b"))
    assert OAuthState.from_payload(state.to_payload()) == state
    for junk in (b"", b"[]", b"\xff", b'{"refresh_token": 5}'):
        with pytest.raises(ValueError, match="OAuth payload"):
            OAuthState.from_payload(junk)
    odd = OAuthState.from_payload(b'{"refresh_token": "rt", "expires_at": "x", "scopes": 7}')
    assert (odd.refresh_token, odd.expires_at, odd.scopes) == ("rt", 0.0, ())
