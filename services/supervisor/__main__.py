"""`python -m services.supervisor`: start the six services, wait for health, stop in order.

Services are spawned in dependency order (vault first, gateway last) and the supervisor
waits until each reports SERVING on its probe port. Children run in their own session, so
Ctrl-C reaches only the supervisor, which then stops them in reverse order (gateway first:
no new work enters while the inner services drain).

A child that dies after start-up is restarted alone — the others keep serving, as replicas
behind a Kubernetes Service would — after a backoff that doubles from 1 s to 30 s with each
recent crash, with a line saying which service exited and how. The supervisor gives up, stops
everything and exits non-zero only when a service crash-loops (`RestartPolicy`: 5 exits
within 120 s) or exits with a configuration error (exit 78: a restart would
fail the same way). A failure during start-up stops everything at once, as before.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.backoff import Backoff
from services.common.config import EXIT_CONFIG, Config, ConfigError, load_config
from services.common.identity import DISPLAY_NAMES, START_ORDER
from services.common.tls import cert_paths

READY_TIMEOUT = 30.0


RESTART_BACKOFF = Backoff(initial=1.0, maximum=30.0)


@dataclass(frozen=True)
class RestartPolicy:
    """When a dead child is started again, and when the supervisor gives up instead."""

    crash_loop_limit: int = 5
    """This many exits of one service within `crash_loop_window` seconds is a crash loop."""
    crash_loop_window: float = 120.0
    backoff: Backoff = RESTART_BACKOFF
    """The wait before a restart: 1 s, doubling with each recent crash to 30 s, jittered."""


Restart = Callable[[str], Awaitable[asyncio.subprocess.Process]]


async def wait_serving(config: Config, service: str, process: asyncio.subprocess.Process) -> None:
    """Poll `service`'s probe port until it reports SERVING (or the process dies)."""
    sc = config.services.get(service)
    deadline = time.monotonic() + READY_TIMEOUT
    async with grpc.aio.insecure_channel(f"{sc.host}:{sc.probe_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise RuntimeError(f"{service} exited with code {process.returncode}")
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{service} did not report SERVING within {READY_TIMEOUT:.0f} s")


async def stop_all(processes: dict[str, asyncio.subprocess.Process], grace: float) -> None:
    """SIGTERM each live child in reverse start order; kill one that outlives its grace."""
    for service in reversed(list(processes)):
        process = processes[service]
        if process.returncode is not None:
            continue
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace + 5)
        except TimeoutError:
            process.kill()
            await process.wait()


def endpoints(config: Config) -> str:
    """The table printed once everything is up."""
    lines = []
    for service in reversed(START_ORDER):
        sc = config.services.get(service)
        public = "TLS" if config.gateway.public_cert_file else "plaintext"
        tls = public if service == "gateway" else f"mTLS ({config.tls.mode})"
        http = f"  http :{sc.http_port}" if sc.http_port else ""
        lines.append(
            f"  {DISPLAY_NAMES[service]:<14} grpc {sc.host}:{sc.port} {tls:<16}"
            f" probe :{sc.probe_port}  metrics :{sc.metrics_port}{http}"
        )
    return "\n".join(lines)


def admin_key_notice(config: Config, since: float) -> str:
    """The admin key, printed once: only when auth created it during this start."""
    path = config.data_path / "admin.key"
    try:
        if path.stat().st_mtime < since - 1:
            return f"Admin API key: in {path} (created earlier)\n"
        key = path.read_text().strip()
        return f"Admin API key (shown once; also in {path}, mode 0600):\n  {key}\n"
    except OSError:
        return ""


def how_it_ended(code: int) -> str:
    """`exit code 3` or `killed by SIGKILL`, for the restart line."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


async def spawn(service: str, config_args: list[str]) -> asyncio.subprocess.Process:
    """Start one service in its own session (Ctrl-C reaches only the supervisor)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"services.{service}", *config_args, start_new_session=True
    )
    print(f"saga: started {service} (pid {process.pid})", file=sys.stderr, flush=True)
    return process


async def keep_running(
    processes: dict[str, asyncio.subprocess.Process],
    restart: Restart,
    stop: asyncio.Event,
    policy: RestartPolicy = RestartPolicy(),
) -> int:
    """Restart children that die until `stop` is set (0) or one crash-loops or exits with a
    configuration error (1)."""
    crashes: dict[str, deque[float]] = {s: deque() for s in processes}
    stopper = asyncio.ensure_future(stop.wait())
    try:
        while True:
            waits = {asyncio.ensure_future(p.wait()): s for s, p in processes.items()}
            done, pending = await asyncio.wait(
                [stopper, *waits], return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending - {stopper}:
                task.cancel()
            if stop.is_set():
                return 0
            for task in done - {stopper}:
                service, code = waits[task], task.result()
                now = time.monotonic()
                recent = crashes[service]
                recent.append(now)
                while recent and recent[0] < now - policy.crash_loop_window:
                    recent.popleft()
                if code == EXIT_CONFIG or len(recent) >= policy.crash_loop_limit:
                    why = "a configuration error" if code == EXIT_CONFIG else "a crash loop"
                    print(
                        f"saga: {service} exited ({how_it_ended(code)}, {len(recent)} time(s) in "
                        f"{policy.crash_loop_window:.0f} s): {why}; stopping",
                        file=sys.stderr,
                    )
                    return 1
                delay = policy.backoff.delay(len(recent))
                print(
                    f"saga: {service} exited ({how_it_ended(code)}); restarting in {delay:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
                try:
                    await asyncio.wait_for(asyncio.shield(stopper), delay)
                    return 0
                except TimeoutError:
                    processes[service] = await restart(service)
    finally:
        stopper.cancel()


async def supervise(config: Config, config_args: list[str]) -> int:
    """Start everything, wait for a signal or a dying child, stop everything."""
    cert_paths(config, "gateway")  # make the dev PKI once, before six processes race for it
    started = time.monotonic()
    wall_started = time.time()
    processes: dict[str, asyncio.subprocess.Process] = {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        # Spawned together (channels connect lazily, so nothing needs a peer to start),
        # awaited in dependency order.
        for service in START_ORDER:
            processes[service] = await spawn(service, config_args)
        for service in START_ORDER:
            await wait_serving(config, service, processes[service])
            if stop.is_set():
                raise RuntimeError("interrupted during start-up")
    except RuntimeError as error:
        print(f"saga: {error}; stopping", file=sys.stderr)
        await stop_all(processes, config.server.grace_seconds)
        return 1
    print(
        f"\nSaga is up: six services in {time.monotonic() - started:.1f} s\n{endpoints(config)}\n"
        f"{admin_key_notice(config, wall_started)}"
        "Ctrl-C stops them gracefully.\n",
        flush=True,
    )
    code = await keep_running(processes, lambda service: spawn(service, config_args), stop)
    print("saga: stopping (gateway first)", file=sys.stderr, flush=True)
    await stop_all(processes, config.server.grace_seconds)
    return code


def main() -> None:
    """Command-line entry."""
    parser = argparse.ArgumentParser(prog="python -m services.supervisor")
    parser.add_argument("--config", help="path to saga.toml (default: $SAGA_CONFIG or ./saga.toml)")
    args = parser.parse_args()
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"saga: configuration error: {error}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    sys.exit(asyncio.run(supervise(config, ["--config", args.config] if args.config else [])))


if __name__ == "__main__":
    main()
