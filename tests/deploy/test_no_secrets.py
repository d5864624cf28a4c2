"""No key material or token in what ships: the files the image copies, the manifests (as
written and as rendered), the workflows and the supply-chain tools. Key material lives in
secrets created in the cluster (deploy/README.md), never in the repository."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import yaml

from tests.deploy.manifests import KUSTOMIZATIONS, files_under, of_kind, render
from tests.harness import ROOT

SHIPPED = [ROOT / "services", ROOT / "deploy", ROOT / ".github", ROOT / "tools"]
"""What the image copies (services/; gen/python/ is generated from protos/) and what deploys
it or builds it."""

PATTERNS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "Saga API key": re.compile(r"saga_ak_[0-9A-Za-z]{38}"),
    "OpenAI/Anthropic key": re.compile(r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}"),
    "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]+"),
    "password in a URL": re.compile(r"://[^/\s:@'\"]+:(?!CHANGE-ME@|…@)[^@\s/'\"]+@"),
}


def findings(text: str) -> list[str]:
    """The kinds of secret `text` appears to hold."""
    return [kind for kind, pattern in PATTERNS.items() if pattern.search(text)]


def _scanned() -> list[Path]:
    skip = {"__pycache__"}
    return [p for root in SHIPPED for p in files_under(root) if not skip & set(p.parts)]


def test_the_scan_finds_each_kind_of_secret() -> None:
    samples = [
        "-----BEGIN EC PRIVATE KEY-----",
        "saga_ak_" + "a1B2" * 9 + "c3",
        "OPENAI_API_KEY=sk-proj-" + "x" * 30,
        "ghp_" + "A" * 36,
        "AKIA" + "ABCDEFGHIJKLMNOP",
        "AIza" + "b" * 35,
        "xoxb-" + "1234567890-abc",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl",
        "postgresql://saga:hunter2@db:5432/saga",
    ]
    assert [findings(s) for s in samples] == [[kind] for kind in PATTERNS]
    # The placeholders the docs use are not secrets.
    assert findings("postgresql://saga:CHANGE-ME@postgres:5432/saga redis://:…@redis") == []


def test_no_secret_in_shipped_files() -> None:
    scanned = _scanned()
    assert any(p.name == "gateway.yaml" for p in scanned)  # the manifests were read
    assert any(p.suffix == ".py" for p in scanned)  # and the code the image copies
    found = {
        str(p.relative_to(ROOT)): kinds
        for p in scanned
        if (kinds := findings(p.read_text(errors="replace")))
    }
    assert found == {}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_no_secret_in_rendered_manifests(kustomization: str) -> None:
    objects = render(kustomization)
    assert findings(yaml.safe_dump_all(objects)) == []
    # A generated Secret's values are base64: look inside them too.
    for name, secret in of_kind(objects, "Secret").items():
        for key, value in secret.get("data", {}).items():
            assert findings(base64.b64decode(value).decode()) == [], (name, key)
