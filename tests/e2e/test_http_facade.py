"""The JSON/SSE facade on the gateway's HTTP port, with all six services as real processes
and a raw HTTP client (what curl sends): a run answered once as JSON or streamed as SSE with
gapless ids, a reconnect with Last-Event-ID that gets exactly the rest, sessions, usage,
executions and patterns through the same servicers as their RPCs, /health/pack while a pack
warms, bad input named field by field, and another user's run as absent as one that never
was."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.test_budgets import new_user, register
from tests.e2e.test_packs import publish
from tests.harness import Stack, stack_for
from tests.otlp import Collector

TODAY = datetime.datetime.now(datetime.UTC).date()
YESTERDAY = (TODAY - datetime.timedelta(days=1)).isoformat()


@dataclass
class Facade:
    """The stack and its OTLP collector (the HTTP door's spans)."""

    stack: Stack
    collector: Collector


@pytest.fixture(scope="module")
async def facade(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Facade]:
    collector = Collector()
    endpoint = await collector.start()
    try:
        async with stack_for(
            tmp_path_factory.mktemp("http-facade"),
            # A published pack stays WARMING for the whole module.
            SAGA_RUNTIME__PACK_WARMUP_SECONDS="600",
            # The contract test fuzzes POST /v1/login from this address; the tests after it
            # still sign users in.
            SAGA_GATEWAY__ACCOUNT_CALLS_PER_MINUTE="100000",
            # A revoked key is refused within a second (the test waits that long).
            SAGA_GATEWAY__CREDENTIAL_CACHE_SECONDS="1",
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",
        ) as s:
            yield Facade(s, collector)
    finally:
        await collector.stop()


@pytest.fixture(scope="module")
def stack(facade: Facade) -> Stack:
    return facade.stack


def url(stack: Stack, path: str) -> str:
    return f"http://127.0.0.1:{stack.ports['gateway'].http_port}{path}"


def auth(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


def chat(prompt: str, **options: Any) -> dict[str, Any]:
    return {"pattern_id": "chat", "inputs": {"prompt": prompt}, "options": options}


@dataclass
class Event:
    """One Server-Sent Event as a client parses it."""

    event: str
    id: str | None
    data: Any


@dataclass
class Stream:
    """A whole SSE response."""

    status: int
    headers: dict[str, str]
    events: list[Event] = field(default_factory=list)
    heartbeats: int = 0


def parse_sse(text: str) -> tuple[list[Event], int]:
    """The events and heartbeat comments of an SSE body (the WHATWG format)."""
    events, heartbeats = [], 0
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name, event_id, data = "message", None, []
        for line in block.split("\n"):
            if line.startswith(":"):
                heartbeats += 1
            elif line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("id: "):
                event_id = line[len("id: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        if data:
            events.append(Event(name, event_id, json.loads("\n".join(data))))
    return events, heartbeats


async def sse(
    stack: Stack, method: str, path: str, key: str, body: Any = None, **headers: str
) -> Stream:
    """A whole SSE response (or the JSON error answered instead)."""
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method,
            url(stack, path),
            json=body,
            headers=auth(key, Accept="text/event-stream", **headers),
        ) as response,
    ):
        text = await response.text()
    stream = Stream(response.status, dict(response.headers))
    if response.content_type == "text/event-stream":
        stream.events, stream.heartbeats = parse_sse(text)
    else:
        stream.events = [Event("json", None, json.loads(text))]
    return stream


async def call(
    stack: Stack, method: str, path: str, key: str | None, body: Any = None, **headers: str
) -> tuple[int, Any, dict[str, str]]:
    """Status, JSON body and headers of one request."""
    sent = auth(key, **headers) if key else headers
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url(stack, path), json=body, headers=sent) as response,
    ):
        return response.status, await response.json(), dict(response.headers)


def violations(error: dict[str, Any]) -> list[str]:
    """The fields a JSON error's BadRequest names."""
    return [
        v["field"]
        for d in error["error"]["details"]
        if d["@type"].endswith("google.rpc.BadRequest")
        for v in d["field_violations"]
    ]


