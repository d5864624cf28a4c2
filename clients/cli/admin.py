"""`saga providers …`, `saga vault …` and `saga usage`: operator and usage commands.

Secrets (provider keys, refresh tokens) are read from standard input or a hidden prompt,
never from the command line, where they would land in shell history and `ps`.
"""

from __future__ import annotations

import argparse
import getpass
import sys

import grpc

from saga.execution.v1 import records_pb2
from saga.gateway.v1 import admin_pb2, admin_pb2_grpc, usage_pb2, usage_pb2_grpc

Metadata = tuple[tuple[str, str]]


def read_secret(prompt: str) -> str:
    """A secret from stdin when piped, else from a prompt that does not echo."""
    value = sys.stdin.readline().strip() if not sys.stdin.isatty() else getpass.getpass(prompt)
    if not value:
        raise SystemExit("saga: nothing was entered")
    return value


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the admin and usage commands."""
    providers = sub.add_parser("providers", help="LLM providers (admin)")
    psub = providers.add_subparsers(dest="providers_command", required=True)
    set_key = psub.add_parser("set-key", help="store a provider's API key (read from stdin)")
    set_key.add_argument("name")
    link = psub.add_parser("link", help="link a user's OAuth account (refresh token on stdin)")
    link.add_argument("name")
    link.add_argument("--user", required=True)
    psub.add_parser("list")
    vault = sub.add_parser("vault", help="the token-vault (admin)")
    vsub = vault.add_subparsers(dest="vault_command", required=True)
    vsub.add_parser("status")
    vsub.add_parser("rotate", help="make a new active key")
    rewrap = vsub.add_parser("rewrap", help="re-encrypt every secret under the active key")
    rewrap.add_argument("--batch-size", type=int, default=100)
    usage = sub.add_parser("usage", help="tokens and cost")
    usage.add_argument("--from", dest="start", default="", help="YYYY-MM-DD")
    usage.add_argument("--to", dest="end", default="", help="YYYY-MM-DD")
    usage.add_argument("--user", default="", help="another user's (needs usage:read:all)")
    usage.add_argument("--all", action="store_true", help="every user (needs usage:read:all)")
    usage.add_argument("--by", default="provider,model", help="user,session,provider,model,day")


async def providers(channel: grpc.aio.Channel, args: argparse.Namespace, md: Metadata) -> None:
    """`saga providers set-key|link|list`."""
    stub: admin_pb2_grpc.AdminServiceAsyncStub = admin_pb2_grpc.AdminServiceStub(channel)
    if args.providers_command == "set-key":
        key = read_secret(f"API key for {args.name}: ")
        reply = await stub.SetProviderKey(
            admin_pb2.SetProviderKeyRequest(provider=args.name, api_key=key),
            metadata=md,
            timeout=args.timeout,
        )
        print(f"stored the key of {args.name} (version {reply.version})")
    elif args.providers_command == "link":
        token = read_secret(f"refresh token for {args.name}: ")
        linked = await stub.LinkProviderAccount(
            admin_pb2.LinkProviderAccountRequest(
                provider=args.name, user_id=args.user, refresh_token=token
            ),
            metadata=md,
            timeout=args.timeout,
        )
        print(f"linked {args.name} for {args.user} (version {linked.version})")
    else:
        listed = await stub.ListProviders(
            admin_pb2.ListProvidersRequest(), metadata=md, timeout=args.timeout
        )
        for p in listed.providers:
            print(f"{p.name:<16} {p.kind:<10} {p.model:<20} circuit {p.circuit_state}")


async def vault(channel: grpc.aio.Channel, args: argparse.Namespace, md: Metadata) -> None:
    """`saga vault status|rotate|rewrap`."""
    stub: admin_pb2_grpc.AdminServiceAsyncStub = admin_pb2_grpc.AdminServiceStub(channel)
    if args.vault_command == "status":
        reply = await stub.GetVaultStatus(
            admin_pb2.GetVaultStatusRequest(), metadata=md, timeout=args.timeout
        )
        print(reply.status)
    elif args.vault_command == "rotate":
        rotated = await stub.RotateVaultKey(
            admin_pb2.RotateVaultKeyRequest(), metadata=md, timeout=args.timeout
        )
        print(f"active key: {rotated.key_id} (run `saga vault rewrap` to move old rows to it)")
    else:
        async for progress in stub.RewrapVault(
            admin_pb2.RewrapVaultRequest(batch_size=args.batch_size),
            metadata=md,
            timeout=args.timeout,
        ):
            print(f"{progress.rows_done}/{progress.rows_total} rows under {progress.active_key_id}")


async def usage(channel: grpc.aio.Channel, args: argparse.Namespace, md: Metadata) -> None:
    """`saga usage`: one line per group, then the totals."""
    stub: usage_pb2_grpc.UsageServiceAsyncStub = usage_pb2_grpc.UsageServiceStub(channel)
    dimensions = [
        records_pb2.UsageDimension.Value(f"USAGE_DIMENSION_{d.strip().upper()}")
        for d in args.by.split(",")
        if d.strip()
    ]
    reply = await stub.GetUsage(
        usage_pb2.GetUsageRequest(
            start_date=args.start,
            end_date=args.end,
            user_id=args.user,
            all_users=args.all,
            group_by=dimensions,
        ),
        metadata=md,
        timeout=args.timeout,
    )
    for row in [*reply.rows, reply.totals]:
        label = " ".join(
            x for x in (row.day, row.user_id, row.session_id, row.provider, row.model) if x
        )
        print(
            f"{label or 'total':<40} {row.calls:>6} calls {row.input_tokens:>9} in "
            f"{row.output_tokens:>9} out  ${row.cost_micro_usd / 1e6:.6f}"
        )
