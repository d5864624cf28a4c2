"""mTLS between services and the per-RPC call matrix, each refusal beside its positive control."""

from __future__ import annotations

import importlib
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor

from services.common.identity import CALL_MATRIX, SERVICES
from services.common.pki import ensure_dev_pki, service_cert_paths
from services.common.status import describe
from tests.harness import ROOT, SERVICE_NAMES, Stack, stack_for

OWNER = {name: service for service, names in SERVICE_NAMES.items() for name in names}

# Load every compiled contract into the default descriptor pool.
for _file in sorted((ROOT / "gen" / "python" / "saga").rglob("*_pb2.py")):
    importlib.import_module(
        ".".join(_file.relative_to(ROOT / "gen" / "python").with_suffix("").parts)
    )


def method_descriptor(path: str) -> MethodDescriptor:
    service, method = path.strip("/").split("/")
    found = descriptor_pool.Default().FindServiceByName(service).methods_by_name[method]
    assert isinstance(found, MethodDescriptor)
    return found


async def invoke(channel: grpc.aio.Channel, path: str) -> grpc.aio.AioRpcError | None:
    """Call `path` with an empty request; return the error it ends with (None if none)."""
    md = method_descriptor(path)
    kwargs = {"request_serializer": bytes, "response_deserializer": bytes}
    try:
        if md.client_streaming and md.server_streaming:
            await channel.stream_stream(path, **kwargs)(iter([b""]), timeout=5).read()
        elif md.client_streaming:
            await channel.stream_unary(path, **kwargs)(iter([b""]), timeout=5)
        elif md.server_streaming:
            await channel.unary_stream(path, **kwargs)(b"", timeout=5).read()
        else:
            await channel.unary_unary(path, **kwargs)(b"", timeout=5)
    except grpc.aio.AioRpcError as error:
        return error
    return None


def passed_authorization(error: grpc.aio.AioRpcError | None) -> bool:
    """The call got past the call matrix (whatever the service then answered)."""
    return error is None or describe(error).reason != "CALLER_NOT_ALLOWED"


def refused(error: grpc.aio.AioRpcError | None) -> bool:
    """The call matrix refused the call."""
    return (
        error is not None
        and error.code() == grpc.StatusCode.PERMISSION_DENIED
        and describe(error).reason == "CALLER_NOT_ALLOWED"
    )


def inner_methods() -> list[str]:
    """Every RPC of every internal service, from the compiled contracts."""
    paths = []
    for service, names in SERVICE_NAMES.items():
        if service == "gateway":
            continue
        for name in names:
            sd = descriptor_pool.Default().FindServiceByName(name)
            paths += [f"/{name}/{m.name}" for m in sd.methods]
    return sorted(paths)


def test_every_internal_rpc_has_a_caller_in_the_matrix() -> None:
    missing = [p for p in inner_methods() if p not in CALL_MATRIX]
    assert missing == []


# Spot checks written from SPEC section 2's table, independent of the code's matrix.
SPEC_CASES = [
    ("runtime", "/saga.router.v1.RouterService/Reason", True),
    ("gateway", "/saga.router.v1.RouterService/Reason", False),
    ("router", "/saga.auth.v1.AuthService/GetProviderCredential", True),
    ("gateway", "/saga.auth.v1.AuthService/GetProviderCredential", False),
    ("auth", "/saga.vault.v1.VaultService/GetSecret", True),
    ("gateway", "/saga.vault.v1.VaultService/GetSecret", False),
    ("gateway", "/saga.vault.v1.VaultService/GetStatus", True),
    ("router", "/saga.optimizer.v1.OptimizerService/RecordOutcomes", True),
    ("runtime", "/saga.optimizer.v1.OptimizerService/RecordOutcomes", False),
    ("gateway", "/saga.runtime.v1.RuntimeService/RunPattern", True),
    ("router", "/saga.runtime.v1.RuntimeService/RunPattern", False),
    ("gateway", "/saga.auth.v1.AuthService/Authenticate", True),
    ("optimizer", "/saga.auth.v1.AuthService/Authenticate", False),
]


