"""`saga` — call Saga's gateway from a terminal.

    saga execute chat --input prompt="Hello"   stream a run: tokens as they come, then a summary
    saga keys create NAME --scope execute      a new API key for yourself (shown once)
    saga keys list | saga keys revoke KEY_ID
    saga register EMAIL | saga login EMAIL          password on stdin or a hidden prompt
    saga providers set-key NAME | link NAME --user U | list      (admin; secret on stdin)
    saga vault status | rotate | rewrap                           (admin)
    saga usage [--from D] [--to D] [--user U | --all] [--by provider,model,day]

The credential comes from --key, $SAGA_API_KEY, or <data_dir>/admin.key (written by the first
`make run`); the gateway from --gateway, $SAGA_GATEWAY, or 127.0.0.1:50051. Errors print their
code, reason and domain, and exit 1 — never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2

from clients.cli import admin
from saga.execution.v1 import common_pb2, options_pb2
from saga.gateway.v1 import account_pb2, account_pb2_grpc, execution_pb2, execution_pb2_grpc
from services.common.status import describe

DEFAULT_GATEWAY = "127.0.0.1:50051"


def _credential(args: argparse.Namespace) -> str:
    if args.key:
        return str(args.key)
    if os.environ.get("SAGA_API_KEY"):
        return os.environ["SAGA_API_KEY"]
    path = Path(os.environ.get("SAGA_DATA_DIR", ".saga")) / "admin.key"
    try:
        return path.read_text().strip()
    except OSError:
        raise SystemExit(
            f"saga: no credential: pass --key, set SAGA_API_KEY, or run `make run` "
            f"once to create {path}"
        ) from None


def _inputs(pairs: list[str]) -> struct_pb2.Struct:
    inputs = struct_pb2.Struct()
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"saga: --input takes NAME=VALUE, got {pair!r}")
        try:
            parsed: Any = json.loads(value) if value[:1] in "[{" else value
        except json.JSONDecodeError:
            parsed = value
        inputs.update({name: parsed})
    return inputs


async def _execute(
    stub: execution_pb2_grpc.ExecutionServiceAsyncStub,
    args: argparse.Namespace,
    metadata: tuple[tuple[str, str]],
) -> None:
    options = options_pb2.ExecuteOptions()
    if args.strategy:
        options.strategy = common_pb2.Strategy.Value(f"STRATEGY_{args.strategy.upper()}")
    request = execution_pb2.ExecuteRequest(
        pattern_id=args.pattern, inputs=_inputs(args.input), asof=args.asof or "", options=options
    )
    summary: list[str] = []
    provider = ""
    async for event in stub.Execute(request, metadata=metadata, timeout=args.timeout):
        kind = event.WhichOneof("event")
        if kind == "accepted":
            summary.append(f"execution {event.accepted.execution_id}")
            summary.append(f"ledger {event.accepted.ledger_commit_hash[:12]}")
            summary.append(f"pack {event.accepted.pricing_pack_id}")
        elif kind == "token":
            print(event.token.text, end="", flush=True)
        elif kind == "provider_switched":
            s = event.provider_switched
            print(f"\n[switched {s.from_provider} → {s.to_provider}: {s.reason}]", file=sys.stderr)
        elif kind == "step_completed":
            provider = f"{event.step_completed.provider} ({event.step_completed.model})"
        elif kind == "completed":
            usage = event.completed.usage
            summary.append(f"provider {provider}")
            summary.append(f"tokens {usage.input_tokens} in / {usage.output_tokens} out")
            summary.append(f"cost ${event.completed.cost_micro_usd / 1e6:.6f}")
    print()
    print(" · ".join(summary), file=sys.stderr)


async def _keys(
    stub: account_pb2_grpc.AccountServiceAsyncStub,
    args: argparse.Namespace,
    metadata: tuple[tuple[str, str]],
) -> None:
    if args.keys_command == "create":
        reply = await stub.CreateApiKey(
            account_pb2.CreateApiKeyRequest(name=args.name, scopes=args.scope or ["execute"]),
            metadata=metadata,
            timeout=args.timeout,
        )
        print(reply.api_key)
        print(
            f"key {reply.info.key_id} ({', '.join(reply.info.scopes)}): shown once, store it now",
            file=sys.stderr,
        )
    elif args.keys_command == "list":
        listed = await stub.ListApiKeys(
            account_pb2.ListApiKeysRequest(), metadata=metadata, timeout=args.timeout
        )
        for key in listed.keys:
            state = "revoked" if key.HasField("revoked_at") else "active"
            print(f"{key.key_id}  {key.prefix}…  {key.name}  {' '.join(key.scopes)}  {state}")
    else:
        revoked = await stub.RevokeApiKey(
            account_pb2.RevokeApiKeyRequest(key_id=args.key_id),
            metadata=metadata,
            timeout=args.timeout,
        )
        print(f"revoked {revoked.info.key_id}")


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="saga", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--gateway", default=os.environ.get("SAGA_GATEWAY", DEFAULT_GATEWAY))
    p.add_argument("--key", help="API key or token (default: $SAGA_API_KEY or .saga/admin.key)")
    p.add_argument("--timeout", type=float, default=300.0, help="deadline in seconds")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("execute", help="run a pattern and stream its events")
    run.add_argument("pattern")
    run.add_argument("--input", action="append", default=[], metavar="NAME=VALUE")
    run.add_argument("--asof", help="YYYY-MM-DD (default: today)")
    run.add_argument(
        "--strategy", choices=["cheapest", "fastest", "quality", "balanced", "reliable"]
    )
    keys = sub.add_parser("keys", help="your API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create")
    create.add_argument("name")
    create.add_argument("--scope", action="append", help="repeatable (default: execute)")
    keys_sub.add_parser("list")
    revoke = keys_sub.add_parser("revoke")
    revoke.add_argument("key_id")
    for command in ("register", "login"):
        account = sub.add_parser(command, help=f"{command} with email and password")
        account.add_argument("email")
    admin.add_parsers(sub)
    return p


async def _account(channel: grpc.aio.Channel, args: argparse.Namespace) -> None:
    stub: account_pb2_grpc.AccountServiceAsyncStub = account_pb2_grpc.AccountServiceStub(channel)
    password = admin.read_secret("password: ")
    if args.command == "register":
        registered = await stub.Register(
            account_pb2.RegisterRequest(email=args.email, password=password), timeout=args.timeout
        )
        print(f"registered {registered.email} as {registered.user_id}")
    else:
        logged_in = await stub.Login(
            account_pb2.LoginRequest(email=args.email, password=password), timeout=args.timeout
        )
        print(logged_in.access_token)


async def _main(args: argparse.Namespace) -> int:
    channel: grpc.aio.Channel = grpc.aio.insecure_channel(args.gateway)
    try:
        try:
            if args.command in ("register", "login"):
                await _account(channel, args)
                return 0
            metadata = (("authorization", f"Bearer {_credential(args)}"),)
            if args.command == "execute":
                await _execute(execution_pb2_grpc.ExecutionServiceStub(channel), args, metadata)
            elif args.command == "keys":
                await _keys(account_pb2_grpc.AccountServiceStub(channel), args, metadata)
            elif args.command == "providers":
                await admin.providers(channel, args, metadata)
            elif args.command == "vault":
                await admin.vault(channel, args, metadata)
            else:
                await admin.usage(channel, args, metadata)
        except grpc.aio.AioRpcError as error:
            d = describe(error)
            where = f" ({d.domain})" if d.domain else ""
            print(f"\nsaga: {d.code.name} {d.reason}{where}: {d.message}", file=sys.stderr)
            for v in d.field_violations:
                print(f"  {v.field}: {v.description}", file=sys.stderr)
            if d.retry_after is not None:
                print(f"  retry after {d.retry_after:.1f} s", file=sys.stderr)
            return 1
    finally:
        await channel.close(None)
    return 0


def main() -> None:
    """Entry point."""
    try:
        sys.exit(asyncio.run(_main(parser().parse_args())))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
