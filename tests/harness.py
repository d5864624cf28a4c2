"""Start Saga services as real processes on ephemeral loopback ports, for the tests.

A `Stack` owns a temporary data directory and one set of free ports per service, exported
as `SAGA_…` overrides, so a running `make run` on the default ports is never disturbed.
Each process logs to its own file, which a failing test prints. `stack_for` is how a test
gets one: the services it needs, with its configuration, stopped when it is done.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.identity import SERVICES
from services.common.pki import ensure_dev_pki, service_cert_paths

ROOT = Path(__file__).resolve().parent.parent

SERVICE_NAMES: dict[str, tuple[str, ...]] = {
    "gateway": tuple(
        f"saga.gateway.v1.{s}"
        for s in (
            "ExecutionService",
            "PackHealthService",
            "SessionService",
            "UsageService",
            "AccountService",
            "AdminService",
        )
    ),
    "auth": ("saga.auth.v1.AuthService",),
    "vault": ("saga.vault.v1.VaultService",),
    "router": ("saga.router.v1.RouterService",),
    "optimizer": ("saga.optimizer.v1.OptimizerService",),
    "runtime": (
        "saga.runtime.v1.RuntimeService",
        "saga.runtime.v1.PackService",
        "saga.runtime.v1.SessionService",
        "saga.runtime.v1.LedgerService",
    ),
}
"""Fully qualified gRPC services each process must serve (SPEC section 3)."""


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


_LISTEN_RANGE = (10000, _ephemeral_range()[0] - 1)
"""Where test listeners are picked: below the ephemeral range, so the source port of some
outgoing connection cannot take a port between its pick and the service's bind (bind(0)
picks from the ephemeral range, and lost that race under load: "port already in use")."""


def free_ports(count: int) -> list[int]:
    """`count` distinct ports below the ephemeral range that are free right now."""
    sockets: list[socket.socket] = []
    try:
        while len(sockets) < count:
            s = socket.socket()
            try:
                low, high = _LISTEN_RANGE
                s.bind(("127.0.0.1", low + secrets.randbelow(high - low + 1)))
            except OSError:
                s.close()
                continue
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class Ports:
    """The listeners of one service."""

    port: int
    probe_port: int
    metrics_port: int
    http_port: int = 0


@dataclass
class Stack:
    """Configuration and processes of one test deployment."""

    data_dir: Path
    ports: dict[str, Ports] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    replicas: dict[str, str] = field(default_factory=dict)
    """Extra replicas: process name (e.g. "runtime-2") -> the service it runs."""
    process_env: dict[str, dict[str, str]] = field(default_factory=dict)
    """Environment of one process only (by process name), over everything else, from its
    next start (e.g. {"router-2": {…}}: a replica that dials one peer only)."""

    @classmethod
    def create(cls, data_dir: Path, config: str = "", **extra_env: str) -> Stack:
        """A stack with fresh ports for every service; `config` is written as its saga.toml
        (e.g. `[[providers]]` tables, which have no environment overrides). Nothing is
        started: tests take `stack_for`, unless what runs is not the harness's to start
        (the supervisor's children, servers inside the test process)."""
        numbers = free_ports(4 * len(SERVICES))
        if config:
            (data_dir / "saga.toml").write_text(config)
            extra_env = {"SAGA_CONFIG": str(data_dir / "saga.toml"), **extra_env}
        stack = cls(data_dir=data_dir, extra_env=dict(extra_env))
        for i, service in enumerate(SERVICES):
            p, probe, metrics, http = numbers[4 * i : 4 * i + 4]
            stack.ports[service] = Ports(p, probe, metrics, http if service == "gateway" else 0)
        ensure_dev_pki(data_dir / "pki", list(SERVICES))
        return stack

    def add_replica(self, service: str) -> str:
        """Another replica of `service` (same data directory and storage, ports of its own),
        which `start_all` starts too; its peers dial every replica (round robin). Before
        anything starts. Its process name, e.g. "runtime-2"."""
        name = f"{service}-{sum(1 for s in self.replicas.values() if s == service) + 2}"
        # Free now, and none of those handed out before (their sockets are closed, so the
        # OS may offer one of them again).
        taken = {n for p in self.ports.values() for n in vars(p).values()}
        numbers = free_ports(4)
        while taken & set(numbers):
            numbers = free_ports(4)
        port, probe, metrics, http = numbers
        self.ports[name] = Ports(port, probe, metrics, http if service == "gateway" else 0)
        self.replicas[name] = service
        addresses = [self.ports[service].port] + [
            self.ports[n].port for n, s in self.replicas.items() if s == service
        ]
        self.extra_env[f"SAGA_SERVICES__{service.upper()}__TARGET"] = "ipv4:" + ",".join(
            f"127.0.0.1:{a}" for a in addresses
        )
        return name

    def replica_id(self, name: str) -> str:
        """The runtime's id for the replica `name` (host name and port, as it records runs)."""
        return f"{socket.gethostname()}:{self.ports[name].port}"

    def env(self, name: str = "") -> dict[str, str]:
        """The environment every process of this stack runs with (`name`: of an extra
        replica, which listens on its own ports)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        env["SAGA_DATA_DIR"] = str(self.data_dir)
        env["SAGA_SERVER__GRACE_SECONDS"] = "3"
        env["PYTHONUNBUFFERED"] = "1"
        # Tests run many executions per user: limits are lifted unless a test (the limit
        # tests, the README's) asks for the standard profile in its extra environment.
        env["SAGA_GATEWAY__LIMITS__PROFILE"] = "benchmark"
        for service, p in self.ports.items():
            if service in self.replicas:
                continue  # an extra replica's ports are its own process's only
            prefix = f"SAGA_SERVICES__{service.upper()}__"
            env[prefix + "PORT"] = str(p.port)
            env[prefix + "PROBE_PORT"] = str(p.probe_port)
            env[prefix + "METRICS_PORT"] = str(p.metrics_port)
            env[prefix + "HTTP_PORT"] = str(p.http_port)
        env.update(self.extra_env)
        if name in self.replicas:
            prefix = f"SAGA_SERVICES__{self.replicas[name].upper()}__"
            ports = self.ports[name]
            env[prefix + "PORT"] = str(ports.port)
            env[prefix + "PROBE_PORT"] = str(ports.probe_port)
            env[prefix + "METRICS_PORT"] = str(ports.metrics_port)
            env[prefix + "HTTP_PORT"] = str(ports.http_port)
        env.update(self.process_env.get(name, {}))
        return env

    def log_path(self, service: str) -> Path:
        """Where the process of `service` writes its stderr."""
        return self.data_dir / "logs" / f"{service}.log"

    def spawn(self, name: str, module: str) -> subprocess.Popen[bytes]:
        """Run `python -m module` with this stack's environment, output to `log_path(name)`."""
        self.log_path(name).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(name), "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", module],
                cwd=ROOT,
                env=self.env(name),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes[name] = process
        return process

    def start(self, service: str) -> subprocess.Popen[bytes]:
        """Start one service process, or extra replica (not waiting for it)."""
        return self.spawn(service, f"services.{self.replicas.get(service, service)}")

    async def start_all(self, services: Iterable[str] = SERVICES) -> None:
        """Start services (and their extra replicas) and wait until each reports SERVING on
        its probe port."""
        started = [s for s in services]
        started += [name for name, s in self.replicas.items() if s in started]
        for service in started:
            self.start(service)
        await asyncio.gather(*(self.wait_serving(s) for s in started))

    async def wait_serving(self, service: str, within: float = 30.0) -> None:
        """Wait for SERVING on the probe port; fail with the process log if it dies."""
        deadline = time.monotonic() + within
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.ports[service].probe_port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                process = self.processes[service]
                if process.poll() is not None:
                    raise AssertionError(
                        f"{service} exited with {process.returncode}:\n{self.read_log(service)}"
                    )
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"{service} not SERVING in {within} s:\n{self.read_log(service)}")

    def read_log(self, service: str) -> str:
        """The captured output of `service` so far."""
        path = self.log_path(service)
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, service: str, timeout: float = 15.0) -> int:
        """SIGTERM one service and wait for its exit code."""
        process = self.processes[service]
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def stop_all(self) -> None:
        """Stop every process this stack started: all signalled first, so their drains
        overlap."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for service in list(self.processes):
            self.stop(service)

    def target(self, service: str) -> str:
        """The service port of `service` on loopback."""
        return f"127.0.0.1:{self.ports[service].port}"

    def admin_key(self) -> str:
        """The admin API key auth wrote on first start."""
        return (self.data_dir / "admin.key").read_text().strip()

    def gateway_channel(self, name: str = "gateway") -> grpc.aio.Channel:
        """A plaintext channel to a gateway's public port (`name`: an extra replica's), as
        an outside client uses."""
        return grpc.aio.insecure_channel(self.target(name))

    def channel_as(self, caller: str, service: str) -> grpc.aio.Channel:
        """An mTLS channel to `service` (or one extra replica of it, e.g. "router-2")
        presenting `caller`'s certificate."""
        chain, key, ca = service_cert_paths(self.data_dir / "pki", caller).read()
        credentials = grpc.ssl_channel_credentials(ca, key, chain)
        return grpc.aio.secure_channel(
            self.target(service),
            credentials,
            options=[("grpc.ssl_target_name_override", self.replicas.get(service, service))],
        )


@asynccontextmanager
async def stack_for(
    data_dir: Path,
    services: Iterable[str] = SERVICES,
    *,
    config: str = "",
    replicas: Mapping[str, int] | None = None,
    **env: str,
) -> AsyncIterator[Stack]:
    """A stack under `data_dir` with `services` started and SERVING (all six by default;
    `[]` for a test that starts them itself), `config` as its saga.toml, `replicas` the
    number of processes of a service that runs several (e.g. {"runtime": 2}: they share its
    storage), and `env` as extra environment (`SAGA_…` overrides); every process it started
    is stopped on exit — off the event loop, so fakes this process serves keep answering
    while services shut down."""
    stack = Stack.create(data_dir, config, **env)
    for service, count in (replicas or {}).items():
        for _ in range(count - 1):
            stack.add_replica(service)
    try:
        await stack.start_all(services)
        yield stack
    finally:
        await asyncio.to_thread(stack.stop_all)


async def metric(stack: Stack, service: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample of `service` (`name{labels}`, labels in the order
    the metric declares them), 0 when it has none yet."""
    url = f"http://127.0.0.1:{stack.ports[service].metrics_port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{inner}}} " if labels else f"{name} "
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(lines[0][len(prefix) :]) if lines else 0.0
