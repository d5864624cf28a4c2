"""`saga providers …`, `saga vault …`, `saga usage` and `saga budgets …`: operator and usage
commands.

Secrets (provider keys, refresh tokens) are read from standard input or a hidden prompt,
never from the command line, where they would land in shell history and `ps`.
"""

from __future__ import annotations

import argparse

import grpc

from clients.cli import arguments
from clients.cli.account import read_secret
from clients.cli.output import (
    circuit_name,
    count,
    dollars,
    limits,
    table,
    timeouts,
    to_json,
    vault_state_name,
)
from clients.cli.settings import Metadata
from saga.execution.v1 import records_pb2
from saga.gateway.v1 import admin_pb2, admin_pb2_grpc, usage_pb2, usage_pb2_grpc
from saga.optimizer.v1 import budgets_pb2
from saga.router.v1 import providers_pb2
from saga.vault.v1 import status_pb2

_ROW_FIELD = {"user": "user_id", "session": "session_id"}
"""UsageRow fields whose name is not the dimension's."""


def add_parsers(
    sub: argparse._SubParsersAction[arguments.Parser], common: arguments.Parser
) -> None:
    """Register the admin and usage commands; `common` holds the options every command takes."""
    providers = sub.add_parser("providers", help="LLM providers (admin)")
    psub = providers.add_subparsers(dest="providers_command", required=True)
    set_key = psub.add_parser(
        "set-key", parents=[common], help="store a provider's API key (read from stdin)"
    )
    set_key.add_argument("name")
    link = psub.add_parser(
        "link", parents=[common], help="link a user's OAuth account (refresh token on stdin)"
    )
    link.add_argument("name")
    link.add_argument("--user", required=True)
    psub.add_parser(
        "list", parents=[common], help="circuit, health, prices and limits of each provider"
    )
    check = psub.add_parser(
        "check", parents=[common], help="probe providers now (exit 1 when one fails)"
    )
    check.add_argument("names", nargs="*", metavar="NAME", help="default: every provider")
    vault = sub.add_parser("vault", help="the token-vault (admin)")
    vsub = vault.add_subparsers(dest="vault_command", required=True)
    vsub.add_parser("status", parents=[common], help="sealed or serving, keys in use")
    vsub.add_parser("rotate", parents=[common], help="make a new active key")
    rewrap = vsub.add_parser(
        "rewrap", parents=[common], help="re-encrypt every secret under the active key"
    )
    rewrap.add_argument("--batch-size", type=int, default=100)
    usage = sub.add_parser("usage", parents=[common], help="tokens and cost")
    usage.add_argument("--from", dest="start", default="", help="YYYY-MM-DD")
    usage.add_argument("--to", dest="end", default="", help="YYYY-MM-DD")
    usage.add_argument("--user", default="", help="another user's (needs usage:read:all)")
    usage.add_argument("--all", action="store_true", help="every user (needs usage:read:all)")
    usage.add_argument(
        "--by",
        type=arguments.dimensions,
        default="provider,model",
        help=f"comma-separated, any of {','.join(arguments.DIMENSIONS)} (default: provider,model)",
    )
    budgets = sub.add_parser("budgets", help="spending limits per user and per API key")
    bsub = budgets.add_subparsers(dest="budgets_command", required=True)
    set_budget = bsub.add_parser(
        "set", parents=[common], help="set a user's (or one of their keys') budget (admin)"
    )
    set_budget.add_argument("user")
    given = set_budget.add_mutually_exclusive_group(required=True)
    given.add_argument(
        "--amount", type=arguments.amount, metavar="DOLLARS", help="per period, e.g. 5.00"
    )
    given.add_argument(
        "--clear", action="store_true", help="remove it: back to the default (a key: no cap)"
    )
    set_budget.add_argument(
        "--period", choices=("day", "month"), default="", help="default: the configured period"
    )
    set_budget.add_argument("--key", dest="key_id", default="", metavar="KEY_ID")
    show = bsub.add_parser(
        "show", parents=[common], help="what is left this period (yours, or a user's)"
    )
    show.add_argument(
        "user", nargs="?", default="", help="another user's (needs usage:read:all or admin)"
    )