@pytest.mark.parametrize(("caller", "path", "allowed"), SPEC_CASES)
async def test_spec_call_matrix(stack: Stack, caller: str, path: str, allowed: bool) -> None:
    owner = OWNER[path.split("/")[1]]
    async with stack.channel_as(caller, owner) as ch:
        error = await invoke(ch, path)
    if allowed:
        assert passed_authorization(error), describe(error) if error else None
    else:
        assert refused(error)
        assert error is not None
        details = describe(error)
        assert details.domain == f"{owner}.saga"
        assert details.metadata == {"caller": caller, "method": path}


async def test_every_server_enforces_the_whole_matrix(stack: Stack) -> None:
    """Each RPC: an allowed caller passes authorization, every other service is refused."""
    channels = {
        (caller, owner): stack.channel_as(caller, owner)
        for caller in SERVICES
        for owner in SERVICES
        if owner != "gateway"
    }
    try:
        for path in inner_methods():
            owner = OWNER[path.split("/")[1]]
            for caller in SERVICES:
                error = await invoke(channels[(caller, owner)], path)
                if caller in CALL_MATRIX[path]:
                    assert passed_authorization(error), (caller, path)
                else:
                    assert refused(error), (caller, path)
    finally:
        for ch in channels.values():
            await ch.close()


async def test_peer_without_certificate_fails_the_handshake(stack: Stack) -> None:
    ca = (stack.data_dir / "pki" / "ca.pem").read_bytes()
    credentials = grpc.ssl_channel_credentials(root_certificates=ca)
    options = [("grpc.ssl_target_name_override", "router")]
    async with grpc.aio.secure_channel(stack.target("router"), credentials, options) as ch:
        error = await invoke(ch, "/saga.router.v1.RouterService/ListProviders")
    assert error is not None
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    # Positive control: the same call with the gateway's certificate reaches the service.
    async with stack.channel_as("gateway", "router") as ch:
        error = await invoke(ch, "/saga.router.v1.RouterService/ListProviders")
    assert passed_authorization(error)


async def test_certificate_from_another_ca_fails_the_handshake(
    stack: Stack, tmp_path: Path
) -> None:
    ensure_dev_pki(tmp_path, ["gateway"], ca_name="Impostor CA")
    chain, key, _ = service_cert_paths(tmp_path, "gateway").read()
    ca = (stack.data_dir / "pki" / "ca.pem").read_bytes()
    credentials = grpc.ssl_channel_credentials(ca, key, chain)
    options = [("grpc.ssl_target_name_override", "router")]
    async with grpc.aio.secure_channel(stack.target("router"), credentials, options) as ch:
        error = await invoke(ch, "/saga.router.v1.RouterService/ListProviders")
    assert error is not None
    assert error.code() == grpc.StatusCode.UNAVAILABLE


async def test_plaintext_peer_is_refused(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.target("auth")) as ch:
        error = await invoke(ch, "/saga.auth.v1.AuthService/Authenticate")
    assert error is not None
    assert error.code() == grpc.StatusCode.UNAVAILABLE


async def test_plaintext_mode_identifies_callers_by_the_mesh_header(tmp_path: Path) -> None:
    """tls.mode plaintext (inside a mesh): the sidecar's x-forwarded-client-cert names the
    caller; without it nobody is allowed."""
    path = "/saga.router.v1.RouterService/Reason"
    xfcc = "By=spiffe://cluster.local/ns/saga/sa/router;URI=spiffe://cluster.local/ns/saga/sa/{}"
    async with (
        stack_for(tmp_path, ["router"], SAGA_TLS__MODE="plaintext") as mesh,
        grpc.aio.insecure_channel(mesh.target("router")) as ch,
    ):
        call = ch.unary_stream(path, request_serializer=bytes, response_deserializer=bytes)

        async def as_peer(peer: str | None) -> grpc.aio.AioRpcError | None:
            metadata = () if peer is None else (("x-forwarded-client-cert", xfcc.format(peer)),)
            try:
                await call(b"", timeout=5, metadata=metadata).read()
            except grpc.aio.AioRpcError as error:
                return error
            return None

        assert passed_authorization(await as_peer("runtime"))
        assert refused(await as_peer("gateway"))
        assert refused(await as_peer(None))
