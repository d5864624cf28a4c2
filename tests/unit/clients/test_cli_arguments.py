"""The CLI's argument values: expiries and usage dimensions, refused in one line with exit 2."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from clients.cli.__main__ import parser
from clients.cli.arguments import amount, dimensions, expiry, max_cost, seconds, weights
from clients.cli.execute import execute_options
from saga.execution.v1 import common_pb2, options_pb2

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "ahead"),
    [
        ("45m", timedelta(minutes=45)),
        ("12h", timedelta(hours=12)),
        ("30d", timedelta(days=30)),
        ("2w", timedelta(weeks=2)),
    ],
)
def test_an_expiry_may_be_a_duration(text: str, ahead: timedelta) -> None:
    assert expiry(text, NOW) == NOW + ahead


def test_an_expiry_may_be_a_time_utc_unless_it_names_an_offset() -> None:
    assert expiry("2027-01-01T00:00:00Z", NOW) == datetime(2027, 1, 1, tzinfo=UTC)
    assert expiry("2027-01-01", NOW) == datetime(2027, 1, 1, tzinfo=UTC)
    assert expiry("2027-01-01T02:00:00+02:00", NOW) == datetime(2027, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("0d", "no time at all"),
        ("2026-12-03T11:59:00Z", "in the past"),
        ("soon", "neither a duration"),
        ("30x", "neither a duration"),
        ("-1d", "neither a duration"),
        ("99999999999w", "too far"),
    ],
)
def test_a_bad_expiry_says_why(text: str, says: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=says):
        expiry(text, NOW)


def test_dimensions_are_checked_and_named_once() -> None:
    assert dimensions("provider, model,provider") == ("provider", "model")
    with pytest.raises(argparse.ArgumentTypeError) as err:
        dimensions("model,bogus")
    assert str(err.value) == (
        "unknown dimension 'bogus'; use any of user, session, provider, model, day"
    )
    with pytest.raises(argparse.ArgumentTypeError, match="at least one"):
        dimensions(" , ")


def test_a_bad_argument_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parser().parse_args(["usage", "--by", "bogus"])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("saga usage: argument --by: unknown dimension 'bogus'")


def test_json_may_come_before_or_after_the_command() -> None:
    assert parser().parse_args(["--json", "providers", "list"]).json is True
    assert parser().parse_args(["providers", "list", "--json"]).json is True
    assert parser().parse_args(["providers", "list"]).json is False


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "1e10", "soon"])
def test_a_timeout_is_a_sane_number_of_seconds(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        seconds(text)
    assert seconds("2.5") == 2.5


# ---------------------------------------------------------------- execute's provider options


def test_execute_options_carry_the_allow_list_no_fallback_and_weights() -> None:
    from clients.cli.execute import execute_options
    from saga.execution.v1 import common_pb2

    flags = ["--provider", "a", "--provider", "b", "--no-fallback"]
    args = parser().parse_args(["execute", "chat", *flags, "--weights", "cost=0.7,latency=0.3"])
    options = execute_options(args)
    assert list(options.allowed_providers) == ["a", "b"]
    assert options.disable_fallback
    assert options.strategy == common_pb2.STRATEGY_CUSTOM  # --weights implies it
    assert (options.weights.cost, options.weights.latency, options.weights.quality) == (
        0.7,
        0.3,
        0.0,
    )
    # Control: none of them given, none sent.
    plain = execute_options(parser().parse_args(["execute", "chat"]))
    assert not plain.allowed_providers
    assert not plain.disable_fallback
    assert not plain.HasField("weights")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("cost", "NAME=NUMBER"),
        ("speed=1", "NAME=NUMBER"),
        ("cost=x", "not a number"),
        ("cost=1,cost=2", "twice"),
        ("cost=1e308", "between 0 and 1,000,000"),
        ("cost=nan", "between 0 and 1,000,000"),
        ("cost=0", "at least one"),
    ],
)
def test_bad_weights_say_why(text: str, says: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=says):
        weights(text)


def test_weights_with_another_strategy_are_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from clients.cli.execute import execute_options

    args = parser().parse_args(["execute", "chat", "--strategy", "cheapest", "--weights", "cost=1"])
    with pytest.raises(SystemExit) as exited:
        execute_options(args)
    assert exited.value.code == 2
    assert "--weights goes with --strategy custom" in capsys.readouterr().err


async def test_the_execute_summary_names_skipped_providers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from clients.cli.execute import stream_events
    from saga.execution.v1 import events_pb2, reason_events_pb2
    from saga.gateway.v1 import execution_pb2

    skipped = events_pb2.ProvidersSkipped(
        step_id="answer",
        providers=[
            reason_events_pb2.SkippedProvider(
                provider="down", reason="CIRCUIT_OPEN", retry_after_ms=1500
            )
        ],
    )

    async def events() -> Any:
        yield execution_pb2.ExecuteResponse(providers_skipped=skipped)
        yield execution_pb2.ExecuteResponse(token=events_pb2.Token(step_id="answer", text="hi"))
        yield execution_pb2.ExecuteResponse(completed=events_pb2.Completed())

    summary = await stream_events(events())
    assert "skipped down (CIRCUIT_OPEN)" in summary
    assert "[skipped down: CIRCUIT_OPEN, retry in 1.5 s]" in capsys.readouterr().err


async def test_a_moved_run_is_said_and_its_restarted_steps_text_is_not_the_answer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from google.protobuf import struct_pb2

    from clients.cli.execute import stream_events
    from saga.execution.v1 import events_pb2
    from saga.gateway.v1 import execution_pb2

    def token(text: str) -> execution_pb2.WatchExecutionResponse:
        return execution_pb2.WatchExecutionResponse(
            token=events_pb2.Token(step_id="essay", text=text)
        )

    outputs = struct_pb2.Struct()
    outputs.update({"essay": "whole", "outline": "plan"})

    async def events() -> Any:
        yield token("cut ")
        yield execution_pb2.WatchExecutionResponse(
            run_moved=events_pb2.RunMoved(
                replica="host:2",
                from_replica="host:1",
                reused_step_ids=["outline"],
                restarted_step_ids=["essay"],
                moves=1,
            )
        )
        yield token("whole")
        yield execution_pb2.WatchExecutionResponse(completed=events_pb2.Completed(outputs=outputs))

    await stream_events(events())
    out, err = capsys.readouterr()
    assert (
        "[run moved host:1 → host:2: steps reused outline; started again essay "
        "(their text above is replaced)]" in err
    )
    # The streamed text is the answer once the cut text is left out: only `outline` is shown.
    assert "outline: plan" in out
    assert "essay:" not in out


@pytest.mark.parametrize(
    ("text", "micro"),
    [("5", 5_000_000), ("5.00", 5_000_000), ("$0.25", 250_000), ("0.000001", 1), ("0", 0)],
)
def test_an_amount_is_dollars_to_the_micro_dollar(text: str, micro: int) -> None:
    assert amount(text) == micro


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("five", "not an amount"),
        ("-1", "cannot be negative"),
        ("0.0000001", "at most 6 decimals"),
        ("2000000000", "at most $1,000,000,000"),
        ("nan", "not an amount"),
    ],
)
def test_a_bad_amount_says_why(text: str, says: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(says)):
        amount(text)


@pytest.mark.parametrize(
    ("text", "micro"),
    [("0.000001", 1), ("$0.05", 50_000), ("1e-6", 1), ("1,000,000", 10**12), ("0.1", 100_000)],
)
def test_a_max_cost_is_dollars_as_exact_micro_dollars(text: str, micro: int) -> None:
    assert max_cost(text) == micro


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("cheap", "not an amount"),
        ("-0.5", "cannot be negative"),
        ("0", "leave out --max-cost"),
        ("$0.000", "leave out --max-cost"),
        ("0.0000005", "at most 6 decimals"),
        ("1000000.000001", "at most $1,000,000"),
        ("inf", "not an amount"),
    ],
)
def test_a_bad_max_cost_says_why(text: str, says: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(says)):
        max_cost(text)


def test_execute_takes_every_option_by_its_name() -> None:
    args = parser().parse_args(
        ["execute", "chat", "--prefer", "a", "--prefer", "b", "--max-cost", "0.25", "--detach",
         "--idempotency-key", "k1", "--pin-pack", "PP_x", "--pin-commit", "c0ffee",
         "--session", "ses_1", "--asof", "2026-12-01", "--export", "csv", "--strategy", "cheapest"]
    )  # fmt: skip
    options = execute_options(args)
    assert list(options.preferred_providers) == ["a", "b"]
    assert options.max_cost_micro_usd == 250_000
    assert options.detach_on_disconnect
    assert options.idempotency_key == "k1"
    assert (options.pricing_pack_id, options.ledger_commit_hash) == ("PP_x", "c0ffee")
    assert (options.export, options.export_format) == (True, options_pb2.EXPORT_FORMAT_CSV)
    assert options.strategy == common_pb2.STRATEGY_CHEAPEST
    assert (args.session, args.asof) == ("ses_1", "2026-12-01")
    # The older names of the pins still work.
    old = parser().parse_args(["execute", "chat", "--pack", "PP_y", "--commit", "beef"])
    assert (execute_options(old).pricing_pack_id, execute_options(old).ledger_commit_hash) == (
        "PP_y",
        "beef",
    )


def test_budgets_set_needs_an_amount_or_clear(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(["budgets", "set", "usr_a"])
    assert exited.value.code == 2
    assert "--amount" in capsys.readouterr().err
    args = parser().parse_args(["budgets", "set", "usr_a", "--amount", "5.00", "--key", "k1"])
    assert (args.amount, args.key_id, args.period, args.clear) == (5_000_000, "k1", "", False)


def test_execute_export_makes_the_run_an_export_in_the_format_given() -> None:
    from clients.cli.execute import execute_options
    from saga.execution.v1 import options_pb2

    exported = execute_options(parser().parse_args(["execute", "chat", "--export", "csv"]))
    assert (exported.export, exported.export_format) == (True, options_pb2.EXPORT_FORMAT_CSV)
    plain = execute_options(parser().parse_args(["execute", "chat"]))
    assert (plain.export, plain.export_format) == (False, options_pb2.EXPORT_FORMAT_UNSPECIFIED)
