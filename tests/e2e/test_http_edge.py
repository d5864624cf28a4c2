"""The gateway's HTTP door on its HTTP port, with all six services as real processes: the
probes read the same health state as the gRPC probes, and a JSON route answers through the
same servicer as its RPC — its refusals in the one JSON error shape."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.harness import Stack, metric, stack_for


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    data_dir: Path = tmp_path_factory.mktemp("http-edge")
    async with stack_for(data_dir) as s:
        yield s


def url(stack: Stack, path: str) -> str:
    return f"http://127.0.0.1:{stack.ports['gateway'].http_port}{path}"


async def test_probes_answer_from_the_health_state(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(url(stack, "/healthz")) as live:
            assert (live.status, (await live.json())["status"]) == (200, "SERVING")
        async with http.get(url(stack, "/readyz")) as ready:
            body = await ready.json()
        assert ready.status == 200
        assert body["services"]["saga.gateway.v1.ExecutionService"] == "SERVING"
        async with http.get(url(stack, "/metrics")) as metrics:
            text = await metrics.text()
        assert metrics.status == 200
        assert "saga_rpc_server_handled" in text


async def test_a_json_route_is_its_rpc(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(url(stack, "/v1/patterns")) as refused:
            error = (await refused.json())["error"]
        assert refused.status == 401
        assert (error["status"], error["domain"]) == ("UNAUTHENTICATED", "gateway.saga")
        assert error["reason"]
        assert error["details"][0]["@type"].endswith("google.rpc.ErrorInfo")

        auth = {"Authorization": f"Bearer {stack.admin_key()}"}
        async with http.get(url(stack, "/v1/patterns"), headers=auth) as listed:
            body = await listed.json()
        assert listed.status == 200
        assert "chat" in {p["pattern_id"] for p in body["patterns"]}


async def test_metrics_ports_serve_metrics_only(stack: Stack) -> None:
    base = f"http://127.0.0.1:{stack.ports['router'].metrics_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/metrics") as metrics:
            assert metrics.status == 200
            assert "saga_rpc_server_handled" in await metrics.text()
        for path in ("/healthz", "/v1/models", "/"):
            async with http.get(base + path) as other:
                assert other.status == 404, path


async def test_refusals_of_the_door_itself_are_the_json_error_shape(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(url(stack, "/v1/nowhere")) as missing:
            error = (await missing.json())["error"]
        assert (missing.status, error["reason"], error["code"]) == (404, "ROUTE_NOT_FOUND", 404)
        async with http.put(url(stack, "/v1/patterns")) as wrong:
            error = (await wrong.json())["error"]
        assert (wrong.status, error["reason"]) == (405, "METHOD_NOT_ALLOWED")
        assert "GET" in wrong.headers["Allow"]
        big = io.BytesIO(b'{"pattern_id": "' + b"x" * (3 * 1024 * 1024) + b'"}')
        auth = {"Authorization": f"Bearer {stack.admin_key()}"}
        async with http.post(url(stack, "/v1/execute"), data=big, headers=auth) as large:
            error = (await large.json())["error"]
        assert (large.status, error["reason"], error["code"]) == (413, "REQUEST_TOO_LARGE", 413)


async def test_the_door_counts_requests_by_route_and_status(stack: Stack) -> None:
    async def count(route: str, method: str, status: str) -> float:
        return await metric(
            stack,
            "gateway",
            "saga_http_requests_total",
            method=method,
            route=route,
            status=status,
        )

    route = "/v1/executions/{execution_id}"
    before = await count(route, "GET", "404")
    auth = {"Authorization": f"Bearer {stack.admin_key()}"}
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.get(url(stack, "/v1/executions/exe_nope"), headers=auth) as r:
                assert r.status == 404
    assert await count(route, "GET", "404") == before + 2
