"""What an agent receives for one step and what it reports back.

An agent's `run(call)` yields, in order, any number of `Relayed` chain events (tokens,
provider switches and skipped providers, as they happen) and finally one `StepResult`.
`Relayed` carries protobuf bytes rather than text so that a token crosses the runtime
without being decoded and rebuilt (see `services/runtime/wire.py` and "Relaying bytes" in
docs/architecture.md).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.common.usage import Usage


@dataclass(frozen=True)
class RunScope:
    """The run a step belongs to: who it acts for, what it may spend, how long it has."""

    execution_id: str
    pattern_id: str
    user_id: str
    session_id: str
    asof: str
    # The caller's `saga-context` token, forwarded unchanged to services acting for the user.
    context_token: str
    # What the run reads (services/runtime/pins.py): the pack ("" = none) and ledger commit.
    pricing_pack_id: str = ""
    ledger_commit_hash: str = ""
    strategy: int = 0
    preferred_providers: tuple[str, ...] = ()
    max_cost_micro_usd: int = 0
    # Only these providers may serve the run's LLM calls; empty = any.
    allowed_providers: tuple[str, ...] = ()
    # Each LLM call tries its first candidate only.
    disable_fallback: bool = False
    # STRATEGY_CUSTOM weights (cost, latency, quality, reliability); None = the configured ones.
    weights: tuple[float, float, float, float] | None = None
    # time.monotonic() by which the run must end; None = the channels' default deadlines.
    deadline: float | None = None

    def time_left(self) -> float | None:
        """Seconds until the deadline (at least a millisecond), or None when there is none."""
        if self.deadline is None:
            return None
        return max(self.deadline - time.monotonic(), 0.001)


@dataclass(frozen=True)
class StepCall:
    """One step to run: its id, capability and rendered arguments."""

    run: RunScope
    step_id: str
    capability: str
    args: Mapping[str, Any]
    spent_micro_usd: int = 0
    """What the run's steps before this one cost (against `RunScope.max_cost_micro_usd`)."""


@dataclass(frozen=True, slots=True)
class Relayed:
    """A chain event of a step in wire form: `field` is its number in the `oneof event` of
    the chain responses (3 token, 4 provider_switched, 9 providers_skipped) and `payload`
    the serialized message without its step_id, which the runtime writes in front when it
    relays it."""

    step_id: str
    field: int
    payload: bytes


@dataclass(frozen=True)
class StepResult:
    """The end of a successful step: its output and, for LLM steps, usage and provider."""

    output: Mapping[str, Any]
    usage: Usage = field(default_factory=Usage)
    provider: str = ""
    model: str = ""
    cost_micro_usd: int = 0


StepEvent = Relayed | StepResult
