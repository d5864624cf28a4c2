"""How every Saga service starts, serves and stops — the only server bootstrap.

`run_service("router", build)` is a service's whole `__main__`: it loads and validates the
configuration (exit 78 with a message that names the key on error), sets up JSON logs,
tracing and metrics, lets `build` register the servicers, and then serves:

* the service port: the servicers, `grpc.health.v1` and reflection, behind the `Guard`
  (mTLS call matrix, UNIMPLEMENTED for what is not built, error mapping, metrics);
* the probe port: a second, plaintext server that exposes nothing but the same health
  servicer, for Kubernetes probes that cannot present a certificate;
* `/metrics` for Prometheus.

Health is SERVING for `""` (liveness) and each built service name (readiness) once started,
unless a readiness hold is set (`services.common.readiness`): `build` sets one with
`host.hold_readiness` (a sealed vault), and `host.open_database` watches PostgreSQL and holds
readiness while it is out of reach (`services.common.storage_watch`). A service none of
whose RPCs is built (`Registration.unbuilt`, or a servicer that overrides none of its base's
RPCs) is still served — each call answers UNIMPLEMENTED NOT_IMPLEMENTED, reflection lists it
— but it is left out of health: Check says NOT_FOUND, so nothing reads it as ready. A `ConfigError`
raised by `build` (a keyring, a pattern file) exits 78 like one in saga.toml. A port that is
taken ends the process with exit 1 and a log line saying which.

Background work and shutdown are one lifecycle (as Starlette's lifespan): `build` starts
its loops with `host.spawn(name, factory)` — supervised tasks, restarted with backoff when
they raise (the rule: `services.common.lifecycle`) — and registers its shutdown work with
`host.on_stop(callback, phase)`. On SIGTERM or SIGINT, in this order:

1. `host.stopping` is set and health turns NOT_SERVING (load balancers stop sending work;
   endless streams that wait on `stopping` end now, not after the grace period); new calls
   are still taken for `server.readiness_lead_seconds`, while peers' channels (which watch
   health) move their new calls to other replicas;
2. in-flight RPCs drain for `server.grace_seconds` (a second signal cuts the drain short);
3. `Phase.FINISH` work: finish queued work while the background tasks still run;
4. every spawned task is cancelled and awaited;
5. `Phase.CLOSE` work (the default): close stores and clients, which no task uses any more;
6. the peer channels close, the probe server stops, spans are flushed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from grpc_health.v1 import health, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # stubs lag
from grpc_reflection.v1alpha import reflection

from services.common.channels import Peers
from services.common.config import EXIT_CONFIG, Config, ConfigError, load_config
from services.common.database import Database, Migration, PostgresDatabase, open_database
from services.common.guard import Guard, identify_for
from services.common.heap import HeapTrimmer
from services.common.identity import DISPLAY_NAMES
from services.common.lifecycle import Lifecycle, Phase, Work
from services.common.logs import setup_logging
from services.common.metrics import register_peer_channels, serve_metrics
from services.common.readiness import Readiness
from services.common.storage_watch import StorageWatch
from services.common.telemetry import setup_tracing, shutdown_tracing
from services.common.tls import public_server_credentials, server_credentials

log = logging.getLogger("saga.server")

EXIT_PORT_IN_USE = 1
QUEUED_CALL_SECONDS = 86_400
"""How long a call may wait in a busy server before its handler starts. grpc's own limit
(30 s) cancels such a call with a bare CANCELLED that no handler sees, no log records and no
caller can tell from a dropped stream (bench/soak.py lost a third of 1,000 streams so); past
grpc's limit, a queued call ends at its deadline instead (DEADLINE_EXCEEDED, which every
call between Saga's services carries)."""


