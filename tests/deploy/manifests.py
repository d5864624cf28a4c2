"""Render deploy/k8s with kustomize and read what the rendered objects say.

kustomize is the one kubectl embeds (`kubectl kustomize`, on every machine of ours and on the
forge's runners), or a standalone `kustomize` where one is on PATH; no registry ships it.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.harness import ROOT

K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = ("base", "overlays/dev", "overlays/production")
"""Every kustomization a user applies (the component is part of the two overlays)."""

Manifest = dict[str, Any]


def kustomize_command() -> list[str]:
    """The kustomize to run: a standalone binary, else kubectl's built-in one."""
    if standalone := shutil.which("kustomize"):
        return [standalone, "build"]
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    raise AssertionError(
        "no kustomize: install kubectl (it embeds kustomize), e.g. `apt-get install kubectl`"
    )


@functools.cache
def render(kustomization: str) -> tuple[Manifest, ...]:
    """The objects `kubectl apply -k deploy/k8s/<kustomization>` would apply."""
    result = subprocess.run(
        [*kustomize_command(), str(K8S / kustomization)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(objects: tuple[Manifest, ...], kind: str) -> dict[str, Manifest]:
    """The rendered objects of one kind, by name."""
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def container(deployment: Manifest) -> Manifest:
    """The one container of a Saga Deployment."""
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def entrypoint() -> list[str]:
    """The image's ENTRYPOINT (exec form), which the Deployments' `args` follow."""
    for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines():
        if line.startswith("ENTRYPOINT "):
            value = yaml.safe_load(line.removeprefix("ENTRYPOINT "))
            assert isinstance(value, list)
            return [str(v) for v in value]
    raise AssertionError("deploy/Dockerfile has no ENTRYPOINT")


def files_under(path: Path) -> list[Path]:
    """Every file below `path`, sorted."""
    return sorted(p for p in path.rglob("*") if p.is_file())