async def test_execute_answers_once_with_the_completed_run(stack: Stack) -> None:
    key = stack.admin_key()
    status, body, headers = await call(stack, "POST", "/v1/execute", key, chat("What is a saga?"))
    assert status == 200, body
    execution_id = body["execution_id"]
    assert headers["x-saga-execution-id"] == execution_id
    assert body["outputs"]["text"]
    assert int(body["usage"]["output_tokens"]) > 0
    assert int(body["cost_micro_usd"]) >= 0
    assert all(body[pin] for pin in ("pricing_pack_id", "ledger_commit_hash", "trace_id"))
    # The run is a record, read through the same servicer as GetExecution and List.
    status, got, _ = await call(stack, "GET", f"/v1/executions/{execution_id}", key)
    assert status == 200
    record = got["execution"]
    assert (record["status"], record["cost_micro_usd"]) == (
        "EXECUTION_STATUS_SUCCEEDED",
        body["cost_micro_usd"],
    )
    status, listed, _ = await call(
        stack, "GET", "/v1/executions?pattern_id=chat&status=EXECUTION_STATUS_SUCCEEDED", key
    )
    assert status == 200
    assert execution_id in [e["execution_id"] for e in listed["executions"]]
    # Watching it afterwards has nothing after its last sequence.
    after = await sse(
        stack,
        "GET",
        f"/v1/executions/{execution_id}/events",
        key,
        **{"Last-Event-ID": body["last_sequence"]},
    )
    assert (after.status, after.events) == (200, [])


async def test_execute_streams_events_with_gapless_ids(stack: Stack) -> None:
    stream = await sse(stack, "POST", "/v1/execute", stack.admin_key(), chat("stream it"))
    assert stream.status == 200
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    kinds = [e.event for e in stream.events]
    assert kinds[0] == "accepted"
    assert kinds[-1] == "completed"
    assert {"step_started", "token", "step_completed"} <= set(kinds)
    assert [e.id for e in stream.events] == [str(i) for i in range(1, len(kinds) + 1)]
    for e in stream.events:
        # data is the event itself: its kind's payload and its sequence.
        assert e.event in e.data
        assert e.data["sequence"] == e.id
    assert (
        stream.headers["x-saga-execution-id"] == stream.events[0].data["accepted"]["execution_id"]
    )


async def test_a_reconnect_with_last_event_id_gets_exactly_the_rest(stack: Stack) -> None:
    key = stack.admin_key()
    whole = await sse(stack, "POST", "/v1/execute", key, chat("resume me, please"))
    execution_id = whole.events[0].data["accepted"]["execution_id"]
    path = f"/v1/executions/{execution_id}/events"
    rest = await sse(stack, "GET", path, key, **{"Last-Event-ID": "3"})
    assert rest.status == 200
    assert [(e.event, e.id, e.data) for e in rest.events] == [
        (e.event, e.id, e.data) for e in whole.events[3:]
    ]
    # The query parameter says the same; from 0 it is the whole run.
    assert (await sse(stack, "GET", f"{path}?after_sequence=3", key)).events == rest.events
    replay = await sse(stack, "GET", f"{path}?after_sequence=0", key)
    assert replay.events == whole.events


async def test_a_failure_mid_stream_is_an_error_event_not_a_clean_end(stack: Stack) -> None:
    key = stack.admin_key()
    # A cost limit below any call's price: the run is accepted, then fails.
    dear = chat("too dear", max_cost_micro_usd="1")
    stream = await sse(stack, "POST", "/v1/execute", key, dear)
    assert stream.status == 200
    assert stream.events[0].event == "accepted"
    last = stream.events[-1]
    assert last.event == "error"
    assert last.id is None
    assert last.data["error"]["reason"]
    assert "completed" not in [e.event for e in stream.events]
    # Without SSE: the error's own status, and the id of the run that failed.
    status, body, headers = await call(stack, "POST", "/v1/execute", key, dear)
    assert status >= 400
    assert body["error"]["reason"] == last.data["error"]["reason"]
    failed = headers["x-saga-execution-id"]
    _, got, _ = await call(stack, "GET", f"/v1/executions/{failed}", key)
    assert got["execution"]["status"] == "EXECUTION_STATUS_FAILED"


