"""A Reason call in domain terms, and the bounds every call must respect.

The servicer builds a `ReasonCall` from the request; `validate` refuses what the router will
not send to a provider, each refusal an INVALID_ARGUMENT naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.common import sampling
from services.common.call_options import (
    MAX_COST_MICRO_USD,
    MAX_PROVIDER_NAMES,
    names_problem,
    weights_problem,
)
from services.common.config import ProviderConfig
from services.common.errors import FieldViolation, InvalidArgument
from services.common.strategy import Strategy
from services.router.engines.base import Caller, ChatMessage, EngineRequest, Sampling
from services.router.engines.tools import AUTO, TEXT, ResponseFormat, ToolChoice, ToolSpec
from services.router.structured import check_request

MAX_MESSAGES = 200
MAX_PROMPT_CHARS = 200_000
DEFAULT_MAX_TOKENS = 1024
MAX_MAX_TOKENS = 32_768
MAX_STOP_SEQUENCES = 16
MAX_STOP_CHARS = 256
MAX_TEMPERATURE = 2.0
MAX_ACCOUNTING_CHARS = 128
"""Longest session, step or pattern id (they make up outcome and reservation ids)."""


@dataclass(frozen=True)
class CustomWeights:
    """The weights of a STRATEGY_CUSTOM call (relative; the optimizer normalises them)."""

    cost: float = 0.0
    latency: float = 0.0
    quality: float = 0.0
    reliability: float = 0.0

    def values(self) -> tuple[float, float, float, float]:
        """(cost, latency, quality, reliability)."""
        return (self.cost, self.latency, self.quality, self.reliability)


@dataclass(frozen=True)
class Accounting:
    """Who and what the call is accounted to."""

    user_id: str = ""
    session_id: str = ""
    execution_id: str = ""
    step_id: str = ""
    pattern_id: str = ""
    key_id: str = ""
    """The API key the call was made with (the request context's credential id), whose
    own budget applies too; empty or a session's id when none."""


@dataclass(frozen=True)
class ReasonCall:
    """One Reason request, as received (`max_tokens` 0 = the default)."""

    messages: tuple[ChatMessage, ...]
    system_prompt: str = ""
    max_tokens: int = 0
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    sampling: Sampling = field(default_factory=Sampling)
    """top_p, seed, penalties and end user: sent only to engines that send them all."""
    complete: bool = False
    strategy: Strategy | None = None
    preferred: tuple[str, ...] = ()
    allowed: tuple[str, ...] = ()
    """Only these providers are candidates; empty = every configured one."""
    weights: CustomWeights | None = None
    """The caller's STRATEGY_CUSTOM weights; None = the snapshot's CUSTOM ranking."""
    pinned: str = ""
    allow_fallback: bool = False
    accounting: Accounting = Accounting()
    max_cost_micro_usd: int = 0
    caller: Caller = field(default_factory=Caller)
    """The verified user and their request context, for engines that fetch that user's
    provider credential."""
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = AUTO
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat = TEXT

    def required_capabilities(self) -> tuple[str, ...]:
        """The provider capabilities the call needs beyond chat (`tools`, `json_output`)."""
        needs = []
        if self.tools:
            needs.append("tools")
        if self.response_format.is_json:
            needs.append("json_output")
        return tuple(needs)

    def engine_request(self) -> EngineRequest:
        """What engines get (call after `validate`)."""
        return EngineRequest(
            messages=self.messages,
            system_prompt=self.system_prompt,
            max_tokens=self.max_tokens or DEFAULT_MAX_TOKENS,
            temperature=self.temperature,
            stop=self.stop,
            sampling=self.sampling,
            stream=not self.complete,
            caller=self.caller,
            tools=self.tools,
            tool_choice=self.tool_choice,
            parallel_tool_calls=self.parallel_tool_calls,
            response_format=self.response_format,
        )


def _invalid(message: str, field: str, description: str, *, reason: str) -> InvalidArgument:
    return InvalidArgument(
        message, reason=reason, field_violations=[FieldViolation(field, description)]
    )


def validate(call: ReasonCall) -> None:
    """Raise InvalidArgument for the first bound `call` breaks."""
    if not call.messages or all(not m.content.strip() and not m.tool_calls for m in call.messages):
        raise InvalidArgument(
            "the prompt is empty",
            reason="PROMPT_EMPTY",
            field_violations=[FieldViolation("messages", "at least one non-blank message")],
        )
    if len(call.messages) > MAX_MESSAGES:
        raise InvalidArgument(
            f"at most {MAX_MESSAGES} messages",
            reason="PROMPT_TOO_LARGE",
            field_violations=[FieldViolation("messages", f"at most {MAX_MESSAGES} messages")],
        )
    chars = len(call.system_prompt) + sum(
        len(m.content) + sum(len(c.arguments_json) for c in m.tool_calls) for m in call.messages
    )
    if chars > MAX_PROMPT_CHARS:
        raise InvalidArgument(
            f"the prompt has {chars} characters; at most {MAX_PROMPT_CHARS}",
            reason="PROMPT_TOO_LARGE",
            field_violations=[
                FieldViolation("messages", f"at most {MAX_PROMPT_CHARS} characters in all")
            ],
        )
    if not 0 <= call.max_tokens <= MAX_MAX_TOKENS:
        raise InvalidArgument(
            f"max_tokens must be between 0 (default {DEFAULT_MAX_TOKENS}) and {MAX_MAX_TOKENS}",
            reason="MAX_TOKENS_INVALID",
            field_violations=[FieldViolation("max_tokens", f"0 to {MAX_MAX_TOKENS}")],
        )
    _validate_options(call)
    check_request(
        call.messages, call.tools, call.tool_choice, call.parallel_tool_calls, call.response_format
    )


def _validate_options(call: ReasonCall) -> None:
    if call.temperature is not None and not (
        math.isfinite(call.temperature) and 0 <= call.temperature <= MAX_TEMPERATURE
    ):
        raise _invalid(
            "temperature out of range",
            "temperature",
            f"0 to {MAX_TEMPERATURE}",
            reason="OPTION_INVALID",
        )
    if len(call.stop) > MAX_STOP_SEQUENCES or any(
        not s or len(s) > MAX_STOP_CHARS for s in call.stop
    ):
        raise _invalid(
            "bad stop sequences",
            "stop",
            f"at most {MAX_STOP_SEQUENCES} non-empty sequences of {MAX_STOP_CHARS} characters",
            reason="OPTION_INVALID",
        )
    if len(call.preferred) > MAX_PROVIDER_NAMES:
        raise _invalid(
            "too many preferred providers",
            "preferred_providers",
            f"at most {MAX_PROVIDER_NAMES}",
            reason="OPTION_INVALID",
        )
    _validate_sampling(call.sampling)
    _validate_selection(call)
    for name in ("session_id", "step_id", "pattern_id"):
        if len(getattr(call.accounting, name)) > MAX_ACCOUNTING_CHARS:
            raise _invalid(
                f"accounting.{name} is too long",
                f"accounting.{name}",
                f"at most {MAX_ACCOUNTING_CHARS} characters",
                reason="ACCOUNTING_INVALID",
            )
    if not 0 <= call.max_cost_micro_usd <= MAX_COST_MICRO_USD:
        raise _invalid(
            "max_cost_micro_usd out of range",
            "max_cost_micro_usd",
            f"0 (no limit) to {MAX_COST_MICRO_USD}",
            reason="OPTION_INVALID",
        )


def _validate_selection(call: ReasonCall) -> None:
    """The allow-list and the CUSTOM weights (unknown names are the candidates' check)."""
    if problem := names_problem(call.allowed):
        raise _invalid(
            "bad allowed providers", "allowed_providers", problem, reason="OPTION_INVALID"
        )
    if call.allowed:
        outside = [n for n in call.preferred if n not in call.allowed]
        if outside:
            # A preference the allow-list forbids would be silently dropped: refuse it.
            raise _invalid(
                "a preferred provider is not allowed",
                "preferred_providers",
                f"not in allowed_providers: {', '.join(n[:128] for n in outside[:5])}",
                reason="OPTION_INVALID",
            )
    if call.weights is not None:
        if call.strategy is not Strategy.CUSTOM:
            raise _invalid(
                "weights are used only with STRATEGY_CUSTOM",
                "weights",
                "only with strategy STRATEGY_CUSTOM",
                reason="WEIGHTS_INVALID",
            )
        if problem := weights_problem(call.weights.values()):
            raise _invalid("bad CUSTOM weights", "weights", problem, reason="WEIGHTS_INVALID")


def _validate_sampling(values: Sampling) -> None:
    for name in ("top_p", "presence_penalty", "frequency_penalty"):
        value = getattr(values, name)
        if value is not None and (problem := sampling.number_problem(name, value)):
            raise _invalid(f"{name} out of range", name, problem, reason="OPTION_INVALID")
    if values.seed is not None and (problem := sampling.seed_problem(values.seed)):
        raise _invalid("seed out of range", "seed", problem, reason="OPTION_INVALID")
    if problem := sampling.end_user_problem(values.end_user):
        raise _invalid("end_user is too long", "end_user", problem, reason="OPTION_INVALID")


def able(providers: Sequence[ProviderConfig], call: ReasonCall) -> list[ProviderConfig]:
    """The providers whose engine sends every sampling field `call` set (a field is never
    dropped on the way to a provider); INVALID_ARGUMENT PARAMETER_UNSUPPORTED naming the
    field when none of them can."""
    present = call.sampling.present()
    if not present:
        return list(providers)
    kept = [p for p in providers if not sampling.unsupported(p.kind, present)]
    if kept:
        return kept
    # Every provider lacks one at least (none would be `kept`), so `missing` is not empty.
    lacking = {f for p in providers for f in sampling.unsupported(p.kind, present)}
    missing = [f for f in sampling.OPTIONAL_FIELDS if f in lacking]
    kinds = ", ".join(sorted({p.kind for p in providers})) or "none"
    raise InvalidArgument(
        f"no candidate provider can send {', '.join(missing)} (their engines: {kinds})",
        reason="PARAMETER_UNSUPPORTED",
        field_violations=[
            FieldViolation(f, "not sent by the engine of any candidate provider") for f in missing
        ],
    )
