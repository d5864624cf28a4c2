"""`sim`: the built-in simulated provider, so the stack runs with no keys and no network.

Deterministic: the same conversation always gives the same words (each token's word is
chosen from a fixed vocabulary by hashing the conversation and the token's position), and a
different conversation almost surely different ones. Paced: the first token comes
`first_token_ms` after the call, then one every `token_interval_ms`, on a fixed schedule
(sleeps, never a busy wait, and no drift). Usage: input tokens are the words of the system
prompt and messages, output tokens the tokens sent. `fail` injects a failure of the error
taxonomy after `fail_after_tokens` tokens — on every call, or on the first `fail_calls`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator

from services.common.config import ProviderConfig
from services.router.engines.base import (
    EngineEvent,
    EngineRequest,
    Finish,
    FinishReason,
    ProviderContextTooLong,
    ProviderError,
    ProviderRateLimited,
    ProviderRejectedInput,
    ProviderUnauthenticated,
    ProviderUnavailable,
    TextDelta,
)

VOCABULARY = (
    "the", "saga", "river", "stone", "light", "quiet", "north", "ledger", "signal", "harbor",
    "amber", "circuit", "garden", "vector", "morning", "copper", "meadow", "engine", "silver",
    "thread", "window", "orbit", "canvas", "summit", "echo", "lantern", "forest", "prism",
    "anchor", "breeze", "cobalt", "delta", "ember", "falcon", "glacier", "horizon", "island",
    "juniper", "kernel", "lattice", "marble", "nectar", "ocean", "pepper", "quartz", "raven",
    "sparrow", "tundra", "umber", "velvet", "willow", "xenon", "yarrow", "zephyr", "bridge",
    "cedar", "dune", "fjord", "grove", "heron", "indigo", "jasper", "kestrel", "lumen",
)  # fmt: skip
"""64 words: each token is one of them followed by a space."""

RATE_LIMIT_RETRY_AFTER_SECONDS = 1.0


def _failure(kind: str, provider: str) -> ProviderError:
    """The injected error for `sim.fail` (a config value)."""
    message = f"{provider}: injected {kind} failure"
    if kind == "rate_limited":
        return ProviderRateLimited(message, retry_after=RATE_LIMIT_RETRY_AFTER_SECONDS)
    if kind == "unauthenticated":
        return ProviderUnauthenticated(message)
    if kind == "invalid_argument":
        return ProviderRejectedInput(message)
    if kind == "context_length":
        return ProviderContextTooLong(message)
    return ProviderUnavailable(message)


def conversation_digest(request: EngineRequest) -> bytes:
    """A hash of everything that defines the answer's words."""
    digest = hashlib.sha256(request.system_prompt.encode())
    for message in request.messages:
        digest.update(b"\x00" + message.role.encode() + b"\x00" + message.content.encode())
    return digest.digest()


def word_at(digest: bytes, position: int) -> str:
    """The word at `position` of the answer to the conversation hashed as `digest`."""
    h = hashlib.blake2b(digest + position.to_bytes(4, "big"), digest_size=4).digest()
    return VOCABULARY[int.from_bytes(h, "big") % len(VOCABULARY)]


def count_words(request: EngineRequest) -> int:
    """The input tokens of a request, estimated as its words."""
    return len(request.system_prompt.split()) + sum(
        len(m.content.split()) for m in request.messages
    )


class SimEngine:
    """The simulator for one configured provider."""

    def __init__(self, provider: ProviderConfig) -> None:
        self._name = provider.name
        self._sim = provider.sim
        self._calls = 0  # for `fail_calls`: only the first calls fail

    async def stream(self, request: EngineRequest) -> AsyncGenerator[EngineEvent, None]:
        """Stream the deterministic answer at the configured pace (see the module doc)."""
        sim = self._sim
        count = min(sim.tokens, request.max_tokens)
        self._calls += 1
        failing = sim.fail and (not sim.fail_calls or self._calls <= sim.fail_calls)
        fail_at = min(sim.fail_after_tokens, count) if failing else None
        digest = conversation_digest(request)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for position in range(count):
            if position == fail_at:
                raise _failure(sim.fail, self._name)
            # A fixed schedule from the start: sleep overshoot does not accumulate.
            due = start + (sim.first_token_ms + position * sim.token_interval_ms) / 1000
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            yield TextDelta(word_at(digest, position) + " ")
        if fail_at is not None:
            raise _failure(sim.fail, self._name)
        reason = FinishReason.LENGTH if count < sim.tokens else FinishReason.STOP
        yield Finish(reason, input_tokens=count_words(request), output_tokens=count)

    async def close(self) -> None:
        """Nothing to release."""
