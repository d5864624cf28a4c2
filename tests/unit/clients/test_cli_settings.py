"""Where the CLI finds the gateway and its credential: flag, environment, configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.cli.__main__ import parser
from clients.cli.settings import Settings
from services.common.config import ConfigError


def settings(argv: list[str], env: dict[str, str]) -> Settings:
    return Settings(parser().parse_args([*argv, "providers", "list"]), env)


def test_the_data_dir_is_flag_then_environment_then_config(tmp_path: Path) -> None:
    config = tmp_path / "saga.toml"
    config.write_text('data_dir = "/srv/saga"\n')
    env = {"SAGA_CONFIG": str(config)}
    assert settings([], env).data_dir() == Path("/srv/saga")
    assert settings([], {**env, "SAGA_DATA_DIR": "/env"}).data_dir() == Path("/env")
    assert settings(["--data-dir", "/flag"], {**env, "SAGA_DATA_DIR": "/env"}).data_dir() == Path(
        "/flag"
    )
    # With $SAGA_DATA_DIR set the configuration is not even read (a broken one does not matter).
    absent = {"SAGA_CONFIG": str(tmp_path / "absent.toml"), "SAGA_DATA_DIR": "/env"}
    assert settings([], absent).data_dir() == Path("/env")


def test_without_any_the_data_dir_is_dot_saga(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./saga.toml here
    assert settings([], {}).data_dir() == Path(".saga")


def test_the_gateway_comes_from_the_configured_gateway_service(tmp_path: Path) -> None:
    config = tmp_path / "saga.toml"
    config.write_text('[services.gateway]\nhost = "0.0.0.0"\nport = 51234\n')
    env = {"SAGA_CONFIG": str(config)}
    assert settings([], env).gateway() == "127.0.0.1:51234"
    assert settings([], {**env, "SAGA_GATEWAY": "gw:1"}).gateway() == "gw:1"
    assert settings(["--gateway", "flag:2"], {**env, "SAGA_GATEWAY": "gw:1"}).gateway() == "flag:2"
    config.write_text('[services.gateway]\ntarget = "dns:///gateway.saga.svc:50051"\n')
    assert settings([], env).gateway() == "dns:///gateway.saga.svc:50051"


def test_the_credential_is_read_from_the_data_dir(tmp_path: Path) -> None:
    (tmp_path / "admin.key").write_text("saga_ak_x\n")
    assert settings([], {"SAGA_DATA_DIR": str(tmp_path)}).credential() == "saga_ak_x"
    assert settings(["--key", "k"], {"SAGA_DATA_DIR": str(tmp_path)}).credential() == "k"
    with pytest.raises(SystemExit, match="no credential"):
        settings([], {"SAGA_DATA_DIR": str(tmp_path / "none")}).credential()


def test_a_broken_configuration_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        settings([], {"SAGA_CONFIG": str(tmp_path / "absent.toml")}).gateway()
