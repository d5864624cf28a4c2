"""The operator console at `/console/` in headless Chromium, against all six services as real
processes and two fake providers: an operator signs in with the admin key, sees a provider
open its circuit after it fails, runs `chat` from the form and watches its tokens arrive,
follows the run's timeline, creates and revokes a key and sees it refused; a plain user
signs in with email and password and sees only their own usage and no operator page.

The browser is driven by tests/e2e/node/console.mjs (playwright-core over Debian's
chromium, which `make setup` installs, or the build the CHROMIUM variable names, as on the
forge's CI); screenshots of each page, at 1280 px and at a phone's
width, are the test's artefacts in `test-artifacts/console/` (or `$SAGA_TEST_ARTIFACTS/console/`;
replaced on each run, the path is printed). The console's headers (CSP, caching) are checked
here over raw HTTP."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.gateway.web.console import CONTENT_SECURITY_POLICY
from services.runtime import demo
from tests.e2e.test_budgets import Account, register
from tests.e2e.test_http_facade import call, chat, url
from tests.e2e.test_resilience_gateway import (
    A_TOKENS,
    B_TOKENS,
    QUICK_CIRCUITS,
    RANK_FAILING_PROVIDERS,
    fakes,
    provider_toml,
)
from tests.fakes.providers import FakeProviders, Script, answer_text
from tests.harness import ROOT, Stack, stack_for

SCRIPT = ROOT / "tests" / "e2e" / "node" / "console.mjs"
PACK_ASOF = (datetime.datetime.now(datetime.UTC).date() - datetime.timedelta(days=1)).isoformat()
PACK_PRICES = [
    {"symbol": p.symbol, "price_micro": str(p.price_micro), "currency": p.currency}
    for p in demo.PRICES
]
"""What the operator publishes from the form: yesterday's pack of the demo portfolio's
symbols (today's demo pack keeps serving the runs)."""
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
"""The browser `make setup` checked (the Makefile exports CHROMIUM; Debian's by default)."""
ARTIFACTS = Path(os.environ.get("SAGA_TEST_ARTIFACTS", ROOT / "test-artifacts"))
"""Where the browser test's screenshots stay after the run (for a person or a CI upload)."""
PAGES = ("overview", "providers", "usage", "executions", "patterns", "keys")


@dataclass
class World:
    stack: Stack
    flaky: FakeProviders
    steady: FakeProviders
    user: Account
    """A plain user (no admin scope)."""


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with fakes(2) as (a, b):
        config = provider_toml("flaky", a, "ollama", max_retries=0) + provider_toml(
            "steady", b, "ollama"
        )
        a.defaults["ollama"] = Script(tokens=A_TOKENS)
        b.defaults["ollama"] = Script(tokens=B_TOKENS)
        # Circuits open after 2 failures and stay open for the whole module.
        env = QUICK_CIRCUITS | RANK_FAILING_PROVIDERS
        env["SAGA_ROUTER__CIRCUIT_COOLDOWN_SECONDS"] = "600"
        env["SAGA_BUDGETS__ENABLED"] = "true"  # keys can be capped (no default budget)
        async with stack_for(tmp_path_factory.mktemp("console"), config=config, **env) as s:
            yield World(s, a, b, await register(s, "console"))


async def get(stack: Stack, path: str) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(url(stack, path), allow_redirects=False) as response,
    ):
        return response.status, dict(response.headers), await response.read()


async def test_the_console_is_served_with_a_strict_policy_and_long_cached_assets(
    world: World,
) -> None:
    status, headers, _ = await get(world.stack, "/console")
    assert (status, headers["Location"]) == (302, "/console/")
    status, headers, body = await get(world.stack, "/console/")
    assert status == 200
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-cache"
    page = body.decode()
    # No inline script: every script is a hashed file of the build.
    assert "<script>" not in page
    assert '<script type="module">' not in page
    assets = [p.split('"')[0] for p in page.split('src="')[1:]]
    assert assets
    assert all(a.startswith("/console/assets/index-") for a in assets)
    status, headers, _ = await get(world.stack, assets[0])
    assert status == 200
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    status, _, body = await get(world.stack, "/console/assets/..%2F..%2Fsaga.toml")
    assert status == 404
    assert json.loads(body)["error"]["reason"] == "ROUTE_NOT_FOUND"


async def fail_flaky(world: World) -> None:
    """`flaky` answers 500 from now on; two runs that prefer it open its circuit."""
    world.flaky.defaults["ollama"] = Script(fail="server_error")
    body = chat("hello", preferred_providers=["flaky", "steady"])
    for _ in range(2):
        admin = world.stack.admin_key()
        status, reply, _ = await call(world.stack, "POST", "/v1/execute", admin, body)
        assert status == 200, reply