async def test_a_refusal_before_the_run_keeps_its_http_status(stack: Stack) -> None:
    key = stack.admin_key()
    for headers in ({}, {"Accept": "text/event-stream"}):
        status, body, _ = await call(
            stack, "POST", "/v1/execute", key, {"pattern_id": "no_such_pattern"}, **headers
        )
        assert (status, body["error"]["status"]) == (404, "NOT_FOUND")
    status, body, _ = await call(stack, "POST", "/v1/execute", None, chat("who am I"))
    assert (status, body["error"]["reason"]) == (401, "CREDENTIAL_MISSING")


async def test_bad_json_and_parameters_are_400_naming_the_field(stack: Stack) -> None:
    key = stack.admin_key()
    cases: list[tuple[str, str, Any, str]] = [
        ("POST", "/v1/execute", {"pattern_id": 5}, "pattern_id"),
        ("POST", "/v1/execute", {"pattern_id": "chat", "inputs": "text"}, "inputs"),
        (
            "POST",
            "/v1/execute",
            {"pattern_id": "chat", "options": {"strategy": "X"}},
            "options.strategy",
        ),
        ("POST", "/v1/execute", {"pattern_id": "chat", "option": {}}, "option"),
        ("POST", "/v1/execute", [1, 2], "body"),
        ("POST", "/v1/sessions", {"title": ["a"]}, "title"),
        ("GET", "/v1/executions?page_size=abc", None, "page_size"),
        ("GET", "/v1/executions?status=NOPE", None, "status"),
        ("GET", "/v1/executions?all_users=maybe", None, "all_users"),
        ("GET", "/v1/executions?created_after=yesterday", None, "created_after"),
        ("GET", "/v1/executions?colour=red", None, "colour"),
        ("GET", "/v1/executions?pattern_id=a&pattern_id=b", None, "pattern_id"),
        ("GET", "/v1/usage?group_by=PLANET", None, "group_by"),
        ("GET", "/v1/patterns?verbose=true", None, "verbose"),
        ("POST", "/v1/execute?stream=true", chat("hi"), "stream"),
        ("POST", "/v1/sessions?title=x", {}, "title"),
    ]
    for method, path, body, named in cases:
        status, error, _ = await call(stack, method, path, key, body)
        assert (status, error["error"]["status"]) == (400, "INVALID_ARGUMENT"), (path, body)
        assert violations(error) == [named], (path, body, error)
    async with (
        aiohttp.ClientSession() as http,
        http.post(url(stack, "/v1/execute"), data=b"{not json", headers=auth(key)) as response,
    ):
        error = await response.json()
    assert (response.status, violations(error)) == (400, ["body"])
    events = "/v1/executions/exe_0/events"
    status, error, _ = await call(stack, "GET", events, key, **{"Last-Event-ID": "three"})
    assert (status, violations(error)) == (400, ["Last-Event-ID"])


async def test_another_users_execution_is_404_like_one_that_never_was(stack: Stack) -> None:
    _, alice = await new_user(stack)
    _, bob = await new_user(stack)
    _, ran, _ = await call(stack, "POST", "/v1/execute", alice, chat("mine"))
    execution_id = ran["execution_id"]
    never = "exe_" + "0" * 32
    for path in (f"/v1/executions/{execution_id}", f"/v1/executions/{execution_id}/events"):
        status, theirs, _ = await call(stack, "GET", path, bob, Accept="text/event-stream")
        _, absent, _ = await call(
            stack, "GET", path.replace(execution_id, never), bob, Accept="text/event-stream"
        )
        assert status == 404
        assert theirs["error"]["reason"] == absent["error"]["reason"] == "EXECUTION_NOT_FOUND"
    status, mine, _ = await call(stack, "GET", "/v1/executions", bob)
    assert (status, mine["executions"]) == (200, [])
    status, _, _ = await call(stack, "GET", "/v1/executions?all_users=true", bob)
    assert status == 403


