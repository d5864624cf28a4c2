"""The CLI's formatting: aligned tables, enum names, dollars, dates and key states."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from clients.cli.account import key_state
from clients.cli.admin import providers_table, usage_table, vault_lines
from clients.cli.output import circuit_name, dollars, limits, table, to_json, when
from saga.auth.v1 import api_keys_pb2
from saga.execution.v1 import records_pb2
from saga.gateway.v1 import usage_pb2
from saga.router.v1 import providers_pb2
from saga.vault.v1 import status_pb2

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def stamp(moment: datetime) -> timestamp_pb2.Timestamp:
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(moment)
    return result


def test_a_table_aligns_columns_and_right_aligns_numbers() -> None:
    text = table(("NAME", "COUNT", "NOTE"), [("a", "1", ""), ("longer", "1,000", "x")], right=(1,))
    assert text.splitlines() == [
        "NAME    COUNT  NOTE",
        "a           1",
        "longer  1,000  x",
    ]


def test_circuit_states_are_names() -> None:
    assert circuit_name(providers_pb2.CIRCUIT_STATE_CLOSED) == "closed"
    assert circuit_name(providers_pb2.CIRCUIT_STATE_OPEN) == "open"
    assert circuit_name(providers_pb2.CIRCUIT_STATE_HALF_OPEN) == "half-open"
    assert circuit_name(providers_pb2.CIRCUIT_STATE_UNSPECIFIED) == "unknown"
    assert circuit_name(99) == "unknown"


def test_dollars_keep_every_micro_usd() -> None:
    assert dollars(150_000) == "$0.15"
    assert dollars(75_000) == "$0.075"
    assert dollars(10_000_000) == "$10.00"
    assert dollars(0) == "$0.00"
    assert dollars(15, places=6) == "$0.000015"
    assert dollars(-1_500_000) == "-$1.50"


def test_limits_fit_one_cell() -> None:
    assert limits(providers_pb2.Limits()) == "unlimited"
    assert limits(providers_pb2.Limits(max_concurrency=8, tpm=90_000)) == (
        "8 concurrent, 90,000 tpm"
    )


def test_timestamps_read_to_the_minute_in_utc() -> None:
    assert when(stamp(datetime(2027, 1, 1, tzinfo=UTC))) == "2027-01-01 00:00Z"
    assert when(timestamp_pb2.Timestamp(), unset="never") == "never"


def test_a_key_is_active_expired_or_revoked() -> None:
    assert key_state(api_keys_pb2.ApiKeyInfo(), NOW) == "active"
    future = api_keys_pb2.ApiKeyInfo(expires_at=stamp(datetime(2027, 1, 1, tzinfo=UTC)))
    assert key_state(future, NOW) == "active"
    past = api_keys_pb2.ApiKeyInfo(expires_at=stamp(datetime(2026, 1, 1, tzinfo=UTC)))
    assert key_state(past, NOW) == "expired"
    past.revoked_at.CopyFrom(stamp(datetime(2025, 6, 1, tzinfo=UTC)))
    assert key_state(past, NOW) == "revoked"


def test_the_providers_table_shows_state_prices_and_limits() -> None:
    provider = providers_pb2.ProviderInfo(
        name="openai",
        kind="openai",
        model="gpt-4o-mini",
        circuit_state=providers_pb2.CIRCUIT_STATE_HALF_OPEN,
        healthy=False,
        prices=providers_pb2.Prices(
            input_per_million_micro_usd=150_000,
            output_per_million_micro_usd=600_000,
            cached_input_per_million_micro_usd=75_000,
            cache_write_per_million_micro_usd=187_500,
        ),
        limits=providers_pb2.Limits(rpm=500),
        context_window=128_000,
    )
    header, line = providers_table([provider]).splitlines()
    assert "CACHE R/W $/1M" in header
    assert header.split()[:5] == ["NAME", "KIND", "MODEL", "CIRCUIT", "HEALTHY"]
    assert line.split() == [
        "openai",
        "openai",
        "gpt-4o-mini",
        "half-open",
        "no",
        "$0.15",
        "$0.60",
        "$0.075/$0.1875",  # cache reads, cache writes
        "500",
        "rpm",
        "—",  # no timeouts in this ProviderInfo
        "128,000",
    ]


def test_vault_status_names_its_state_and_rows_per_key() -> None:
    sealed = status_pb2.VaultStatus(
        state=status_pb2.VAULT_STATE_SEALED,
        sealed_reason="canary does not decrypt",
        active_key_id="k2",
        key_ids_in_use=["k1", "k2"],
        rows_by_key={"k1": 3, "k2": 1200},
    )
    assert vault_lines(sealed).splitlines() == [
        "state        sealed: canary does not decrypt",
        "active key   k2",
        "keys in use  k1 (3 rows), k2 (1,200 rows)",
    ]


def test_usage_has_a_column_per_dimension_in_the_order_asked() -> None:
    row = records_pb2.UsageRow(
        model="m",
        provider="p",
        calls=2,
        cache_write_tokens=7,
        cost_micro_usd=30,
        charge_micro_usd=12,
    )
    reply = usage_pb2.GetUsageResponse(
        rows=[row],
        totals=records_pb2.UsageRow(
            calls=2, cache_write_tokens=7, cost_micro_usd=30, charge_micro_usd=12
        ),
    )
    lines = usage_table(reply, ("model", "provider")).splitlines()
    assert lines[0].split() == [
        "MODEL", "PROVIDER", "CALLS", "IN", "OUT", "CACHED", "WRITTEN", "COST", "CHARGE"
    ]  # fmt: skip
    # The providers' cost and the caller's charge side by side.
    assert lines[1].split() == ["m", "p", "2", "0", "0", "0", "7", "$0.000030", "$0.000012"]
    assert lines[2].split() == ["total", "2", "0", "0", "0", "7", "$0.000030", "$0.000012"]
    assert json.loads(to_json(reply))["totals"]["chargeMicroUsd"] == "12"


def test_json_keeps_fields_at_their_defaults() -> None:
    info = json.loads(to_json(providers_pb2.ProviderInfo(name="x")))
    assert info["healthy"] is False
    assert info["circuitState"] == "CIRCUIT_STATE_UNSPECIFIED"
    assert "\n" not in to_json(providers_pb2.ProviderInfo(name="x"), compact=True)
