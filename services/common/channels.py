"""Channels to peer services: one per peer, created once, reused by every request.

Each channel carries: mTLS with this service's certificate (the peer is checked against its
service name, so any address works: 127.0.0.1, a Kubernetes headless Service); round-robin
over the resolved addresses, skipping a replica whose health turned NOT_SERVING (it is
stopping); message-size limits; keepalive, so a peer that hangs with its
sockets open (a stopped process, a frozen node) is given up within `keepalive_seconds` +
`keepalive_timeout_seconds` (its calls fail UNAVAILABLE) and a connection attempt to it
within a few seconds, instead of each call waiting out its deadline; a default deadline on every
method (the smaller of it and the caller's applies); and automatic retries only where SPEC
section 2 allows them — idempotent unary reads, on UNAVAILABLE. Streams are never retried
here: provider retries and fallback live in the router alone.
"""

from __future__ import annotations

import json
from typing import Any

import grpc

from services.common.config import Config
from services.common.telemetry import TracedChannel
from services.common.tls import channel_credentials

RETRYABLE_READS = (
    ("saga.auth.v1.AuthService", "Authenticate"),
    ("saga.auth.v1.AuthService", "GetProviderCredential"),
    ("saga.runtime.v1.PackService", "GetPackHealth"),
    ("saga.optimizer.v1.OptimizerService", "Rank"),
)
"""The only RPCs a channel retries by itself (idempotent unary reads, UNAVAILABLE only)."""

STREAMING_METHODS = (
    ("saga.router.v1.RouterService", "Reason"),
    ("saga.runtime.v1.RuntimeService", "RunPattern"),
    ("saga.runtime.v1.RuntimeService", "WatchExecution"),
    ("saga.optimizer.v1.OptimizerService", "WatchRankings"),
    ("saga.optimizer.v1.OptimizerService", "RecordOutcomes"),
    ("saga.vault.v1.VaultService", "Rewrap"),
)
"""Long-lived calls: they get the stream deadline instead of the unary one."""


def _seconds(value: float) -> str:
    return f"{value:.3f}s"


def service_config(config: Config) -> str:
    """The gRPC service config JSON every Saga channel uses."""
    server = config.server
    return json.dumps(
        {
            "loadBalancingConfig": [{"round_robin": {}}],
            # Client-side health checking: round robin skips a replica whose health says
            # NOT_SERVING — the first thing a replica does on SIGTERM — so new calls go to
            # the others while its own streams drain (the liveness name "": a replica that
            # is up but not ready, e.g. a sealed vault, still answers with its own error).
            "healthCheckConfig": {"serviceName": ""},
            "methodConfig": [
                {
                    "name": [{"service": s, "method": m} for s, m in RETRYABLE_READS],
                    "timeout": _seconds(server.unary_deadline_seconds),
                    "retryPolicy": {
                        "maxAttempts": 3,
                        "initialBackoff": "0.05s",
                        "maxBackoff": "0.5s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                },
                {
                    "name": [{"service": s, "method": m} for s, m in STREAMING_METHODS],
                    "timeout": _seconds(server.stream_deadline_seconds),
                },
                {"name": [{}], "timeout": _seconds(server.unary_deadline_seconds)},
            ],
        }
    )


def channel_options(config: Config, peer: str | None) -> list[tuple[str, Any]]:
    """Options shared by every channel; `peer` is the service id the certificate must name."""
    server = config.server
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", server.max_message_bytes),
        ("grpc.max_receive_message_length", server.max_message_bytes),
        ("grpc.keepalive_time_ms", int(server.keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(server.keepalive_timeout_seconds * 1000)),
        # What actually bounds the wait for a ping's ack in grpc 1.85 (default 60 s, which
        # the keepalive timeout alone does not shorten).
        ("grpc.http2.ping_timeout_ms", int(server.keepalive_timeout_seconds * 1000)),
        ("grpc.enable_retries", 1),
        # A restarted peer is found again within seconds (gRPC's default backoff grows to 120 s).
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 5000),
        # Also the least time a connection attempt is given (gRPC's default: 20 s, which a
        # hung peer that accepts TCP but never answers the handshake would take every time).
        ("grpc.min_reconnect_backoff_ms", 2000),
        ("grpc.service_config", service_config(config)),
    ]
    if peer is not None and config.tls.mode != "plaintext":
        options.append(("grpc.ssl_target_name_override", peer))
    return options


class Peers:
    """The channels of one service to the others, created on first use and then reused."""

    def __init__(self, config: Config, me: str) -> None:
        self._config = config
        self._credentials = channel_credentials(config, me)
        self._channels: dict[str, TracedChannel] = {}

    def channel(self, peer: str) -> grpc.aio.Channel:
        """The channel to service `peer` (e.g. "router")."""
        channel = self._channels.get(peer)
        if channel is None:
            target = self._config.services.get(peer).dial_target()
            options = channel_options(self._config, peer)
            if self._credentials is None:
                raw = grpc.aio.insecure_channel(target, options=options)
            else:
                raw = grpc.aio.secure_channel(target, self._credentials, options=options)
            channel = TracedChannel(raw)
            self._channels[peer] = channel
        return channel

    def states(self) -> dict[str, int]:
        """Each open channel's connectivity (grpc's ChannelConnectivity number), read without
        making it connect."""
        return {
            peer: channel.get_state(try_to_connect=False).value[0]
            for peer, channel in list(self._channels.items())
        }

    async def close(self) -> None:
        """Close every channel (on shutdown)."""
        for channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()