async def test_sessions_are_created_listed_read_and_deleted(stack: Stack) -> None:
    key = stack.admin_key()
    status, made, _ = await call(
        stack, "POST", "/v1/sessions", key, {"title": "over http", "metadata": {"k": 1}}
    )
    assert status == 200, made
    session_id = made["session"]["session_id"]
    run = {**chat("in a session"), "session_id": session_id}
    assert (await call(stack, "POST", "/v1/execute", key, run))[0] == 200
    status, got, _ = await call(stack, "GET", f"/v1/sessions/{session_id}", key)
    assert (status, got["session"]["title"], len(got["session"]["stages"])) == (
        200,
        "over http",
        1,
    )
    status, page, _ = await call(stack, "GET", "/v1/sessions?page_size=1", key)
    assert status == 200
    assert [s["session_id"] for s in page["sessions"]] == [session_id]
    assert (await call(stack, "DELETE", f"/v1/sessions/{session_id}", key))[:2] == (200, {})
    status, gone, _ = await call(stack, "GET", f"/v1/sessions/{session_id}", key)
    assert status == 404, gone


async def test_usage_patterns_and_packs_are_their_rpcs(stack: Stack) -> None:
    key = stack.admin_key()
    await call(stack, "POST", "/v1/execute", key, chat("count me"))
    status, usage, _ = await call(stack, "GET", "/v1/usage?group_by=USAGE_DIMENSION_PROVIDER", key)
    assert status == 200, usage
    assert usage["rows"]
    assert all(r["provider"] and not r["day"] for r in usage["rows"])
    assert int(usage["totals"]["calls"]) >= 1
    status, budget, _ = await call(stack, "GET", "/v1/usage/budget", key)
    assert status == 200, budget
    status, pattern, _ = await call(stack, "GET", "/v1/patterns/chat", key)
    assert (status, pattern["pattern"]["pattern_id"]) == (200, "chat")
    assert pattern["pattern"]["input_schema"]["properties"]["prompt"]
    status, missing, _ = await call(stack, "GET", "/v1/patterns/nope", key)
    assert (status, missing["error"]["reason"]) == (404, "PATTERN_NOT_FOUND")
    status, packs, _ = await call(stack, "GET", "/v1/packs", key)
    assert status == 200
    assert packs["packs"][0]["status"] == "PACK_STATUS_FRESH"


async def test_pack_health_is_200_when_fresh_and_503_with_retry_after_when_warming(
    stack: Stack,
) -> None:
    key = stack.admin_key()
    status, fresh, _ = await call(stack, "GET", "/health/pack", key)
    assert (status, fresh["health"]["status"]) == (200, "PACK_STATUS_FRESH")
    published = await publish(stack, YESTERDAY, ["NVDA"])
    status, warming, headers = await call(stack, "GET", f"/health/pack?asof={YESTERDAY}", key)
    assert status == 503
    assert warming["health"]["status"] == "PACK_STATUS_WARMING"
    assert warming["health"]["pack_id"] == published.pack_id
    assert warming["health"]["estimated_ready"]
    assert warming["error"]["reason"] == "PACK_WARMING"
    assert int(headers["Retry-After"]) >= 1
    # Unauthenticated: the same refusal as the RPC's.
    assert (await call(stack, "GET", "/health/pack", None))[0] == 401


