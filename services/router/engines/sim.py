"""`sim`: the built-in simulated provider, so the stack runs with no keys and no network.

Deterministic: the same conversation always gives the same words (each token's word is
chosen from a fixed vocabulary by hashing the conversation and the token's position), and a
different conversation almost surely different ones. Paced: the first token comes
`first_token_ms` after the call, then one every `token_interval_ms`, on a fixed schedule
(sleeps, never a busy wait, and no drift). Usage: input tokens are the words of the system
prompt and messages, output tokens the tokens sent. `fail` injects a failure of the error
taxonomy after `fail_after_tokens` tokens — on every call, or on the first `fail_calls`.

Tools: offered tools (and a tool choice other than none) are called — the named one, else
every tool in order (only the first when `parallel_tool_calls` is false) — unless the choice
is auto and the conversation ends with a tool result, which is answered in text. A call is
one delta with its id and name, then its arguments (`sim_json.sample` of the tool's schema:
deterministic, valid for common schemas) in fragments of `FRAGMENT_CHARS`, each a token of
the pace, the failure injection and max_tokens. A JSON response format is answered likewise
in fragments (a sample of the schema; `{"answer": …}` for a plain JSON object).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import AsyncGenerator, Sequence

from services.common.config import ProviderConfig
from services.router.engines.base import (
    Caller,
    Embedded,
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
from services.router.engines.sim_json import sample
from services.router.engines.tools import (
    ResponseFormatType,
    ToolCallDelta,
    ToolChoiceMode,
    ToolSpec,
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
SIM_DIMENSIONS = 16
"""Length of the simulator's vectors when a call asks for none."""
FRAGMENT_CHARS = 8
"""Characters of JSON per streamed piece (a tool call's arguments, a structured answer)."""


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
        # Only when present, so a conversation without tools hashes as it always did.
        for call in message.tool_calls:
            digest.update(b"\x01" + call.id.encode() + call.arguments_json.encode())
        if message.tool_call_id:
            digest.update(b"\x02" + message.tool_call_id.encode())
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
        digest = conversation_digest(request)
        pieces = _answer(request, digest, sim.tokens)
        count = min(len(pieces), request.max_tokens)
        self._calls += 1
        failing = sim.fail and (not sim.fail_calls or self._calls <= sim.fail_calls)
        fail_at = min(sim.fail_after_tokens, count) if failing else None
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
            yield pieces[position]
        if fail_at is not None:
            raise _failure(sim.fail, self._name)
        if count < len(pieces):
            reason = FinishReason.LENGTH
        elif pieces and isinstance(pieces[0], ToolCallDelta):
            reason = FinishReason.TOOL_CALLS
        else:
            reason = FinishReason.STOP
        yield Finish(reason, input_tokens=count_words(request), output_tokens=count)

    async def embed(self, texts: Sequence[str], dimensions: int, caller: Caller) -> Embedded:
        """Deterministic unit vectors (`SIM_DIMENSIONS` long unless asked otherwise), one per
        text from its hash; input tokens are the texts' words. Fails like `stream` when a
        failure is injected."""
        sim = self._sim
        self._calls += 1
        if sim.fail and (not sim.fail_calls or self._calls <= sim.fail_calls):
            raise _failure(sim.fail, self._name)
        size = dimensions or SIM_DIMENSIONS
        vectors = []
        for text in texts:
            raw = [
                int.from_bytes(hashlib.blake2b(f"{i}:{text}".encode(), digest_size=4).digest())
                / 2**31
                - 1.0
                for i in range(size)
            ]
            norm = math.sqrt(sum(v * v for v in raw)) or 1.0
            vectors.append(tuple(v / norm for v in raw))
        return Embedded(tuple(vectors), sum(len(t.split()) for t in texts))

    async def close(self) -> None:
        """Nothing to release."""


def _called(request: EngineRequest) -> tuple[ToolSpec, ...]:
    """The tools the simulated model calls (see the module docstring)."""
    choice = request.tool_choice
    if not request.tools or choice.mode is ToolChoiceMode.NONE:
        return ()
    if choice.mode is ToolChoiceMode.NAMED:
        return tuple(t for t in request.tools if t.name == choice.name)
    last = request.messages[-1].role if request.messages else ""
    if choice.mode is ToolChoiceMode.AUTO and last == "tool":
        return ()
    return request.tools[:1] if request.parallel_tool_calls is False else request.tools


def _fragments(text: str) -> list[str]:
    return [text[i : i + FRAGMENT_CHARS] for i in range(0, len(text), FRAGMENT_CHARS)]


def _answer(request: EngineRequest, digest: bytes, tokens: int) -> list[TextDelta | ToolCallDelta]:
    """Every piece of the answer, in order, before max_tokens caps it."""

    def word(i: int) -> str:
        return word_at(digest, i)

    if called := _called(request):
        pieces: list[TextDelta | ToolCallDelta] = []
        for index, tool in enumerate(called):
            call_id = f"call_{digest.hex()[:12]}_{index}"
            pieces.append(ToolCallDelta(index, call_id, tool.name))
            arguments = json.dumps(sample(tool.parameters(), word))
            pieces += [ToolCallDelta(index, arguments=f) for f in _fragments(arguments)]
        return pieces
    form = request.response_format
    if form.type is ResponseFormatType.JSON_SCHEMA:
        return [TextDelta(f) for f in _fragments(json.dumps(sample(form.schema(), word)))]
    if form.type is ResponseFormatType.JSON_OBJECT:
        answer = " ".join(word(i) for i in range(tokens))
        return [TextDelta(f) for f in _fragments(json.dumps({"answer": answer}))]
    return [TextDelta(word(i) + " ") for i in range(tokens)]
