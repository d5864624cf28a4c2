"""`saga` — call Saga's gateway from a terminal.

    saga execute chat --input prompt="Hello"   stream a run: tokens as they come, then a summary
        [--strategy S] [--weights cost=0.7,latency=0.3] [--provider NAME]... [--no-fallback]
        [--prefer NAME]...                     try these providers first, in order
        [--max-cost DOLLARS]                   refuse (COST_LIMIT_EXCEEDED) past this cost
        [--detach]                             print the execution id and return; it runs on
        [--idempotency-key K]                  a retry with K attaches to the first run
        [--session ID]                         append the run to a session once it completes
        [--export json|csv]                    an export: the watermarked document at the end
        [--asof D] [--pin-pack PACK_ID] [--pin-commit HASH] [--allow-stale]
                                               pin a pack and ledger commit to rerun a run
    saga sessions create [--title T] [--meta NAME=VALUE]...   a new session; its id on stdout
    saga sessions list [--page-size N] [--page-token T]       yours, most recently updated first
    saga sessions show ID | saga sessions delete ID           its stages, oldest first
    saga patterns list | show ID               what you can run: inputs, steps, refused files
    saga models                                the model names the OpenAI-compatible API takes
    saga keys create NAME [--scope S] [--expires 30d|12h|2027-01-01T00:00:00Z]
                                               a new API key for yourself (shown once)
    saga keys list | saga keys revoke KEY_ID   your keys with their expiry and state
    saga keys limits KEY_ID [--rpm N] [--concurrent N] | --clear   a key's own limits (admin)
    saga register EMAIL | saga login EMAIL     password on stdin or a hidden prompt; register
                                               creates a user (an admin's key while
                                               self-registration is closed, the default)
    saga providers list                        circuit, health, prices per 1M tokens, limits
    saga providers check [NAME...]             probe now: ok or failed, latency (exit 1: a failure)
    saga providers set-key NAME | link NAME --user U          (admin; secret on stdin)
    saga vault status | rotate | rewrap                       (admin)
    saga usage [--from D] [--to D] [--user U | --all] [--by provider,model,day]
    saga budgets set USER --amount 5.00 [--period day|month] [--key KEY_ID] | --clear   (admin)
    saga budgets show [USER]                   what is left this period: the user's, their keys'
    saga ledger import FILE.csv [--expect-head HASH]   append transactions atomically (admin)
    saga packs publish FILE [--asof D] [--source S]   a pricing pack from JSON or CSV (admin)
    saga packs list | health [--asof D] [--pack ID]   packs and their status (FRESH, WARMING…)
    saga executions list [--status S] [--pattern P] [--user U | --all] [--limit N]
    saga executions show ID | watch ID [--after N]   a run's record; replay its events, follow it

Output is aligned tables for people; `--json` (before or after the command) prints each reply
as proto3 JSON instead, one document per line for the streams of `execute` and `vault rewrap`
(errors stay lines on stderr; the exit code tells a script what happened).

The gateway comes from --gateway, $SAGA_GATEWAY, the configuration the services read
($SAGA_CONFIG, else ./saga.toml: `services.gateway`), or 127.0.0.1:50051. The credential from
--key, $SAGA_API_KEY, or <data_dir>/admin.key (written by the first `make run`), where
data_dir is --data-dir, $SAGA_DATA_DIR, the configuration's `data_dir`, or .saga.

Exit codes: 0 done; 1 the call failed (its code, reason and domain are printed); 2 a bad
argument (one line says which); 78 a configuration the services would refuse too. Never a
traceback (--debug shows one for an error the CLI did not expect).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import traceback

import grpc

from clients.cli import (
    account,
    admin,
    arguments,
    execute,
    executions,
    ledger,
    models,
    packs,
    patterns,
    sessions,
)
from clients.cli.settings import Settings
from services.common.config import EXIT_CONFIG, ConfigError
from services.common.status import describe


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = arguments.Parser(
        prog="saga", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--gateway", help="host:port (default: $SAGA_GATEWAY, config, 127.0.0.1:50051)")
    p.add_argument(
        "--ca-file",
        help="dial the gateway over TLS, trusting this CA (default: $SAGA_GATEWAY_CA_FILE)",
    )
    p.add_argument(
        "--tls", action="store_true", help="dial the gateway over TLS with the system's CAs"
    )
    p.add_argument("--key", help="API key or token (default: $SAGA_API_KEY, <data_dir>/admin.key)")
    p.add_argument("--data-dir", help="where admin.key is (default: $SAGA_DATA_DIR, config, .saga)")
    p.add_argument(
        "--timeout", type=arguments.seconds, default=300.0, help="deadline in seconds (300)"
    )
    p.add_argument("--json", action="store_true", help="print replies as JSON, for scripts")
    p.add_argument("--debug", action="store_true", help="a traceback for an unexpected error")
    # Every command also takes --json after its name; SUPPRESS keeps the global value when the
    # command's own flag is absent.
    common = arguments.Parser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON")
    sub = p.add_subparsers(dest="command", required=True)
    execute.add_parser(sub, common)
    keys = sub.add_parser("keys", help="your API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", parents=[common], help="a new key, shown once")
    create.add_argument("name")
    create.add_argument("--scope", action="append", help="repeatable (default: execute)")
    create.add_argument(
        "--expires",
        type=arguments.expiry_from_now,
        help="a duration (45m, 12h, 30d, 2w) or an ISO 8601 time, UTC unless it says otherwise "
        "(default: never)",
    )
    keys_sub.add_parser("list", parents=[common], help="your keys, their expiry and state")
    revoke = keys_sub.add_parser("revoke", parents=[common], help="revoke a key now")
    revoke.add_argument("key_id")
    limits = keys_sub.add_parser(
        "limits", parents=[common], help="set any key's own rate limits (admin)"
    )
    limits.add_argument("key_id")
    limits.add_argument(
        "--rpm",
        type=arguments.count_limit(1_000_000),
        default=0,
        help="Executes per minute for this key alone (default: the per-user limit)",
    )
    limits.add_argument(
        "--concurrent",
        type=arguments.count_limit(10_000),
        default=0,
        help="executions at once for this key alone (default: the per-user limit)",
    )
    limits.add_argument("--clear", action="store_true", help="back to the per-user limits for both")
    for command in ("register", "login"):
        signing = sub.add_parser(
            command,
            parents=[common],
            help="create a user with email+password (an admin's key unless sign-up is open)"
            if command == "register"
            else "log in with email+password",
        )
        signing.add_argument("email")
    admin.add_parsers(sub, common)
    sessions.add_parser(sub, common)
    ledger.add_parsers(sub, common)
    packs.add_parsers(sub, common)
    executions.add_parser(sub, common)
    patterns.add_parsers(sub, common)
    models.add_parser(sub, common)
    return p


def _credential_if_any(settings: Settings) -> tuple[tuple[str, str], ...]:
    """The caller's credential for `register` (an admin creates accounts while
    self-registration is closed), or none: anyone may register when it is open."""
    try:
        return settings.metadata()
    except SystemExit:  # no key anywhere: an anonymous sign-up
        return ()


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    channel = settings.channel()
    try:
        if args.command == "register":
            return await account.sign_in(channel, args, _credential_if_any(settings))
        if args.command == "login":
            return await account.sign_in(channel, args, ())
        command = {
            "execute": execute.execute,
            "keys": account.keys,
            "providers": admin.providers,
            "vault": admin.vault,
            "usage": admin.usage,
            "budgets": admin.budgets,
            "sessions": sessions.sessions,
            "ledger": ledger.ledger,
            "packs": packs.packs,
            "executions": executions.executions,
            "patterns": patterns.patterns,
            "models": models.models,
        }[args.command]
        return await command(channel, args, settings.metadata())
    except grpc.aio.AioRpcError as error:
        d = describe(error)
        what = " ".join(
            x for x in (d.code.name, d.reason, f"({d.domain})" if d.domain else "") if x
        )
        print(f"saga: {what}: {d.message}", file=sys.stderr)
        for v in d.field_violations:
            print(f"  {v.field}: {v.description}", file=sys.stderr)
        if d.retry_after is not None:
            print(f"  retry after {d.retry_after:.1f} s", file=sys.stderr)
        return 1
    finally:
        await channel.close(None)


def main() -> None:
    """Entry point: whatever failure is left becomes one line and an exit code here."""
    args = parser().parse_args()
    try:
        sys.exit(asyncio.run(_run(args, Settings(args))))
    except KeyboardInterrupt:
        sys.exit(130)
    except ConfigError as error:
        print(f"saga: configuration: {error}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    except Exception as error:  # the last line of defence against a traceback
        if args.debug:
            traceback.print_exc()
        print(
            f"saga: unexpected {type(error).__name__}: {error} (a bug in the CLI; "
            f"--debug shows where)",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