async def run_chat(stack: Stack, prompt: str) -> tuple[int, Any]:
    status, reply, _ = await call(stack, "POST", "/v1/execute", stack.admin_key(), chat(prompt))
    return status, reply


async def hold_run(world: World) -> asyncio.Task[Any]:
    """A run of `chat` left RUNNING: "steady" holds its request until a second one is open
    (`release-run`), then answers both. Returns once the provider holds the request."""
    world.steady.defaults["ollama"] = Script(tokens=B_TOKENS, hold_until_open=2)
    seen = len(world.steady.requests())
    task = asyncio.create_task(run_chat(world.stack, "held"))
    for _ in range(200):
        if len(world.steady.requests()) > seen:
            return task
        await asyncio.sleep(0.05)
    raise AssertionError("the held run never reached its provider")


async def drive(world: World, shots: Path) -> dict[str, Any]:
    """Run the browser script, answering its asks; what it reports."""
    installed = await asyncio.to_thread(CHROMIUM.exists)
    assert installed, f"{CHROMIUM} is missing: `make setup` installs Debian's (or set CHROMIUM)"
    stack = world.stack
    # Some usage of the plain user's own, and the admin's, before the browser looks.
    for key in (world.user.token, stack.admin_key()):
        status, reply, _ = await call(stack, "POST", "/v1/execute", key, chat("before"))
        assert status == 200, reply
    node = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPT),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin:/usr/local/bin",
            "HOME": str(shots),
            "SAGA_CONSOLE": url(stack, "/console/"),
            "SAGA_ADMIN_KEY": stack.admin_key(),
            "SAGA_USER_ID": world.user.user_id,
            "SAGA_USER_EMAIL": world.user.email,
            "SAGA_USER_PASSWORD": world.user.password,
            "SAGA_SHOTS": str(shots),
            "SAGA_CHROMIUM": str(CHROMIUM),
            "SAGA_PACK_ASOF": PACK_ASOF,
            "SAGA_PACK_PRICES": json.dumps(PACK_PRICES),
        },
    )
    assert node.stdin is not None
    assert node.stdout is not None
    assert node.stderr is not None
    result: dict[str, Any] | None = None
    held: list[asyncio.Task[Any]] = []
    async with asyncio.timeout(300):
        while line := await node.stdout.readline():
            message = json.loads(line)
            if "result" in message:
                result = message["result"]
                continue
            ask = message["ask"]
            if ask == "fail-flaky":
                await fail_flaky(world)
            elif ask == "hold-run":
                held.append(await hold_run(world))
            elif ask == "release-run":
                held.append(asyncio.create_task(run_chat(stack, "releases the held one")))
            else:
                raise AssertionError(f"the script asked for {ask}")
            node.stdin.write(b"ok\n")
            await node.stdin.drain()
        errors = (await node.stderr.read()).decode()
        code = await node.wait()
        for status, reply in await asyncio.gather(*held):
            assert status == 200, reply
    assert code == 0, errors[-5000:]
    assert result is not None, errors[-5000:]
    return result


