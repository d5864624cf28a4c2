"""The Kubernetes saga.toml is valid for the schema (a renamed key would stop every pod)."""

from __future__ import annotations

from services.common.config import load_config
from tests.harness import ROOT


def test_deploy_config_loads() -> None:
    # The TLS files exist only inside a pod; everything else must load as written.
    config = load_config(
        ROOT / "deploy" / "k8s" / "base" / "saga.toml", env={"SAGA_TLS__MODE": "dev"}
    )
    assert config.vault.keyring == "directory"
    assert config.context.signing_key_file == "/etc/saga/context/context.key"
    assert config.services.router.dial_target() == "dns:///router.saga.svc.cluster.local:50054"
