"""Configuration: defaults, file and environment precedence, and messages that name the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.common.config import EXIT_CONFIG, ConfigError, load_config
from tests.harness import ROOT


def test_defaults_are_spec_ports() -> None:
    config = load_config(env={})
    assert [config.services.get(s).port for s in ("gateway", "auth", "vault")] == [
        50051,
        50052,
        50053,
    ]
    assert config.services.runtime.probe_port == 50066
    assert config.services.optimizer.metrics_port == 9105
    assert config.services.gateway.http_port == 8080
    assert config.tls.mode == "dev"


def test_file_then_environment_precedence(tmp_path: Path) -> None:
    file = tmp_path / "saga.toml"
    file.write_text('data_dir = "/srv/saga"\n[services.router]\nport = 6000\nprobe_port = 6001\n')
    config = load_config(file, env={"SAGA_SERVICES__ROUTER__PORT": "7000"})
    assert config.data_dir == "/srv/saga"
    assert config.services.router.port == 7000
    assert config.services.router.probe_port == 6001
    # Keys not given keep their defaults, in this table and in the others.
    assert config.services.router.metrics_port == 9104
    assert config.services.auth.port == 50052


@pytest.mark.parametrize(
    ("toml", "env", "expected"),
    [
        ("[services.router]\nport = 'abc'\n", {}, "services.router.port: expected an integer"),
        ("", {"SAGA_SERVICES__ROUTER__PORT": "x"}, "from SAGA_SERVICES__ROUTER__PORT"),
        ("[services.routr]\nport = 1\n", {}, "did you mean 'services.router'"),
        ("", {"SAGA_SERVICES__ROUTR__PORT": "1"}, "did you mean SAGA_SERVICES__ROUTER__PORT"),
        ("[tls]\nmode = 'weird'\n", {}, "tls.mode: 'weird'"),
        ("[tls]\nmode = 'files'\n", {}, "tls.cert_file: missing key"),
        ("[gateway]\npublic_cert_file = 'x.pem'\n", {}, "gateway.public_key_file: missing key"),
        (
            "[gateway]\npublic_cert_file = '/no/x.pem'\npublic_key_file = '/no/x.key'\n",
            {},
            "gateway.public_cert_file: file '/no/x.pem' does not exist",
        ),
        ("[services.auth]\nport = 70000\n", {}, "services.auth.port: 70000"),
        ("[services.auth]\nport = 50051\n", {}, "port 50051 is also services.gateway.port"),
        ("[server]\ngrace_seconds = -1\n", {}, "server.grace_seconds: -1"),
        ("[server\n", {}, "not valid TOML"),
        ("services = 3\n", {}, "services: expected a table"),
        ("[accounting]\ncharge_policy = 'free'\n", {}, "accounting.charge_policy: 'free'"),
        (
            "[[providers]]\nname = 'a'\nkind = 'sim'\nmodel = 'm'\n"
            "cache_write_micro_usd_per_mtok = 'x'\n",
            {},
            "providers[0].cache_write_micro_usd_per_mtok: expected an integer",
        ),
        (
            "[[providers]]\nname = 'a'\nkind = 'sim'\nmodel = 'm'\n"
            "cache_write_micro_usd_per_mtok = -1\n",
            {},
            "providers[0].cache_write_micro_usd_per_mtok: -1",
        ),
        ("", {"SAGA_STORAGE__PROBE_FAILURES": "0"}, "storage.probe_failures: 0"),
        ("[storage]\nprobe_interval_seconds = 0\n", {}, "storage.probe_interval_seconds: 0"),
    ],
)
def test_bad_values_name_the_key_and_the_fix(
    tmp_path: Path, toml: str, env: dict[str, str], expected: str
) -> None:
    file = tmp_path / "saga.toml"
    file.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(file, env=env)
    assert expected in str(err.value)
    assert "Fix:" in str(err.value)


def test_the_cache_write_price_defaults_to_the_input_price(tmp_path: Path) -> None:
    file = tmp_path / "saga.toml"
    provider = (
        "[[providers]]\nname = '{}'\nkind = 'sim'\nmodel = 'm'\ninput_micro_usd_per_mtok = 8\n"
    )
    file.write_text(
        provider.format("a") + provider.format("b") + "cache_write_micro_usd_per_mtok = 10\n"
    )
    config = load_config(file, env={"SAGA_ACCOUNTING__CHARGE_POLICY": "delivered_only"})
    unset, priced = config.providers
    assert (unset.cache_write_micro_usd_per_mtok, unset.cache_write_price) == (None, 8)
    assert (priced.cache_write_micro_usd_per_mtok, priced.cache_write_price) == (10, 10)
    assert config.accounting.charge_policy == "delivered_only"
    assert load_config(env={}).accounting.charge_policy == "all_attempts"


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "absent.toml", env={})
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(env={"SAGA_CONFIG": str(tmp_path / "absent.toml")})


def test_otel_endpoint_env_is_the_default_collector() -> None:
    config = load_config(env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"})
    assert config.telemetry.otlp_endpoint == "http://127.0.0.1:4317"


@pytest.mark.parametrize("service", ["router", "gateway"])
def test_service_with_bad_config_exits_78_without_traceback(tmp_path: Path, service: str) -> None:
    file = tmp_path / "saga.toml"
    file.write_text("[services.router]\nport = 'abc'\n")
    result = subprocess.run(
        [sys.executable, "-m", f"services.{service}", "--config", str(file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == EXIT_CONFIG
    assert "configuration error: services.router.port: expected an integer" in result.stderr
    assert "Traceback" not in result.stderr


GROUPED = "[[providers]]\nname = 'a'\nkind = 'sim'\nmodel = 'm-a'\n" + (
    "[[providers]]\nname = 'b'\nkind = 'sim'\nmodel = 'm-b'\n"
)


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        ("name = 'saga/mine'\nproviders = ['a']\n", "gateway.model_groups[0].name"),
        ("name = 'm-a'\nproviders = ['a']\n", "gateway.model_groups[0].name"),
        ("name = ''\nproviders = ['a']\n", "gateway.model_groups[0].name"),
        ("name = 'g'\nproviders = []\n", "gateway.model_groups[0].providers"),
        ("name = 'g'\nproviders = ['a', 'zzz']\n", "unknown: zzz"),
        ("name = 'g'\nproviders = ['a', 'a']\n", "gateway.model_groups[0].providers"),
    ],
)
def test_a_bad_model_group_names_the_key(tmp_path: Path, group: str, expected: str) -> None:
    file = tmp_path / "saga.toml"
    file.write_text(GROUPED + "[[gateway.model_groups]]\n" + group)
    with pytest.raises(ConfigError) as err:
        load_config(file, env={})
    assert expected in str(err.value)
    assert "Fix:" in str(err.value)


def test_model_groups_keep_their_order(tmp_path: Path) -> None:
    file = tmp_path / "saga.toml"
    file.write_text(
        GROUPED
        + "[[gateway.model_groups]]\nname = 'team/x'\nproviders = ['b', 'a']\n"
        + "[[gateway.model_groups]]\nname = 'team/y'\nproviders = ['a']\ndescription = 'y'\n"
    )
    groups = load_config(file, env={}).gateway.model_groups
    assert [(g.name, g.providers, g.description) for g in groups] == [
        ("team/x", ("b", "a"), ""),
        ("team/y", ("a",), "y"),
    ]
