"""A Reason call in domain terms, and the bounds every call must respect.

The servicer builds a `ReasonCall` from the request; `validate` refuses what the router will
not send to a provider, each refusal an INVALID_ARGUMENT naming the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from services.common.errors import FieldViolation, InvalidArgument
from services.common.strategy import Strategy
from services.router.engines.base import Caller, ChatMessage, EngineRequest

MAX_MESSAGES = 200
MAX_PROMPT_CHARS = 200_000
DEFAULT_MAX_TOKENS = 1024
MAX_MAX_TOKENS = 32_768
MAX_STOP_SEQUENCES = 16
MAX_STOP_CHARS = 256
MAX_PROVIDER_NAMES = 64
MAX_TEMPERATURE = 2.0
MAX_ACCOUNTING_CHARS = 128
"""Longest session, step or pattern id (they make up outcome and reservation ids)."""


@dataclass(frozen=True)
class Accounting:
    """Who and what the call is accounted to."""

    user_id: str = ""
    session_id: str = ""
    execution_id: str = ""
    step_id: str = ""
    pattern_id: str = ""


@dataclass(frozen=True)
class ReasonCall:
    """One Reason request, as received (`max_tokens` 0 = the default)."""

    messages: tuple[ChatMessage, ...]
    system_prompt: str = ""
    max_tokens: int = 0
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    complete: bool = False
    strategy: Strategy | None = None
    preferred: tuple[str, ...] = ()
    pinned: str = ""
    allow_fallback: bool = False
    accounting: Accounting = Accounting()
    max_cost_micro_usd: int = 0
    caller: Caller = field(default_factory=Caller)
    """The verified user and their request context, for engines that fetch that user's
    provider credential."""

    def engine_request(self) -> EngineRequest:
        """What engines get (call after `validate`)."""
        return EngineRequest(
            messages=self.messages,
            system_prompt=self.system_prompt,
            max_tokens=self.max_tokens or DEFAULT_MAX_TOKENS,
            temperature=self.temperature,
            stop=self.stop,
            stream=not self.complete,
            caller=self.caller,
        )


def _invalid(message: str, field: str, description: str, *, reason: str) -> InvalidArgument:
    return InvalidArgument(
        message, reason=reason, field_violations=[FieldViolation(field, description)]
    )


def validate(call: ReasonCall) -> None:
    """Raise InvalidArgument for the first bound `call` breaks."""
    if not call.messages or all(not m.content.strip() for m in call.messages):
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
    chars = len(call.system_prompt) + sum(len(m.content) for m in call.messages)
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
    for name in ("session_id", "step_id", "pattern_id"):
        if len(getattr(call.accounting, name)) > MAX_ACCOUNTING_CHARS:
            raise _invalid(
                f"accounting.{name} is too long",
                f"accounting.{name}",
                f"at most {MAX_ACCOUNTING_CHARS} characters",
                reason="ACCOUNTING_INVALID",
            )
    if call.max_cost_micro_usd < 0:
        raise _invalid(
            "max_cost_micro_usd is negative",
            "max_cost_micro_usd",
            "0 (no limit) or more",
            reason="OPTION_INVALID",
        )