@dataclass(frozen=True)
class Registration:
    """One gRPC service a process serves: how to add it to a server, and its servicer."""

    add: Callable[[Any, grpc.aio.Server], None]
    servicer: object
    descriptor: ServiceDescriptor
    built: bool = True
    """False when none of the service's RPCs is implemented: not reported in health."""

    @property
    def name(self) -> str:
        """The fully qualified service name (health and reflection use it)."""
        return str(self.descriptor.full_name)

    @classmethod
    def of(cls, servicer: object, *, raw_responses: Collection[str] = ()) -> Registration:
        """Register `servicer` under the gRPC service of the generated base class it extends.

        The RPCs named in `raw_responses` send what the servicer yields or returns as is: it
        serializes its responses itself (the runtime relays a token's bytes without decoding
        them). Such a service's handlers are built from the service descriptor and added as
        the generated code does (generic handlers, and registered methods: grpc's fast path);
        any other service is added by its generated `add_…_to_server`."""
        for base in type(servicer).__mro__:
            if base.__module__.endswith("_pb2_grpc") and base.__name__.endswith("Servicer"):
                grpc_module = sys.modules[base.__module__]
                messages = sys.modules[base.__module__.removesuffix("_grpc")]
                service = base.__name__.removesuffix("Servicer")
                descriptor = messages.DESCRIPTOR.services_by_name[service]
                add = getattr(grpc_module, f"add_{base.__name__}_to_server")
                if raw_responses:
                    unknown = set(raw_responses) - {m.name for m in descriptor.methods}
                    if unknown:
                        raise ValueError(f"{descriptor.full_name} has no RPC {sorted(unknown)}")
                    add = functools.partial(_add_generic, descriptor, frozenset(raw_responses))
                # Built = at least one RPC is the servicer's own, not the generated
                # UNIMPLEMENTED stub it inherits.
                built = any(
                    getattr(type(servicer), m.name, None) is not getattr(base, m.name, None)
                    for m in descriptor.methods
                )
                return cls(add=add, servicer=servicer, descriptor=descriptor, built=built)
        raise TypeError(f"{type(servicer).__name__} extends no generated *Servicer class")

    @classmethod
    def unbuilt(cls, servicer_class: type[Any]) -> Registration:
        """Serve a generated base servicer as is: every RPC answers UNIMPLEMENTED, and
        health does not name the service (readiness names only what is built)."""
        return cls.of(servicer_class())


def _method_handler(
    method: MethodDescriptor, behaviour: Callable[..., Any], raw_response: bool
) -> grpc.RpcMethodHandler[Any, Any]:
    request = message_factory.GetMessageClass(method.input_type)
    response = message_factory.GetMessageClass(method.output_type)
    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(method.client_streaming, method.server_streaming)]
    return make(
        behaviour,
        request_deserializer=request.FromString,
        response_serializer=None if raw_response else response.SerializeToString,
    )


def _add_generic(
    descriptor: ServiceDescriptor,
    raw_responses: frozenset[str],
    servicer: object,
    server: grpc.aio.Server,
) -> None:
    """Add `servicer` to `server` as the generated code would, except that the RPCs named in
    `raw_responses` have no response serializer."""
    handlers = {
        m.name: _method_handler(m, getattr(servicer, m.name), m.name in raw_responses)
        for m in descriptor.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(descriptor.full_name, handlers),)
    )
    # Registered methods are matched inside grpc's core, one dict lookup per call instead of
    # the generic handlers' walk (~0.2 ms of the runtime's CPU per stream in bench/chain.py).
    cast(_RegisteredMethods, server).add_registered_method_handlers(descriptor.full_name, handlers)


class _RegisteredMethods(Protocol):
    """`grpc.Server.add_registered_method_handlers`: public and documented since grpcio 1.63
    (every generated `add_…_to_server` calls it), but grpc-stubs 1.53 predates it."""

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        """Register `method_handlers` for `service_name`'s methods (before the start)."""