def providers_table(providers: list[providers_pb2.ProviderInfo]) -> str:
    """One row per provider: identity, live state, prices per million tokens (input, output,
    then cache reads/writes), limits and timeouts."""
    return table(
        (
            "NAME",
            "KIND",
            "MODEL",
            "CIRCUIT",
            "HEALTHY",
            "IN $/1M",
            "OUT $/1M",
            "CACHE R/W $/1M",
            "LIMITS",
            "TIMEOUTS",
            "CONTEXT",
        ),
        [
            (
                p.name,
                p.kind,
                p.model,
                circuit_name(p.circuit_state),
                "yes" if p.healthy else "no",
                dollars(p.prices.input_per_million_micro_usd),
                dollars(p.prices.output_per_million_micro_usd),
                f"{dollars(p.prices.cached_input_per_million_micro_usd)}"
                f"/{dollars(p.prices.cache_write_per_million_micro_usd)}",
                limits(p.limits),
                timeouts(p.limits),
                count(p.context_window) if p.context_window else "—",
            )
            for p in providers
        ],
        right=(5, 6, 7, 10),
    )


def outbox_line(outbox: providers_pb2.OutboxStatus) -> str:
    """The router's usage outbox in one line (what is not shipped to the ledger yet)."""
    oldest = f", oldest {outbox.oldest_age_ms / 1000:.1f} s" if outbox.backlog else ""
    return (
        f"usage outbox: {count(outbox.backlog)} waiting{oldest}, "
        f"{count(outbox.in_flight)} in flight, {count(outbox.dead_letters)} dead letters"
    )


def _mode(mode: providers_pb2.ProbeModeResult) -> str:
    if mode.ok:
        return f"ok {mode.latency_ms} ms"
    return mode.error_reason or "failed"


def checks_table(results: list[providers_pb2.ProviderCheck]) -> str:
    """One row per probed provider: ok or failed, then each mode (streamed, not streamed)
    with its latency or its failure's reason."""
    return table(
        ("PROVIDER", "RESULT", "STREAMED", "COMPLETE"),
        [
            (
                c.provider,
                "ok" if c.ok else "failed",
                _mode(c.stream) if c.HasField("stream") else c.error_reason,
                _mode(c.complete) if c.HasField("complete") else "",
            )
            for c in results
        ],
    )


def vault_lines(status: status_pb2.VaultStatus) -> str:
    """The vault's state, its active key and the rows under each key, as `label value` lines."""
    state = vault_state_name(status.state)
    if status.sealed_reason:
        state = f"{state}: {status.sealed_reason}"
    in_use = ", ".join(
        f"{key} ({count(status.rows_by_key.get(key, 0))} rows)" for key in status.key_ids_in_use
    )
    return table(
        ("state", state),
        [("active key", status.active_key_id or "—"), ("keys in use", in_use or "none")],
    )


def usage_table(reply: usage_pb2.GetUsageResponse, by: tuple[str, ...]) -> str:
    """One row per group (a column per `--by` dimension, in its order), then the totals:
    tokens (cache reads and writes among the input), what the providers billed (COST) and
    what the caller is charged (CHARGE, by the configured charge policy)."""

    def cells(row: records_pb2.UsageRow, labels: list[str]) -> list[str]:
        return [
            *labels,
            count(row.calls),
            count(row.input_tokens),
            count(row.output_tokens),
            count(row.cached_tokens),
            count(row.cache_write_tokens),
            dollars(row.cost_micro_usd, places=6),
            dollars(row.charge_micro_usd, places=6),
        ]

    rows = [cells(r, [getattr(r, _ROW_FIELD.get(d, d)) or "—" for d in by]) for r in reply.rows]
    rows.append(cells(reply.totals, ["total", *[""] * (len(by) - 1)]))
    headers = ("CALLS", "IN", "OUT", "CACHED", "WRITTEN", "COST", "CHARGE")
    metrics = range(len(by), len(by) + len(headers))
    return table((*(d.upper() for d in by), *headers), rows, right=metrics)


def _budget_row(b: budgets_pb2.BudgetStatus) -> tuple[str, ...]:
    unlimited = b.budget_micro_usd < 0
    return (
        f"key {b.key_id}" if b.key_id else f"user {b.user_id}",
        f"{b.period} ({b.period_kind})",
        "none" if unlimited else dollars(b.budget_micro_usd),
        "admin" if b.own else "default",
        dollars(b.spent_micro_usd, places=6),
        dollars(b.held_micro_usd, places=6),
        "unlimited" if unlimited else dollars(b.remaining_micro_usd, places=6),
    )


def budgets_table(budgets: list[budgets_pb2.BudgetStatus]) -> str:
    """One row per budget (the user's, then each key's own): its period, amount, who set it
    (an admin, or the configured default), what is spent, held by calls in flight, and left."""
    return table(
        ("BUDGET", "PERIOD", "AMOUNT", "SET BY", "SPENT", "HELD", "LEFT"),
        [_budget_row(b) for b in budgets],
        right=(2, 4, 5, 6),
    )


