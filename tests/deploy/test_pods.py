"""The production overlay's six Deployments, run as pods (tests/deploy/pods.py says how near a
node this comes): each starts with exactly its manifest's command, environment and ports,
passes its probes as the kubelet runs them, reaches its peers by their cluster names over the
mounted certificates, and idles within its memory request."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from services.common.identity import SERVICES
from tests.conftest import PG_URL
from tests.deploy import pods
from tests.deploy.manifests import of_kind, render

PROBES = ("startupProbe", "livenessProbe", "readinessProbe")
REDIS = ("127.0.0.1", 6379)
MIB = 1024


def memory_kib(quantity: str) -> int:
    """A Kubernetes memory quantity (`128Mi`, `1Gi`) in KiB."""
    units = {"Ki": 1, "Mi": MIB, "Gi": MIB * MIB}
    return int(quantity[:-2]) * units[quantity[-2:]]


@pytest.fixture(scope="module")
async def node() -> AsyncIterator[pods.Node]:
    """The six pods, started together (as a rollout does) and past their startup probes."""
    objects = render("overlays/production")
    deployments = {n: d for n, d in of_kind(objects, "Deployment").items() if n in SERVICES}
    assert set(deployments) == set(SERVICES)
    database = f"k8s_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(PG_URL)
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        async with pods.node(deployments) as the_node:
            pg = urlsplit(PG_URL)
            await pods.bridge(the_node, 5432, (pg.hostname or "127.0.0.1", pg.port or 5432))
            await pods.bridge(the_node, 6379, REDIS)
            values = {
                (
                    "saga-storage",
                    "postgres-url",
                ): f"postgresql://{pg.username}@127.0.0.1:5432/{database}",
                ("saga-storage", "redis-url"): "redis://127.0.0.1:6379/0",
            }
            material = pods.secret_material(the_node.root)
            maps = of_kind(objects, "ConfigMap")  # by name, hash suffix and all
            pods.check_reachable(deployments["gateway"])
            for deployment in deployments.values():
                pods.start_pod(the_node, deployment, maps, material, values)
            yield the_node
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


def _logs(node: pods.Node) -> str:
    return "\n".join(f"--- {s}\n{p.read_log()[-3000:]}" for s, p in node.pods.items())


async def _probe(node: pods.Node, kind: str) -> dict[str, dict[str, Any]]:
    items = [
        {"id": service, "probe": pod.spec[kind], "wait": True} for service, pod in node.pods.items()
    ]
    return await pods.kubelet(node, items)


async def test_each_pod_passes_its_probes_as_the_kubelet_runs_them(node: pods.Node) -> None:
    for kind in PROBES:  # startup first: the kubelet runs the others only after it
        results = await _probe(node, kind)
        failed = {s: r["detail"] for s, r in results.items() if not r["ok"]}
        assert failed == {}, f"{kind}: {failed}\n{_logs(node)}"
    for service, pod in node.pods.items():
        assert pod.process.poll() is None, service
        # As the pod's securityContext says (runAsUser, runAsGroup, fsGroup), never root.
        assert pods.status(pod.process.pid, "Uid") == ["10001"] * 4, service
        assert pods.status(pod.process.pid, "Groups") == ["10001"], service


async def test_the_probe_runner_fails_what_is_not_served(node: pods.Node) -> None:
    await _probe(node, "startupProbe")
    gateway = node.pods["gateway"].spec
    probe_port = gateway["startupProbe"]["grpc"]["port"]
    metrics = next(p["containerPort"] for p in gateway["ports"] if p["name"] == "metrics")
    items = [
        {"id": "unknown name", "probe": {"grpc": {"port": probe_port, "service": "saga.x.v1.X"}}},
        {"id": "nothing listens", "probe": {"grpc": {"port": 1, "service": ""}}},
        {"id": "metrics is no probe", "probe": {"httpGet": {"port": metrics, "path": "/readyz"}}},
        {"id": "control", "probe": {"grpc": {"port": probe_port, "service": ""}}},
    ]
    results = await pods.kubelet(node, items)
    assert {i: r["ok"] for i, r in results.items()} == {
        "unknown name": False,
        "nothing listens": False,
        "metrics is no probe": False,
        "control": True,
    }, results


async def test_the_gateway_answers_through_its_peers_cluster_names(node: pods.Node) -> None:
    """GET /v1/patterns/chat: the gateway verifies the key with auth and asks the runtime for
    a pattern, both dialled at dns:///<id>.saga.svc.cluster.local with the mounted certs."""
    results = await _probe(node, "readinessProbe")
    assert all(r["ok"] for r in results.values()), results
    admin_key = (node.pods["auth"].volumes["data"] / "admin.key").read_text().strip()
    http = next(
        p["containerPort"] for p in node.pods["gateway"].spec["ports"] if p["name"] == "http"
    )
    url = f"http://127.0.0.1:{http}/v1/patterns/chat"
    answers = await pods.kubelet(
        node,
        [
            {"id": "with key", "get": url, "headers": {"authorization": f"Bearer {admin_key}"}},
            {"id": "without", "get": url},
        ],
    )
    assert answers["with key"]["ok"], f"{answers}\n{_logs(node)}"
    assert '"pattern_id": "chat"' in answers["with key"]["detail"]
    assert answers["without"]["detail"].startswith("401"), answers["without"]


async def test_idle_memory_is_within_each_request(node: pods.Node) -> None:
    results = await _probe(node, "readinessProbe")
    assert all(r["ok"] for r in results.values()), results
    measured = {s: int(pods.status(p.process.pid, "VmRSS")[0]) for s, p in node.pods.items()}
    requested = {
        s: memory_kib(p.spec["resources"]["requests"]["memory"]) for s, p in node.pods.items()
    }
    print(
        {
            s: f"{kib / MIB:.0f} MiB idle / {requested[s] / MIB:.0f} MiB"
            for s, kib in measured.items()
        }
    )
    assert all(measured[s] > 16 * MIB for s in measured), measured  # read the real processes
    over = {s: measured[s] // MIB for s in measured if measured[s] > requested[s]}
    assert over == {}, f"idle RSS (MiB) above the request: raise it in deploy/k8s/base: {over}"


async def test_pods_stop_cleanly_when_the_kubelet_terminates_them(node: pods.Node) -> None:
    """Last in this module: SIGTERM, as a rollout or a drain sends it; each exits 0 within
    its terminationGracePeriodSeconds (nothing in flight, so no drain to wait out)."""
    results = await _probe(node, "readinessProbe")
    assert all(r["ok"] for r in results.values()), results
    codes = await asyncio.to_thread(pods.stop_pods, node)
    assert codes == dict.fromkeys(SERVICES, 0), _logs(node)
