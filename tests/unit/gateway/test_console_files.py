"""The console's files as the gateway serves them, from a build directory of the test's own
(the browser test, tests/e2e/test_console.py, serves the real build): the page revalidated,
hashed assets cached a year, the strict policy on every answer, nothing outside the build
reachable, a gateway without a build saying so, and the check the image's CI runs
(`python -m services.gateway.web.console`) telling a whole build from a broken one."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.gateway.web.console import CONTENT_SECURITY_POLICY, IMMUTABLE, Console
from services.gateway.web.middleware import MAX_BODY_KEY, observe
from tests.harness import ROOT


@pytest.fixture
def build(tmp_path: Path) -> Path:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text('<script type="module" src="/console/assets/a-1.js">')
    (dist / "assets" / "a-1.js").write_text("export {};")
    (tmp_path / "secret.txt").write_text("not for the web")
    return dist


async def client_for(dist: Path) -> TestClient[web.Request, web.Application]:
    app = web.Application(middlewares=[observe])
    app[MAX_BODY_KEY] = 1024
    app.add_routes(Console(dist).routes())
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def client(build: Path) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    c = await client_for(build)
    yield c
    await c.close()


async def test_the_page_is_revalidated_and_assets_are_cached_a_year(
    client: TestClient[web.Request, web.Application],
) -> None:
    page = await client.get("/console/")
    assert page.status == 200
    assert page.headers["Cache-Control"] == "no-cache"
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    asset = await client.get("/console/assets/a-1.js")
    assert asset.status == 200
    assert asset.headers["Cache-Control"] == IMMUTABLE
    assert asset.content_type == "text/javascript"
    assert asset.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    moved = await client.get("/console", allow_redirects=False)
    assert (moved.status, moved.headers["Location"]) == (302, "/console/")


@pytest.mark.parametrize(
    "path",
    ["/console/assets/missing.js", "/console/assets/..%2Fsecret.txt", "/console/secret.txt"],
)
async def test_nothing_outside_the_build_is_served(
    client: TestClient[web.Request, web.Application], path: str
) -> None:
    answer = await client.get(path)
    assert answer.status == 404
    assert (await answer.json())["error"]["reason"] == "ROUTE_NOT_FOUND"
    assert "not for the web" not in await answer.text()


async def test_a_gateway_without_a_build_says_so(tmp_path: Path) -> None:
    client = await client_for(tmp_path / "no-dist")
    try:
        answer = await client.get("/console/")
        assert answer.status == 404
        body = await answer.json()
        assert body["error"]["reason"] == "CONSOLE_NOT_BUILT"
    finally:
        await client.close()


def test_the_policy_allows_no_inline_script_nor_framing() -> None:
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert "unsafe" not in CONTENT_SECURITY_POLICY


def test_the_check_passes_a_whole_build_and_names_what_a_broken_one_lacks(
    build: Path, tmp_path: Path
) -> None:
    assert Console(build).problems() == []
    (build / "assets" / "a-1.js").unlink()
    assert Console(build).problems() == ["assets/a-1.js: named by index.html, not in the build"]
    none = tmp_path / "no-dist"
    assert Console(none).problems() == [f"{none / 'index.html'}: missing (run `make console`)"]


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.gateway.web.console", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_check_as_the_image_runs_it(build: Path, tmp_path: Path) -> None:
    # This checkout's own build (`make setup` made it), where the gateway reads it.
    whole = check()
    assert whole.returncode == 0, whole.stderr
    assert "console build" in whole.stdout
    broken = check(str(tmp_path / "no-dist"))
    assert broken.returncode == 1
    assert "index.html: missing" in broken.stderr