async def test_curl_shows_the_events_of_a_run(stack: Stack) -> None:
    curl = shutil.which("curl")
    assert curl, "curl is on every Debian machine and in CI; install it (apt-get install curl)"
    body = json.dumps(chat("curl me"))
    done = await asyncio.to_thread(
        subprocess.run,
        [
            curl,
            "-sS",
            "-N",
            "-H",
            "Accept: text/event-stream",
            "-H",
            f"Authorization: Bearer {stack.admin_key()}",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            url(stack, "/v1/execute"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    events, _ = parse_sse(done.stdout)
    assert [e.event for e in events][0 :: len(events) - 1] == ["accepted", "completed"]
    assert "id: 1\n" in done.stdout


async def test_a_request_is_a_span_under_its_traceparent(facade: Facade) -> None:
    stack, collector = facade.stack, facade.collector
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = "00f067aa0ba902b7"
    status, _, _ = await call(
        stack, "GET", "/v1/patterns", stack.admin_key(), traceparent=f"00-{trace_id}-{parent}-01"
    )
    assert status == 200
    # Probes are not traced (noise), as gRPC health checks are not.
    probed = "5bf92f3577b34da6a3ce929d0e0e4736"
    probe = await call(stack, "GET", "/healthz", None, traceparent=f"00-{probed}-{parent}-01")
    assert probe[0] == 200
    for _ in range(100):  # spans are exported in batches
        spans = [s for s in collector.spans if s.trace_id == trace_id]
        if any(s.service == "agent-runtime" for s in spans):
            break
        await asyncio.sleep(0.1)
    (door,) = [s for s in spans if s.name == "GET /v1/patterns"]
    assert (door.service, door.parent_id) == ("gateway", parent)
    # The relayed call to the runtime is its child: one trace across the doors.
    runtime = [s for s in spans if s.service == "agent-runtime"]
    assert runtime
    assert {s.parent_id for s in runtime} == {door.span_id}
    assert not [s for s in collector.spans if s.trace_id == probed]


async def test_the_openapi_document_names_every_route(stack: Stack, tmp_path: Path) -> None:
    status, document, _ = await call(stack, "GET", "/openapi.json", None)
    assert status == 200
    assert document["openapi"].startswith("3.1")
    served = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert {
        ("POST", "/v1/execute"),
        ("GET", "/v1/executions/{execution_id}/events"),
        ("DELETE", "/v1/sessions/{session_id}"),
        ("GET", "/health/pack"),
        ("GET", "/v1/usage"),
    } <= served
    params = {p["name"] for p in document["paths"]["/v1/executions"]["get"]["parameters"]}
    assert {"page_size", "page_token", "status", "created_after", "all_users"} <= params


async def test_the_live_server_keeps_its_openapi_contract(stack: Stack, tmp_path: Path) -> None:
    """schemathesis generates requests from /openapi.json and checks every answer against
    it: no 5xx, documented statuses, content types, headers and response schemas, auth
    not ignored (the checks left out are in schemathesis.toml, with why)."""
    # A run to find: the events route then streams real events for the schema check.
    assert (await call(stack, "POST", "/v1/execute", stack.admin_key(), chat("find me")))[0] == 200
    done = await asyncio.to_thread(
        subprocess.run,
        [
            str(Path(sys.executable).with_name("st")),
            "--config-file",
            str(Path(__file__).with_name("schemathesis.toml")),
            "run",
            url(stack, "/openapi.json"),
            "--header",
            f"Authorization: Bearer {stack.admin_key()}",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "20",
            "--generation-deterministic",
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--no-color",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
        cwd=tmp_path,  # its cache (.schemathesis/) goes there, not into the checkout
    )
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-2000:]


async def test_executions_page_with_their_tokens(stack: Stack) -> None:
    _, key = await new_user(stack)
    for prompt in ("one", "two", "three"):
        assert (await call(stack, "POST", "/v1/execute", key, chat(prompt)))[0] == 200
    seen: list[str] = []
    path = "/v1/executions?page_size=2&pattern_id=chat"
    status, page, _ = await call(stack, "GET", path, key)
    assert status == 200
    seen += [e["execution_id"] for e in page["executions"]]
    token = page["next_page_token"]
    assert token
    status, rest, _ = await call(stack, "GET", f"{path}&page_token={token}", key)
    assert status == 200
    seen += [e["execution_id"] for e in rest["executions"]]
    assert (len(seen), len(set(seen)), rest["next_page_token"]) == (3, 3, "")
    # A token is bound to its filters.
    status, error, _ = await call(stack, "GET", f"/v1/executions?page_token={token}", key)
    assert (status, error["error"]["reason"]) == (400, "PAGE_TOKEN_INVALID")


async def test_sign_in_keys_and_operator_routes_over_http(stack: Stack) -> None:
    """The routes the console needs: Login, the caller's API keys, and the admin's
    providers, each the RPC it names (same scopes, same errors)."""
    account = await register(stack, "http")
    email, password = account.email, account.password
    body = {"email": email, "password": "wrong"}
    status, error, _ = await call(stack, "POST", "/v1/login", None, body)
    assert status == 401, error
    status, session, _ = await call(
        stack, "POST", "/v1/login", None, {"email": email, "password": password}
    )
    assert (status, session["token_type"]) == (200, "Bearer")
    token = session["access_token"]

    body = {"name": "over-http", "scopes": ["execute"]}
    status, made, _ = await call(stack, "POST", "/v1/api-keys", token, body)
    assert status == 200, made
    secret, key_id = made["api_key"], made["info"]["key_id"]
    assert made["info"]["scopes"] == ["execute"]
    status, listed, _ = await call(stack, "GET", "/v1/api-keys", token)
    assert status == 200
    assert [k["key_id"] for k in listed["keys"]] == [key_id]
    assert "api_key" not in listed["keys"][0]
    assert secret not in json.dumps(listed)
    status, revoked, _ = await call(stack, "DELETE", f"/v1/api-keys/{key_id}", token)
    assert (status, bool(revoked["info"]["revoked_at"])) == (200, True)
    status, error, _ = await call(stack, "GET", "/v1/patterns", secret)
    assert (status, error["error"]["reason"]) == (401, "CREDENTIAL_REVOKED")

    # Operator routes: scope admin, as over gRPC.
    status, error, _ = await call(stack, "GET", "/v1/admin/providers", token)
    assert (status, error["error"]["reason"]) == (403, "SCOPE_MISSING")
    status, providers, _ = await call(stack, "GET", "/v1/admin/providers", stack.admin_key())
    assert status == 200
    assert providers["providers"]
    names = [p["name"] for p in providers["providers"]]
    status, checked, _ = await call(
        stack, "POST", "/v1/admin/providers/check", stack.admin_key(), {"providers": names[:1]}
    )
    assert status == 200
    assert [r["provider"] for r in checked["results"]] == names[:1]
    status, live, _ = await call(stack, "GET", "/v1/admin/providers/metrics", stack.admin_key())
    assert status == 200
    assert sorted(m["provider"] for m in live["metrics"]) == sorted(names)
    body = {"strategy": "STRATEGY_CHEAPEST"}
    status, ranking, _ = await call(
        stack, "POST", "/v1/admin/providers/rank", stack.admin_key(), body
    )
    assert (status, ranking["strategy"]) == (200, "STRATEGY_CHEAPEST")
    assert sorted(r["provider"] for r in ranking["ranked"]) == sorted(names)
    status, error, _ = await call(stack, "POST", "/v1/admin/providers/rank", token, body)
    assert (status, error["error"]["reason"]) == (403, "SCOPE_MISSING")
    status, vault, _ = await call(stack, "GET", "/v1/admin/vault", stack.admin_key())
    assert (status, vault["status"]["state"]) == (200, "VAULT_STATE_SERVING")

    status, document, _ = await call(stack, "GET", "/openapi.json", None)
    assert document["paths"]["/v1/login"]["post"]["security"] == []
    assert "security" not in document["paths"]["/v1/api-keys"]["get"]


async def test_an_admin_lists_every_user_and_any_users_keys_and_revokes_one(stack: Stack) -> None:
    """Keys and users for an operator (AdminService over HTTP): every user a page at a time,
    another user's keys without their secrets, and that user's key revoked — refused at the
    door once the gateway's credential cache lets go of it; a user without scope admin sees
    none of it."""
    account = await register(stack, "listed")
    body = {"name": "theirs", "scopes": ["execute"]}
    status, made, _ = await call(stack, "POST", "/v1/api-keys", account.token, body)
    assert status == 200, made
    secret, key_id = made["api_key"], made["info"]["key_id"]
    assert (await call(stack, "GET", "/v1/patterns", secret))[0] == 200

    admin = stack.admin_key()
    users: list[dict[str, Any]] = []
    path, pages = "/v1/admin/users?page_size=1", 0
    while True:
        status, page, _ = await call(stack, "GET", path, admin)
        assert status == 200, page
        assert len(page["users"]) <= 1
        users += page["users"]
        pages += 1
        if not page.get("next_page_token"):
            break
        path = f"/v1/admin/users?page_size=1&page_token={page['next_page_token']}"
    ids = [u["user_id"] for u in users]
    assert len(ids) == len(set(ids)) == pages
    listed = next(u for u in users if u["user_id"] == account.user_id)
    assert (listed["email"], listed["live_api_keys"]) == (account.email, 1)
    assert "password" not in json.dumps(users)
    assert "hash" not in json.dumps(users)
    assert [u["created_at"] for u in users] == sorted(u["created_at"] for u in users)

    keys_path = f"/v1/admin/users/{account.user_id}/api-keys"
    status, keys, _ = await call(stack, "GET", keys_path, admin)
    assert (status, [k["key_id"] for k in keys["keys"]]) == (200, [key_id])
    assert secret not in json.dumps(keys)
    limits = {"requests_per_minute": 7, "concurrent_executions": 2}
    limits_path = f"/v1/admin/api-keys/{key_id}/limits"
    status, set_, _ = await call(stack, "POST", limits_path, admin, limits)
    assert status == 200, set_
    assert set_["info"]["limits"] == limits
    status, keys, _ = await call(stack, "GET", keys_path, admin)
    assert keys["keys"][0]["limits"] == limits
    # The path names the key; the body may not name one too.
    body = {**limits, "key_id": key_id}
    status, error, _ = await call(stack, "POST", limits_path, admin, body)
    assert (status, violations(error)) == (400, ["key_id"])
    status, error, _ = await call(stack, "POST", limits_path, account.token, limits)
    assert (status, error["error"]["reason"]) == (403, "SCOPE_MISSING")
    status, revoked, _ = await call(stack, "DELETE", f"{keys_path}/{key_id}", admin)
    assert (status, bool(revoked["info"]["revoked_at"])) == (200, True)
    await asyncio.sleep(1.2)  # the test stack caches verified credentials for 1 s
    status, error, _ = await call(stack, "GET", "/v1/patterns", secret)
    assert (status, error["error"]["reason"]) == (401, "CREDENTIAL_REVOKED")
    # The key's owner is named: another user's id does not reach it.
    status, error, _ = await call(
        stack, "DELETE", f"/v1/admin/users/usr_someone_else/api-keys/{key_id}", admin
    )
    assert (status, error["error"]["reason"]) == (404, "API_KEY_NOT_FOUND")

    for method, route in (
        ("GET", "/v1/admin/users"),
        ("GET", keys_path),
        ("DELETE", f"{keys_path}/{key_id}"),
    ):
        status, error, _ = await call(stack, method, route, account.token)
        assert (status, error["error"]["reason"]) == (403, "SCOPE_MISSING"), route
    status, error, _ = await call(stack, "GET", "/v1/admin/users?page_size=501", admin)
    assert (status, error["error"]["reason"]) == (400, "PAGE_SIZE_INVALID")
    status, error, _ = await call(stack, "GET", "/v1/admin/users?page_token=bogus", admin)
    assert (status, error["error"]["reason"]) == (400, "PAGE_TOKEN_INVALID")
