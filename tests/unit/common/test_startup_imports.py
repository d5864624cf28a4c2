"""What each service imports at start: heavy packages only where every process needs them.

Every module a service imports stays resident for its whole life (bench/README.md, the
`memory` section, has the figures), so a package only some calls need is imported on the
first of them instead. Each service's bootstrap and `app` module are imported in a fresh
interpreter, as `python -m services.<name>` imports them.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from services.common.identity import SERVICES
from tests.harness import ROOT

LAZY = ("jsonschema", "referencing", "aiohttp", "asyncpg", "redis")
"""Packages no service needs before a particular call or configuration: the router's tool
and structured-output schemas, HTTP (served by the gateway, called by the router's
engines; auth only for OAuth providers), PostgreSQL and Redis storage."""

AT_START = {"gateway": {"aiohttp"}, "router": {"aiohttp"}}
"""Of those, what a service does use on every start: the gateway serves HTTP, the
router's engines call it."""


def loaded_at_start(service: str) -> set[str]:
    """Which of `LAZY` a fresh interpreter holds after importing `service`'s modules."""
    probe = (
        "import json, sys\n"
        f"import services.common.server, services.{service}.app\n"
        f"print(json.dumps([m for m in {list(LAZY)!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_heavy_packages_only_when_it_uses_them(service: str) -> None:
    assert loaded_at_start(service) == AT_START.get(service, set())