@dataclass
class ServiceHost:
    """What a service's `build` gets: its config, its peers, its health servicer, and its
    lifecycle (background tasks and shutdown work, see the module docstring)."""

    service: str
    config: Config
    peers: Peers
    health: health_aio.HealthServicer
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    readiness: Readiness = field(init=False)

    def __post_init__(self) -> None:
        self.readiness = Readiness(self.health)

    @property
    def stopping(self) -> asyncio.Event:
        """Set when a graceful shutdown begins, before in-flight RPCs drain."""
        return self.lifecycle.stopping

    def spawn(self, name: str, factory: Work) -> None:
        """Run `factory()` now as a supervised background task (`Lifecycle.spawn`)."""
        self.lifecycle.spawn(name, factory)

    def on_stop(self, callback: Work, phase: Phase = Phase.CLOSE) -> None:
        """Run `callback` at shutdown, after the servers drained, in `phase`."""
        self.lifecycle.on_stop(callback, phase)

    def hold_readiness(self, name: str, reason: str) -> None:
        """Start NOT_SERVING under hold `name` (a dependency the service cannot work without
        is missing, e.g. a sealed vault); liveness stays SERVING. `readiness.release(name)`
        once it is back (`services.common.readiness`)."""
        self.readiness.hold_at_start(name, reason)

    async def open_database(self, migrations: Sequence[Migration], name: str = "") -> Database:
        """This service's database (`services.common.database.open_database`, under the
        service's own name unless `name` says otherwise), watched: while PostgreSQL is out of
        reach readiness is held (`services.common.storage_watch`; SQLite needs no watch)."""
        storage = self.config.storage
        db = await open_database(
            storage.url,
            storage.namespace,
            self.config.data_path,
            name or self.service,
            migrations,
        )
        if isinstance(db, PostgresDatabase):
            watch = StorageWatch(db, self.readiness, storage)
            self.spawn("storage-watch", watch.run)
        return db


Builder = Callable[[ServiceHost], Awaitable[Sequence[Registration]]]


class PortInUse(Exception):
    """A listener could not bind its port."""


