"""The gateway's public gRPC port and its HTTP port serve TLS when a certificate and key are
configured: a client verifying the chain against the issuing CA gets through (gRPC, HTTPS
and the `saga` CLI), a plaintext client or one trusting another CA does not."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from saga.gateway.v1 import patterns_pb2, patterns_pb2_grpc
from services.common.pki import ensure_dev_pki, service_cert_paths
from tests.e2e.test_cli import run_cli
from tests.e2e.test_execute import bearer
from tests.harness import Stack, stack_for


@pytest.fixture(scope="module")
async def tls_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    data_dir: Path = tmp_path_factory.mktemp("public-tls")
    ensure_dev_pki(data_dir / "public", ["gateway-public"], ca_name="Test public CA")
    paths = service_cert_paths(data_dir / "public", "gateway-public")
    async with stack_for(
        data_dir,
        SAGA_GATEWAY__PUBLIC_CERT_FILE=str(paths.cert),
        SAGA_GATEWAY__PUBLIC_KEY_FILE=str(paths.key),
    ) as s:
        yield s


def public_ca(stack: Stack) -> Path:
    return service_cert_paths(stack.data_dir / "public", "gateway-public").ca


def other_ca(stack: Stack) -> Path:
    ensure_dev_pki(stack.data_dir / "other", ["someone"], ca_name="Another CA")
    return service_cert_paths(stack.data_dir / "other", "someone").ca


async def list_patterns(stack: Stack, channel: grpc.aio.Channel) -> list[str]:
    reply = await patterns_pb2_grpc.PatternServiceStub(channel).ListPatterns(
        patterns_pb2.ListPatternsRequest(), metadata=bearer(stack.admin_key()), timeout=10
    )
    return [p.pattern_id for p in reply.patterns]


async def test_grpc_over_tls_verifies_the_chain(tls_stack: Stack) -> None:
    target = f"localhost:{tls_stack.ports['gateway'].port}"
    trusted = grpc.ssl_channel_credentials(root_certificates=public_ca(tls_stack).read_bytes())
    async with grpc.aio.secure_channel(target, trusted) as channel:
        assert "chat" in await list_patterns(tls_stack, channel)

    untrusted = grpc.ssl_channel_credentials(root_certificates=other_ca(tls_stack).read_bytes())
    async with grpc.aio.secure_channel(target, untrusted) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await list_patterns(tls_stack, channel)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

    async with grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as plaintext:
            await list_patterns(tls_stack, channel)
    assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_https_verifies_the_chain(tls_stack: Stack) -> None:
    base = f"https://localhost:{tls_stack.ports['gateway'].http_port}"
    trusted = ssl.create_default_context(cafile=str(public_ca(tls_stack)))
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/healthz", ssl=trusted) as live:
            assert live.status == 200
        untrusted = ssl.create_default_context(cafile=str(other_ca(tls_stack)))
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await http.get(base + "/healthz", ssl=untrusted)
        with pytest.raises(aiohttp.ClientError):
            await http.get(f"http://localhost:{tls_stack.ports['gateway'].http_port}/healthz")


async def test_the_cli_dials_tls_with_a_ca_file(tls_stack: Stack) -> None:
    common = ("--gateway", f"localhost:{tls_stack.ports['gateway'].port}")
    common += ("--key", tls_stack.admin_key())
    ca = str(public_ca(tls_stack))
    flag = await asyncio.to_thread(run_cli, *common, "--ca-file", ca, "patterns", "list")
    assert flag.returncode == 0, flag.stderr
    assert "chat" in flag.stdout
    env = {"SAGA_GATEWAY_CA_FILE": ca}
    variable = await asyncio.to_thread(run_cli, *common, "patterns", "list", env=env)
    assert variable.returncode == 0, variable.stderr
    plaintext = await asyncio.to_thread(run_cli, *common, "patterns", "list")
    assert plaintext.returncode != 0
    assert "Traceback" not in plaintext.stderr
