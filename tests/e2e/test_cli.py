"""The `saga` CLI against the real stack: human tables, `--json` for scripts, one-line errors
with exit 2 for bad arguments, and the credential found through the services' configuration."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.e2e.test_resilience_gateway import provider_toml
from tests.fakes.providers import FakeProviders, Script
from tests.harness import ROOT, Stack, stack_for


def run_cli(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m clients.cli ARGS` with no SAGA_… variable of the test run leaking in."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
    return subprocess.run(
        [sys.executable, "-m", "clients.cli", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


def saga_cli(stack: Stack, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The CLI as the stack's admin."""
    return run_cli(
        "--gateway", stack.target("gateway"), "--key", stack.admin_key(), *args, stdin=stdin
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def refused_in_one_line(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == ""
    return result.stderr


def row(table: str, first: str) -> str:
    return next(line for line in table.splitlines() if line.split()[0] == first)


def test_providers_list_is_a_table_of_names_circuits_and_prices(stack: Stack) -> None:
    table = ok(saga_cli(stack, "providers", "list"))
    header = table.splitlines()[0]
    for column in ("NAME", "KIND", "MODEL", "CIRCUIT", "HEALTHY", "IN $/1M", "CACHE R/W $/1M"):
        assert column in header
    assert "LIMITS" in header
    assert "TIMEOUTS" in header
    assert "CONTEXT" in header
    fast, smart = row(table, "sim-fast"), row(table, "sim-smart")
    assert "first 30 s, idle 15 s, total 300 s" in fast
    assert table.splitlines()[-1].startswith("usage outbox: 0 waiting, 0 in flight")
    # Columns are aligned: each row's circuit state starts under the header's CIRCUIT.
    assert fast.index("closed") == smart.index("closed") == header.index("CIRCUIT")
    assert "sim-small" in fast
    assert "$0.15" in fast
    assert "$0.60" in fast
    assert "$2.50" in smart
    assert "$10.00" in smart
    assert "CIRCUIT_STATE" not in table


def test_json_is_the_reply_for_scripts_before_or_after_the_command(stack: Stack) -> None:
    listed = json.loads(ok(saga_cli(stack, "--json", "providers", "list")))
    by_name = {p["name"]: p for p in listed["providers"]}
    assert set(by_name) == {"sim-fast", "sim-smart"}
    fast = by_name["sim-fast"]
    assert fast["circuitState"] == "CIRCUIT_STATE_CLOSED"
    assert fast["prices"]["inputPerMillionMicroUsd"] == "150000"
    assert fast["prices"]["outputPerMillionMicroUsd"] == "600000"
    assert isinstance(fast["healthy"], bool)  # present even when false
    assert "limits" in fast
    assert "contextWindow" in fast
    vault = json.loads(ok(saga_cli(stack, "vault", "status", "--json")))
    assert vault["status"]["state"] == "VAULT_STATE_SERVING"
    assert vault["status"]["activeKeyId"]
    keys = json.loads(ok(saga_cli(stack, "keys", "list", "--json")))
    assert all("keyId" in k for k in keys["keys"])
    usage = json.loads(ok(saga_cli(stack, "usage", "--all", "--json")))
    assert "calls" in usage["totals"]


def test_execute_with_json_prints_one_event_per_line(stack: Stack) -> None:
    lines = ok(saga_cli(stack, "execute", "chat", "--input", "prompt=hi", "--json")).splitlines()
    events = [json.loads(line) for line in lines]
    assert "accepted" in events[0]
    assert "completed" in events[-1]
    assert any("token" in event for event in events)


def test_execute_with_an_allow_list_is_answered_by_the_allowed_provider(stack: Stack) -> None:
    args = ("execute", "chat", "--input", "prompt=hi", "--json", "--no-fallback")
    for name in ("sim-fast", "sim-smart"):
        lines = ok(saga_cli(stack, *args, "--provider", name)).splitlines()
        (step,) = [e["stepCompleted"] for e in map(json.loads, lines) if "stepCompleted" in e]
        assert step["provider"] == name
    # A name the router does not know is refused, in one line naming the reason.
    refused = saga_cli(stack, "execute", "chat", "--input", "prompt=hi", "--provider", "nope")
    assert refused.returncode == 1, refused.stderr
    assert "UNKNOWN_PROVIDER" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_vault_status_reads_as_words(stack: Stack) -> None:
    status = ok(saga_cli(stack, "vault", "status"))
    assert status.splitlines()[0].split() == ["state", "serving"]
    active = row(status, "active").split()
    assert active[:2] == ["active", "key"]
    assert len(active) == 3
    assert "keys in use" in status
    assert "VAULT_STATE" not in status


def test_providers_check_probes_each_provider(stack: Stack) -> None:
    checked = ok(saga_cli(stack, "providers", "check"))
    assert checked.splitlines()[0].split() == ["PROVIDER", "RESULT", "STREAMED", "COMPLETE"]
    for name in ("sim-fast", "sim-smart"):
        cells = row(checked, name).split()
        # name, ok, then each mode: "ok N ms"
        assert (cells[1], cells[2], cells[4], cells[5], cells[7]) == ("ok", "ok", "ms", "ok", "ms")
        assert int(cells[3]) >= 0
        assert int(cells[6]) >= 0
    one = json.loads(ok(saga_cli(stack, "--json", "providers", "check", "sim-smart")))
    assert [(r["provider"], r["ok"]) for r in one["results"]] == [("sim-smart", True)]
    assert "latencyMs" in one["results"][0]
    assert one["results"][0]["stream"]["ok"] is True
    assert one["results"][0]["complete"]["ok"] is True


def test_keys_create_with_an_expiry_shows_it_in_the_list(stack: Stack) -> None:
    before = datetime.now(UTC)
    created = saga_cli(stack, "keys", "create", "month-key", "--expires", "30d")
    assert ok(created).strip().startswith("saga_")
    assert "expires " in created.stderr
    dated = saga_cli(stack, "keys", "create", "dated-key", "--expires", "2030-01-01T00:00:00Z")
    assert ok(dated).strip()
    listed = ok(saga_cli(stack, "keys", "list"))
    after = datetime.now(UTC)
    assert "EXPIRES" in listed.splitlines()[0]
    month = next(line for line in listed.splitlines() if "  month-key  " in line)
    days = {f"{moment + timedelta(days=30):%Y-%m-%d} " for moment in (before, after)}
    assert any(day in month for day in days), month
    assert month.split()[-2:] == ["active", "execute"]
    dated_row = next(line for line in listed.splitlines() if "  dated-key  " in line)
    assert "2030-01-01 00:00Z" in dated_row
    keys = json.loads(ok(saga_cli(stack, "keys", "list", "--json")))["keys"]
    assert {k["name"]: k.get("expiresAt") for k in keys}["dated-key"] == "2030-01-01T00:00:00Z"


def test_a_past_or_malformed_expiry_is_refused_before_any_call(stack: Stack) -> None:
    past = refused_in_one_line(
        saga_cli(stack, "keys", "create", "old", "--expires", "2020-01-01T00:00:00Z")
    )
    assert "in the past" in past
    malformed = refused_in_one_line(saga_cli(stack, "keys", "create", "odd", "--expires", "soon"))
    assert "'soon'" in malformed
    names = {k["name"] for k in json.loads(ok(saga_cli(stack, "keys", "list", "--json")))["keys"]}
    assert not names & {"old", "odd"}


def test_an_unknown_usage_dimension_is_named_in_one_line(stack: Stack) -> None:
    refused = refused_in_one_line(saga_cli(stack, "usage", "--by", "model,bogus"))
    assert "'bogus'" in refused
    assert "user, session, provider, model, day" in refused


def test_usage_is_a_table_with_a_column_per_dimension_and_totals(stack: Stack) -> None:
    table = ok(saga_cli(stack, "usage", "--all", "--by", "provider,model"))
    lines = table.splitlines()
    assert lines[0].split() == [
        "PROVIDER", "MODEL", "CALLS", "IN", "OUT", "CACHED", "WRITTEN", "COST", "CHARGE"
    ]  # fmt: skip
    assert lines[-1].startswith("total")
    assert lines[-1].split()[-1].startswith("$")


def test_the_credential_comes_from_the_data_dir_of_saga_config(
    stack: Stack, tmp_path: Path
) -> None:
    data = tmp_path / "state"
    data.mkdir()
    (data / "admin.key").write_text(stack.admin_key() + "\n")
    port = stack.target("gateway").rsplit(":", 1)[1]
    config = tmp_path / "saga.toml"
    config.write_text(f'data_dir = "{data}"\n\n[services.gateway]\nport = {port}\n')
    # No --key, --gateway or --data-dir: both come from the file SAGA_CONFIG names.
    table = ok(run_cli("providers", "list", env={"SAGA_CONFIG": str(config)}))
    assert "sim-fast" in table
    # $SAGA_DATA_DIR comes before the file's data_dir.
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = refused_in_one_line(
        run_cli("providers", "list", env={"SAGA_CONFIG": str(config), "SAGA_DATA_DIR": str(empty)}),
        code=1,
    )
    assert str(empty / "admin.key") in missing
    # A configuration the services would refuse is one line and EX_CONFIG, like theirs.
    broken = refused_in_one_line(
        run_cli("providers", "list", env={"SAGA_CONFIG": str(tmp_path / "absent.toml")}),
        code=78,
    )
    assert "absent.toml" in broken


def test_cli_operator_commands(stack: Stack) -> None:
    listed = saga_cli(stack, "providers", "list")
    assert "sim-fast" in ok(listed)
    # The secret comes on stdin, never argv; a provider without a key credential refuses it,
    # and the CLI prints auth's reason instead of a traceback.
    refused = saga_cli(stack, "providers", "set-key", "sim-fast", stdin="sk-from-stdin\n")
    assert refused.returncode == 1
    assert "auth.saga" in refused.stderr
    assert "sk-from-stdin" not in refused.stderr + refused.stdout
    assert "Traceback" not in refused.stderr
    usage = saga_cli(stack, "usage", "--all", "--by", "provider")
    assert ok(usage).splitlines()[-1].startswith("total")


def test_register_with_an_admin_key_creates_a_user_and_without_one_is_refused(
    stack: Stack, tmp_path: Path
) -> None:
    email = f"cli.{os.urandom(4).hex()}@example.com"
    password = "correct horse " + os.urandom(6).hex() + "\n"
    created = ok(saga_cli(stack, "register", email, stdin=password))
    assert created.startswith(f"created user {email} as usr_"), created
    # No key anywhere (an empty data dir): an anonymous sign-up, refused while it is closed.
    anonymous = run_cli(
        "--gateway",
        stack.target("gateway"),
        "--data-dir",
        str(tmp_path),
        "register",
        f"other.{email}",
        stdin=password,
    )
    assert "REGISTRATION_CLOSED" in refused_in_one_line(anonymous, code=1)
    token = ok(run_cli("--gateway", stack.target("gateway"), "login", email, stdin=password))
    assert token.strip().count(".") == 2


def test_executions_list_show_and_watch_a_run(stack: Stack) -> None:
    lines = ok(saga_cli(stack, "execute", "chat", "--input", "prompt=hi", "--json")).splitlines()
    events = [json.loads(line) for line in lines]
    execution_id = events[0]["accepted"]["executionId"]
    listing = ok(saga_cli(stack, "executions", "list", "--pattern", "chat")).splitlines()
    assert listing[0].split()[:3] == ["EXECUTION", "PATTERN", "STATUS"]
    assert any(row.split()[:3] == [execution_id, "chat", "succeeded"] for row in listing[1:])
    shown = ok(saga_cli(stack, "executions", "show", execution_id))
    assert "succeeded" in shown
    assert execution_id in shown
    # The watch prints the run's text again; --json gives the events after --after.
    text = "".join(e["token"]["text"] for e in events if "token" in e)
    watched = saga_cli(stack, "executions", "watch", execution_id)
    assert ok(watched).strip() == text.strip()
    assert execution_id in watched.stderr
    tail = ok(saga_cli(stack, "executions", "watch", execution_id, "--after", "2", "--json"))
    assert [json.loads(line) for line in tail.splitlines()] == events[2:]
    missing = saga_cli(stack, "executions", "show", "exe_" + "0" * 32)
    assert missing.returncode == 1
    assert "EXECUTION_NOT_FOUND" in missing.stderr


def events_of(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The events `saga execute --json` printed (it must have succeeded)."""
    return [json.loads(line) for line in ok(result).splitlines()]


def test_execute_tries_the_preferred_provider_first(stack: Stack) -> None:
    for name in ("sim-fast", "sim-smart"):
        events = events_of(
            saga_cli(stack, "execute", "chat", "--input", "prompt=hi", "--json", "--prefer", name)
        )
        (step,) = [e["stepCompleted"] for e in events if "stepCompleted" in e]
        assert step["provider"] == name


def test_execute_with_a_max_cost_below_the_runs_cost_is_refused(stack: Stack) -> None:
    refused = saga_cli(stack, "execute", "chat", "--input", "prompt=hi", "--max-cost", "0.000001")
    assert refused.returncode == 1, refused.stderr
    assert "RESOURCE_EXHAUSTED COST_LIMIT_EXCEEDED" in refused.stderr
    assert "Traceback" not in refused.stderr
    # A limit it fits under runs.
    events = events_of(
        saga_cli(stack, "execute", "chat", "--input", "prompt=hi", "--json", "--max-cost", "$1")
    )
    assert "completed" in events[-1]


def test_a_bad_max_cost_is_one_line_before_any_call(stack: Stack) -> None:
    for bad, says in (
        ("abc", "not an amount of dollars"),
        ("-1", "cannot be negative"),
        ("0.0000001", "at most 6 decimals"),
        ("0", "leave out --max-cost"),
        ("1000000.01", "at most $1,000,000"),
    ):
        line = refused_in_one_line(
            saga_cli(stack, "execute", "chat", "--input", "prompt=hi", "--max-cost", bad)
        )
        assert says in line, line


def test_execute_twice_with_one_idempotency_key_attaches_to_one_run(stack: Stack) -> None:
    key = f"cli-{os.urandom(6).hex()}"
    args = ("execute", "chat", "--input", "prompt=once only", "--json", "--idempotency-key", key)
    first, again = events_of(saga_cli(stack, *args)), events_of(saga_cli(stack, *args))
    assert again[0]["accepted"]["executionId"] == first[0]["accepted"]["executionId"]
    assert again == first  # the first run's events, replayed: no second run, no second bill
    # Another request under the same key is refused, not run.
    other = saga_cli(stack, "execute", "chat", "--input", "prompt=else", "--idempotency-key", key)
    assert other.returncode == 1
    assert "IDEMPOTENCY_KEY_REUSED" in other.stderr


def test_execute_pins_the_pack_and_commit_it_is_given(stack: Stack) -> None:
    first = events_of(saga_cli(stack, "execute", "chat", "--input", "prompt=hi", "--json"))
    pack = first[0]["accepted"]["pricingPackId"]
    commit = first[0]["accepted"]["ledgerCommitHash"]
    for flags in (
        ("--pin-pack", pack, "--pin-commit", commit),
        ("--pack", pack, "--commit", commit),
    ):
        again = events_of(
            saga_cli(stack, "execute", "chat", "--input", "prompt=hi", "--json", *flags)
        )
        assert again[0]["accepted"]["pricingPackId"] == pack
        assert again[0]["accepted"]["ledgerCommitHash"] == commit
    for flag, value, reason in (
        ("--pin-pack", "PP_2000-01-01_00000000", "PACK_NOT_FOUND"),
        ("--pin-commit", "ab" * 32, "LEDGER_COMMIT_NOT_FOUND"),
    ):
        refused = saga_cli(stack, "execute", "chat", "--input", "prompt=hi", flag, value)
        assert refused.returncode == 1, refused.stderr
        assert reason in refused.stderr


async def test_execute_detach_returns_at_once_and_the_run_goes_on(tmp_path: Path) -> None:
    async with FakeProviders() as fake:
        # Long enough that the CLI has gone long before the answer ends.
        fake.defaults["ollama"] = Script(tokens=40, interval=0.05)
        config = provider_toml("slow", fake, "ollama", max_retries=0)
        async with stack_for(tmp_path, config=config) as s:
            detached = await asyncio.to_thread(
                saga_cli, s, "execute", "chat", "--input", "prompt=go on", "--detach"
            )
            execution_id = ok(detached).strip()
            assert execution_id.startswith("exe_"), execution_id
            assert f"saga executions watch {execution_id}" in detached.stderr
            watched = await asyncio.to_thread(
                saga_cli, s, "executions", "watch", execution_id, "--json"
            )
            events = [json.loads(line) for line in ok(watched).splitlines()]
            assert "completed" in events[-1]
            assert sum("token" in e for e in events) == 40
            # The CLI went away after Accepted, seconds before the answer ended; detached, the
            # provider call ran to its end instead of being cancelled down the chain.
            (seen,) = fake.requests("ollama")
            assert seen.completed
            assert not seen.disconnected
            shown = await asyncio.to_thread(saga_cli, s, "executions", "show", execution_id)
            assert "succeeded" in ok(shown)
