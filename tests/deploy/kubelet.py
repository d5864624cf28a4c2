"""Probe pods the way the kubelet does, from inside their network namespace.

Run as `python -m tests.deploy.kubelet` under `nsenter --net=…` with a JSON list on stdin of
`{"id", "probe": <a container probe as the manifest gives it>, "wait": bool}` or
`{"id", "get": url, "headers": {...}}`; prints `{id: {"ok": bool, "detail": str}}`.

A `grpc` probe is a grpc.health.v1 Check of its `service` on 127.0.0.1:`port` (the pod's
address here), passing only when SERVING; an `httpGet` probe passes on a status from 200 to
399. A waited probe is retried within the kubelet's own budget for it (`periodSeconds` *
`failureThreshold`, 10 * 3 by default) — faster than the kubelet retries, never longer; an
unwaited one gets `failureThreshold` tries in a row, as a running pod's liveness would.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

RETRY_SECONDS = 0.1


async def attempt(probe: dict[str, Any]) -> tuple[bool, str]:
    """One probe, as one kubelet period would make it."""
    timeout = float(probe.get("timeoutSeconds", 1))
    if "grpc" in probe:
        port, service = probe["grpc"]["port"], probe["grpc"].get("service", "")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=timeout
                )
            except grpc.aio.AioRpcError as error:
                return False, f"{error.code().name}: {error.details()}"
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return reply.status == health_pb2.HealthCheckResponse.SERVING, status
    if "httpGet" in probe:
        get = probe["httpGet"]
        url = f"http://127.0.0.1:{get['port']}{get.get('path', '/')}"
        return await fetch(url, {}, timeout)
    raise ValueError(f"probe kind not known here: {sorted(probe)}")


async def fetch(url: str, headers: dict[str, str], seconds: float) -> tuple[bool, str]:
    """GET `url`: passes on 200 to 399, with the status and the start of the body."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as http,
            http.get(url, headers=headers) as response,
        ):
            body = await response.text()
            return 200 <= response.status < 400, f"{response.status} {body[:2000]}"
    except (aiohttp.ClientError, TimeoutError) as error:
        return False, f"{type(error).__name__}: {error}"


async def run(item: dict[str, Any]) -> dict[str, Any]:
    """Probe (or fetch) one item until it passes or its budget is spent."""
    if "get" in item:
        ok, detail = await fetch(item["get"], item.get("headers", {}), 10.0)
        return {"ok": ok, "detail": detail}
    probe = item["probe"]
    threshold = int(probe.get("failureThreshold", 3))
    budget = float(probe.get("periodSeconds", 10)) * threshold
    deadline = time.monotonic() + budget
    tries = 0
    while True:
        ok, detail = await attempt(probe)
        tries += 1
        if ok:
            return {"ok": True, "detail": detail}
        spent = time.monotonic() >= deadline if item.get("wait") else tries >= threshold
        if spent:
            return {"ok": False, "detail": detail}
        await asyncio.sleep(RETRY_SECONDS)


async def main() -> None:
    items = json.load(sys.stdin)
    results = await asyncio.gather(*(run(item) for item in items))
    json.dump({item["id"]: r for item, r in zip(items, results, strict=True)}, sys.stdout)


if __name__ == "__main__":
    asyncio.run(main())