async def test_an_operator_and_a_user_in_the_browser(world: World) -> None:
    shots = ARTIFACTS / "console"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    print(f"console screenshots: {shots}")
    # A key of the plain user's, for the admin to find on the Keys page and revoke.
    body = {"name": "user-key", "scopes": ["execute"]}
    status, made, _ = await call(world.stack, "POST", "/v1/api-keys", world.user.token, body)
    assert status == 200, made
    seen = await drive(world, shots)
    print(json.dumps(seen, indent=1))

    assert seen["console_errors"] == []  # no CSP violation, no script error
    assert seen["focused_at_start"] == "api-key"
    assert seen["storage"] == {"local": 0, "session": 1}
    assert seen["storage_after_logout"] == 0
    # Drawn once after sign-in; the skip link is the first stop and stays on the page.
    assert seen["overview_headings"] == 1
    assert seen["first_tab"] == "Skip to content"
    assert seen["after_skip"] == ["main", "#/overview"]
    # The overview plots the last 30 days, one bar a day, quiet days included.
    charts = dict(seen["overview_charts"])
    assert set(charts) == {"Calls per day", "Failed runs per day", "Tokens per day", "Cost per day"}
    assert set(charts.values()) == {30}

    # The circuit the operator watched open.
    assert seen["flaky_before"] == "CLOSED"
    assert seen["flaky_after"] == "OPEN"
    assert "Provider flaky: circuit OPEN" in seen["warnings"]
    # Live metrics and the optimizer's ranking per strategy, beside the circuits.
    assert "Live metrics" in seen["providers_text"]
    assert "steady (" in seen["ranking_cheapest"]

    # chat from the form: "flaky" is open, so "steady" wrote it, token by token.
    assert seen["run_text"] == answer_text(B_TOKENS)
    assert "completed by steady" in seen["run_timeline"]
    assert "completed" in seen["execution_timeline"]
    # The form asks for what a run needs first; every pattern is listed with its inputs.
    assert seen["first_input"] == "input-prompt"
    assert "chat" in seen["patterns_table"]
    assert "prompt*" in seen["patterns_table"]
    # A running one, followed live: nothing until the provider answered, then its tokens.
    assert seen["live_status"] == "RUNNING"
    assert seen["live_text_before"] == ""
    assert seen["live_text_after"] == answer_text(B_TOKENS)

    # The admin sees everyone's usage (both users), the plain user only their own.
    assert "Every user's usage" in seen["admin_usage_notice"]
    assert world.user.user_id in seen["admin_usage_users"]
    assert len(seen["admin_usage_users"]) == 2  # and the admin's own
    assert "Your own usage only" in seen["user_usage_notice"]
    assert seen["user_usage_users"] == [world.user.user_id]
    assert "Publishing a pack needs scope admin" in seen["user_patterns"]
    assert "do not allow usage (SCOPE_MISSING)" in seen["user_other_usage"]
    # Runs likewise: the admin's list is everyone's, the user's their own.
    assert seen["admin_runs_notice"] == "Every user's runs."
    assert world.user.user_id in seen["admin_runs_users"]
    assert len(seen["admin_runs_users"]) == 2
    # One run a page: every run of the full list, in its order, once, through the API's page
    # tokens; the first page has no previous one, and back from the last is the one before.
    assert len(seen["admin_run_ids"]) >= 3
    assert seen["paging_ids"] == seen["admin_run_ids"]
    assert seen["paging_first_has_previous"] is False
    assert seen["paging_back"] == seen["paging_ids"][-2]
    assert seen["user_runs_notice"].startswith("Your own runs")
    assert seen["user_runs_users"] == [world.user.user_id]
    assert "do not allow this page: it needs scope admin" in seen["user_providers"]
    assert "Provider and vault warnings need scope admin" in seen["user_overview"]
    # What the plain user's scopes do not allow is not even asked for.
    assert seen["user_admin_calls"] == []

    # The usage table as CSV, as the browser downloads it.
    assert seen["usage_csv_name"].startswith("saga-usage-user-")
    lines = seen["usage_csv"].splitlines()
    assert lines[0] == "user,Calls,Input tokens,Output tokens,Cost (USD)"
    assert sorted(line.split(",")[0] for line in lines[1:]) == sorted(seen["admin_usage_users"])

    # A pack published from the form, listed while it warms.
    assert seen["published"].startswith(f"Published PP_{PACK_ASOF}")
    assert seen["published"].rsplit(" ", 1)[1] in {"WARMING", "FRESH"}  # as reconciliation goes
    pack_id = seen["published"].split()[1].rstrip(":")
    assert pack_id in seen["packs_table"]

    # A key shown once, revoked, then refused at sign-in.
    assert seen["key_shown"] is True
    assert seen["own_key_state"] == "active (this session)"
    assert seen["key_cap"].startswith("$1.5000 a ")
    assert "CREDENTIAL_REVOKED" in seen.get("revoked_refusal", "")
    # Every user, one a page, each once; the plain user's key, revoked by the admin, refused.
    assert world.user.user_id in seen["listed_users"]
    assert len(seen["listed_users"]) == len(set(seen["listed_users"])) >= 2
    assert made["info"]["key_id"] in seen["user_keys_before"]
    assert made["api_key"] not in seen["user_keys_before"]
    assert seen["user_key_limits"] == "7/min, 2 at once"
    assert "revoked" in seen["user_keys_after"]
    status, error, _ = await call(world.stack, "GET", "/v1/patterns", made["api_key"])
    assert (status, error["error"]["reason"]) == (401, "CREDENTIAL_REVOKED")
    assert "Listing every user and their keys needs scope admin" in seen["user_keys_page"]

    assert seen["phone_overflow"] == dict.fromkeys(PAGES, False)
    names = {p.name for p in shots.iterdir()}
    assert {f"{page}-phone.png" for page in PAGES} <= names
    assert {f"{page}.png" for page in PAGES if page != "keys"} | {"keys-created.png"} <= names