def server_options(config: Config) -> list[tuple[str, Any]]:
    """Options shared by every gRPC server."""
    server = config.server
    options: list[tuple[str, Any]] = [
        # Without this, a second process binds the same port silently on Linux.
        ("grpc.so_reuseport", 0),
        ("grpc.max_send_message_length", server.max_message_bytes),
        ("grpc.max_receive_message_length", server.max_message_bytes),
        ("grpc.keepalive_time_ms", int(server.keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(server.keepalive_timeout_seconds * 1000)),
        # What actually bounds the wait for a ping's ack in grpc 1.85 (default 60 s, which
        # the keepalive timeout alone does not shorten).
        ("grpc.http2.ping_timeout_ms", int(server.keepalive_timeout_seconds * 1000)),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.server_max_unrequested_time_in_server", QUEUED_CALL_SECONDS),
    ]
    if server.max_connection_age_seconds > 0:
        age_ms = int(server.max_connection_age_seconds * 1000)
        options += [
            ("grpc.max_connection_age_ms", age_ms),
            ("grpc.max_connection_age_grace_ms", int(server.grace_seconds * 1000)),
        ]
    return options


def _bind(
    server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None
) -> None:
    try:
        if credentials is None:
            server.add_insecure_port(address)
        else:
            server.add_secure_port(address, credentials)
    except RuntimeError as error:
        raise PortInUse(address) from error


@dataclass
class RunningService:
    """A started service: its two servers, its health servicer and its host."""

    host: ServiceHost
    server: grpc.aio.Server
    probe: grpc.aio.Server

    async def stop(self, grace: float, force: asyncio.Event | None = None) -> None:
        """NOT_SERVING, drain in-flight RPCs for `grace` (less if `force` is set), stop."""
        self.host.stopping.set()
        # Readiness first, so load balancers stop sending new work while streams drain.
        await self.host.readiness.enter_graceful_shutdown()
        forced = asyncio.ensure_future((force or asyncio.Event()).wait())
        # Still accepting calls for a moment: a peer's channel learns NOT_SERVING from its
        # health watch and stops picking this replica, so no new call races the refusal
        # (a call refused by a stopping server fails CANCELLED, which no one retries).
        lead = min(self.host.config.server.readiness_lead_seconds, grace)
        await asyncio.wait([forced], timeout=lead)
        drain = asyncio.ensure_future(self.server.stop(max(grace - lead, 0.0)))
        await asyncio.wait([drain, forced], return_when=asyncio.FIRST_COMPLETED)
        if not drain.done():
            await self.server.stop(0)
            await drain
        forced.cancel()
        await self.host.lifecycle.shut_down()
        await self.probe.stop(0)


async def start_service(
    service: str, config: Config, build: Builder, *, public: bool = False
) -> RunningService:
    """Build, bind and start `service`'s servers; raise PortInUse if a port is taken."""
    sc = config.services.get(service)
    host = ServiceHost(
        service=service,
        config=config,
        peers=Peers(config, service),
        health=health_aio.HealthServicer(),
    )
    registrations = list(await build(host))
    # The heap a burst of calls grew goes back to the system once the burst is over.
    host.lifecycle.spawn("heap-trimmer", HeapTrimmer().trim_forever)
    register_peer_channels(host.peers.states)
    host.on_stop(host.peers.close)  # last: what closed before may still have used a peer

    # The public gateway authenticates callers by bearer credential, not by certificate.
    guard = Guard(f"{service}.saga", None if public else identify_for(config.tls.mode))
    server = grpc.aio.server(interceptors=[guard], options=server_options(config))
    names = [r.name for r in registrations]
    for r in registrations:
        r.add(r.servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(host.health, server)
    reflection.enable_server_reflection(
        [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    probe = grpc.aio.server(options=server_options(config))
    health_pb2_grpc.add_HealthServicer_to_server(host.health, probe)

    credentials = (
        public_server_credentials(config) if public else server_credentials(config, service)
    )
    _bind(server, f"{sc.host}:{sc.port}", credentials)
    _bind(probe, f"{sc.host}:{sc.probe_port}", None)
    try:
        serve_metrics(sc.host, sc.metrics_port)
    except OSError as error:
        raise PortInUse(f"{sc.host}:{sc.metrics_port}") from error

    await server.start()
    await probe.start()
    await host.readiness.start(r.name for r in registrations if r.built)
    log.info(
        "serving",
        extra={
            "port": sc.port,
            "probe_port": sc.probe_port,
            "metrics_port": sc.metrics_port,
            "tls": ("public-tls" if credentials else "plaintext") if public else config.tls.mode,
            "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        },
    )
    return RunningService(host=host, server=server, probe=probe)


async def _serve(service: str, config: Config, build: Builder, public: bool) -> int:
    try:
        running = await start_service(service, config, build, public=public)
    except ConfigError as error:
        # Configuration found wrong while building (a keyring, a pattern file): same exit
        # code and one line, as for saga.toml itself.
        log.error("configuration error: %s", error)
        return EXIT_CONFIG
    except PortInUse as error:
        log.error(
            "port already in use: %s; stop the other process or change the port",
            error,
            extra={"address": str(error)},
        )
        return EXIT_PORT_IN_USE

    stop = asyncio.Event()
    force = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            force.set()  # a second signal skips the drain
        stop.set()
        log.info("signal received", extra={"signal": signal.Signals(signum).name})

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await stop.wait()
    await running.stop(config.server.grace_seconds, force)
    log.info("stopped")
    return 0


def run_service(service: str, build: Builder, *, public: bool = False) -> None:
    """Run one Saga service in the foreground until SIGTERM/SIGINT (a `__main__` body)."""
    parser = argparse.ArgumentParser(prog=f"python -m services.{service}")
    parser.add_argument("--config", help="path to saga.toml (default: $SAGA_CONFIG or ./saga.toml)")
    args = parser.parse_args()
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"saga {service}: configuration error: {error}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    setup_logging(DISPLAY_NAMES[service], config.telemetry.log_level)
    setup_tracing(DISPLAY_NAMES[service], config.telemetry.otlp_endpoint)
    try:
        with asyncio.Runner(loop_factory=loop_factory(config.server.event_loop)) as runner:
            code = runner.run(_serve(service, config, build, public))
    finally:
        shutdown_tracing()
    sys.exit(code)


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the event loop `server.event_loop` names (None: asyncio's default).
    uvloop is imported only when chosen."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None