async def budgets(channel: grpc.aio.Channel, args: argparse.Namespace, md: Metadata) -> int:
    """`saga budgets set|show`."""
    if args.budgets_command == "set":
        stub: admin_pb2_grpc.AdminServiceAsyncStub = admin_pb2_grpc.AdminServiceStub(channel)
        reply = await stub.SetBudget(
            admin_pb2.SetBudgetRequest(
                user_id=args.user,
                key_id=args.key_id,
                amount_micro_usd=args.amount or 0,
                period="" if args.clear else args.period,
                clear=args.clear,
            ),
            metadata=md,
            timeout=args.timeout,
        )
        print(to_json(reply) if args.json else budgets_table([reply.budget]))
        return 0
    usage_stub: usage_pb2_grpc.UsageServiceAsyncStub = usage_pb2_grpc.UsageServiceStub(channel)
    shown = await usage_stub.GetBudget(
        usage_pb2.GetBudgetRequest(user_id=args.user), metadata=md, timeout=args.timeout
    )
    print(to_json(shown) if args.json else budgets_table([shown.user, *shown.keys]))
    return 0


async def providers(channel: grpc.aio.Channel, args: argparse.Namespace, md: Metadata) -> int:
    """`saga providers set-key|link|list|check`."""
    stub: admin_pb2_grpc.AdminServiceAsyncStub = admin_pb2_grpc.AdminServiceStub(channel)
    if args.providers_command == "set-key":
        key = read_secret(f"API key for {args.name}: ")
        stored = await stub.SetProviderKey(
            admin_pb2.SetProviderKeyRequest(provider=args.name, api_key=key),
            metadata=md,
            timeout=args.timeout,
        )
        print(
            to_json(stored)
            if args.json
            else f"stored the key of {args.name} (version {stored.version})"
        )
    elif args.providers_command == "link":
        token = read_secret(f"refresh token for {args.name}: ")
        linked = await stub.LinkProviderAccount(
            admin_pb2.LinkProviderAccountRequest(
                provider=args.name, user_id=args.user, refresh_token=token
            ),
            metadata=md,
            timeout=args.timeout,
        )
        print(
            to_json(linked)
            if args.json
            else f"linked {args.name} for {args.user} (version {linked.version})"
        )
    elif args.providers_command == "list":
        listed = await stub.ListProviders(
            admin_pb2.ListProvidersRequest(), metadata=md, timeout=args.timeout
        )
        if args.json:
            print(to_json(listed))
        else:
            print(providers_table(list(listed.providers)))
            print(outbox_line(listed.outbox))
    else:
        checked = await stub.CheckProviders(
            admin_pb2.CheckProvidersRequest(providers=args.names),
            metadata=md,
            timeout=args.timeout,
        )
        print(to_json(checked) if args.json else checks_table(list(checked.results)))
        return 0 if all(c.ok for c in checked.results) else 1
    return 0


async def vault(channel: grpc.aio.Channel, args: argparse.Namespace, md: Metadata) -> int:
    """`saga vault status|rotate|rewrap`."""
    stub: admin_pb2_grpc.AdminServiceAsyncStub = admin_pb2_grpc.AdminServiceStub(channel)
    if args.vault_command == "status":
        reply = await stub.GetVaultStatus(
            admin_pb2.GetVaultStatusRequest(), metadata=md, timeout=args.timeout
        )
        print(to_json(reply) if args.json else vault_lines(reply.status))
    elif args.vault_command == "rotate":
        rotated = await stub.RotateVaultKey(
            admin_pb2.RotateVaultKeyRequest(), metadata=md, timeout=args.timeout
        )
        print(
            to_json(rotated)
            if args.json
            else f"active key: {rotated.key_id} (run `saga vault rewrap` to move old rows to it)"
        )
    else:
        async for progress in stub.RewrapVault(
            admin_pb2.RewrapVaultRequest(batch_size=args.batch_size),
            metadata=md,
            timeout=args.timeout,
        ):
            print(
                to_json(progress, compact=True)
                if args.json
                else f"{progress.rows_done}/{progress.rows_total} rows under "
                f"{progress.active_key_id}",
                flush=True,
            )
    return 0


async def usage(channel: grpc.aio.Channel, args: argparse.Namespace, md: Metadata) -> int:
    """`saga usage`: one row per group, then the totals."""
    stub: usage_pb2_grpc.UsageServiceAsyncStub = usage_pb2_grpc.UsageServiceStub(channel)
    reply = await stub.GetUsage(
        usage_pb2.GetUsageRequest(
            start_date=args.start,
            end_date=args.end,
            user_id=args.user,
            all_users=args.all,
            group_by=arguments.dimension_values(args.by),
        ),
        metadata=md,
        timeout=args.timeout,
    )
    print(to_json(reply) if args.json else usage_table(reply, args.by))
    return 0
