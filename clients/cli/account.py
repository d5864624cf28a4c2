"""`saga keys …`, `saga register` and `saga login`: the caller's own account.

A new API key is printed once, alone on stdout (so `KEY=$(saga keys create ci)` captures
it), with its id, scopes and expiry on stderr.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC, datetime

import grpc
from google.protobuf import timestamp_pb2

from clients.cli.arguments import EXIT_USAGE
from clients.cli.output import is_past, table, to_json, when
from clients.cli.settings import Metadata
from saga.auth.v1 import api_keys_pb2
from saga.gateway.v1 import account_pb2, account_pb2_grpc, admin_pb2, admin_pb2_grpc


def read_secret(prompt: str) -> str:
    """A secret from stdin when piped, else from a prompt that does not echo."""
    value = sys.stdin.readline().strip() if not sys.stdin.isatty() else getpass.getpass(prompt)
    if not value:
        raise SystemExit("saga: nothing was entered")
    return value


def key_state(key: api_keys_pb2.ApiKeyInfo, now: datetime) -> str:
    """`revoked`, `expired` or `active`."""
    if key.HasField("revoked_at"):
        return "revoked"
    if key.HasField("expires_at") and is_past(key.expires_at, now):
        return "expired"
    return "active"


def keys_table(keys: list[api_keys_pb2.ApiKeyInfo], now: datetime) -> str:
    """The caller's keys, one row each (scopes last: the one wide column)."""
    return table(
        (
            "KEY ID",
            "PREFIX",
            "NAME",
            "CREATED",
            "EXPIRES",
            "LAST USED",
            "LIMITS",
            "STATE",
            "SCOPES",
        ),
        [
            (
                k.key_id,
                f"{k.prefix}…",
                k.name,
                when(k.created_at),
                when(k.expires_at, unset="never"),
                when(k.last_used_at, unset="never"),
                limits_text(k.limits),
                key_state(k, now),
                ",".join(k.scopes),
            )
            for k in keys
        ],
    )


async def keys(channel: grpc.aio.Channel, args: argparse.Namespace, md: Metadata) -> int:
    """`saga keys create|list|revoke`."""
    stub: account_pb2_grpc.AccountServiceAsyncStub = account_pb2_grpc.AccountServiceStub(channel)
    if args.keys_command == "create":
        request = account_pb2.CreateApiKeyRequest(name=args.name, scopes=args.scope or ["execute"])
        if args.expires:
            request.expires_at.CopyFrom(_timestamp(args.expires))
        created = await stub.CreateApiKey(request, metadata=md, timeout=args.timeout)
        if args.json:
            print(to_json(created))
            return 0
        print(created.api_key)
        info = created.info
        print(
            f"key {info.key_id} ({', '.join(info.scopes)}), expires "
            f"{when(info.expires_at, unset='never')}: shown once, store it now",
            file=sys.stderr,
        )
    elif args.keys_command == "limits":
        return await _set_limits(channel, args, md)
    elif args.keys_command == "list":
        listed = await stub.ListApiKeys(
            account_pb2.ListApiKeysRequest(), metadata=md, timeout=args.timeout
        )
        print(to_json(listed) if args.json else keys_table(list(listed.keys), datetime.now(UTC)))
    else:
        revoked = await stub.RevokeApiKey(
            account_pb2.RevokeApiKeyRequest(key_id=args.key_id), metadata=md, timeout=args.timeout
        )
        print(to_json(revoked) if args.json else f"revoked {revoked.info.key_id}")
    return 0


def limits_text(limits: api_keys_pb2.ApiKeyLimits) -> str:
    """A key's own limits ("600/min, 4 at once"); "default" when it has none."""
    rpm, concurrent = limits.requests_per_minute, limits.concurrent_executions
    parts = [f"{rpm}/min" if rpm else "", f"{concurrent} at once" if concurrent else ""]
    return ", ".join(p for p in parts if p) or "default"


async def _set_limits(channel: grpc.aio.Channel, args: argparse.Namespace, md: Metadata) -> int:
    """`saga keys limits KEY_ID --rpm N --concurrent N | --clear` (an admin's key)."""
    if args.clear == bool(args.rpm or args.concurrent):
        print("saga keys limits: give --rpm and/or --concurrent, or --clear", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    stub: admin_pb2_grpc.AdminServiceAsyncStub = admin_pb2_grpc.AdminServiceStub(channel)
    reply = await stub.SetApiKeyLimits(
        admin_pb2.SetApiKeyLimitsRequest(
            key_id=args.key_id, requests_per_minute=args.rpm, concurrent_executions=args.concurrent
        ),
        metadata=md,
        timeout=args.timeout,
    )
    print(to_json(reply) if args.json else f"{reply.info.key_id}: {limits_text(reply.info.limits)}")
    return 0


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def sign_in(
    channel: grpc.aio.Channel, args: argparse.Namespace, metadata: tuple[tuple[str, str], ...]
) -> int:
    """`saga register EMAIL` (creates a user, with `metadata` naming who asks: an admin while
    self-registration is closed) and `saga login EMAIL` (password on stdin or a hidden
    prompt)."""
    stub: account_pb2_grpc.AccountServiceAsyncStub = account_pb2_grpc.AccountServiceStub(channel)
    password = read_secret("password: ")
    if args.command == "register":
        registered = await stub.Register(
            account_pb2.RegisterRequest(email=args.email, password=password),
            metadata=metadata,
            timeout=args.timeout,
        )
        print(
            to_json(registered)
            if args.json
            else f"created user {registered.email} as {registered.user_id}"
        )
    else:
        logged_in = await stub.Login(
            account_pb2.LoginRequest(email=args.email, password=password), timeout=args.timeout
        )
        print(to_json(logged_in) if args.json else logged_in.access_token)
    return 0
