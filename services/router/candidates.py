"""Which providers a call tries, in which order.

A pinned provider is the only candidate (no ranking). Otherwise the order is the ranking of
the call's strategy in the latest snapshot (the snapshot's default when the call names none
or the snapshot lacks it), or the configuration order before any snapshot arrived; preferred
providers that are eligible move to the front, in the order given.

A caller's allow-list (`allowed_only`) narrows the configured providers before any of this:
the others are never candidates, whatever the ranking says. So does what the call needs
(`capable_only`): a call with tools goes only to providers with the `tools` capability, one
with a JSON response format only to those with `json_output`.

While a call walks its candidates, `too_small` passes over those known too small for its
prompt: the prompt is over a window the provider stated (`context_windows`), or — after a
context-length failure in this call — under what the failure showed the prompt needs
(`PromptSize`). Every other candidate is tried, whatever its configured window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.common.config import ProviderConfig
from services.common.errors import FailedPrecondition, FieldViolation, InvalidArgument, Unavailable
from services.common.strategy import Strategy
from services.router.context_limits import parse
from services.router.context_windows import LearnedWindow
from services.router.rankings import RankingSnapshot

_SHOWN = 5  # unknown names echoed back at most


def _unknown(names: Sequence[str], field: str) -> InvalidArgument:
    shown = ", ".join(n[:128] for n in names[:_SHOWN])
    return InvalidArgument(
        f"unknown provider(s): {shown}",
        reason="UNKNOWN_PROVIDER",
        field_violations=[FieldViolation(field, f"not configured: {shown}")],
    )


def allowed_only(
    providers: Sequence[ProviderConfig], allowed: Sequence[str]
) -> Sequence[ProviderConfig]:
    """`providers` restricted to the `allowed` names (all of them when `allowed` is empty);
    raise InvalidArgument UNKNOWN_PROVIDER naming `allowed_providers` for a name that is not
    configured."""
    if not allowed:
        return providers
    configured = {p.name for p in providers}
    unknown = [n for n in allowed if n not in configured]
    if unknown:
        raise _unknown(unknown, "allowed_providers")
    wanted = set(allowed)
    return [p for p in providers if p.name in wanted]


def capable_only(
    providers: Sequence[ProviderConfig], required: Sequence[str], pinned: str = ""
) -> Sequence[ProviderConfig]:
    """`providers` that have every `required` capability (`tools`, `json_output`); raise
    FailedPrecondition NO_CAPABLE_PROVIDER naming the capabilities when none is left (or the
    `pinned` provider is not among them). Those without are never candidates: a call is not
    sent where it would fail."""
    if not required:
        return providers
    capable = [p for p in providers if set(required) <= set(p.capabilities)]
    lacking = {p.name for p in providers} - {p.name for p in capable}
    if not capable or pinned in lacking:
        raise no_capable_provider(required)
    return capable


def no_capable_provider(required: Sequence[str]) -> FailedPrecondition:
    """The refusal of a call no provider it may use can serve (NO_CAPABLE_PROVIDER)."""
    missing = ", ".join(required)
    return FailedPrecondition(
        f"no provider this call may use has the capabilities {missing}",
        reason="NO_CAPABLE_PROVIDER",
        metadata={"capabilities": missing},
    )


def choose(
    providers: Sequence[ProviderConfig],
    snapshot: RankingSnapshot | None,
    *,
    strategy: Strategy | None = None,
    preferred: Sequence[str] = (),
    pinned: str = "",
) -> list[ProviderConfig]:
    """The candidates of one call, best first; raise InvalidArgument for an unknown pinned
    or preferred provider and Unavailable when the ranking leaves none."""
    by_name = {p.name: p for p in providers}
    if pinned:
        if pinned not in by_name:
            raise _unknown([pinned], "pinned_provider")
        return [by_name[pinned]]
    unknown = [n for n in preferred if n not in by_name]
    if unknown:
        raise _unknown(unknown, "preferred_providers")

    if snapshot is None:
        order: Sequence[str] = [p.name for p in providers]
    else:
        ranking = snapshot.rankings.get(strategy or snapshot.default_strategy)
        if ranking is None:
            ranking = snapshot.rankings.get(snapshot.default_strategy, ())
        # A provider the optimizer ranks but this router does not know cannot be called.
        order = [n for n in ranking if n in by_name]
    if not order:
        raise Unavailable(
            "no provider is eligible for this call",
            reason="NO_PROVIDER_AVAILABLE",
            retry_after=1.0,
        )
    eligible = set(order)
    front = list(dict.fromkeys(n for n in preferred if n in eligible))
    rest = [n for n in order if n not in front]
    return [by_name[n] for n in (*front, *rest)]


@dataclass
class PromptSize:
    """What one call knows of its prompt's size, for passing over small windows."""

    estimate: int
    """The router's estimate of the prompt, tokens."""
    completion: int = 0
    """The most tokens the call may generate (its max tokens)."""
    needs: int = 0
    """After a context-length failure: a window under this many tokens cannot take the
    call (0: nothing known yet)."""


def too_small(provider: ProviderConfig, learned: LearnedWindow, size: PromptSize) -> bool:
    """Whether `provider` is known too small for the call: the provider stated a window the
    prompt is over, or its window (stated, else configured) is under what the call needs."""
    if learned.refuses(size.estimate, size.completion):
        return True
    return (learned.window() or provider.context_window) < size.needs


def after_too_long(
    provider: ProviderConfig, learned: LearnedWindow, size: PromptSize, message: str
) -> None:
    """`provider` refused the call as too long with `message`: learn the window it names,
    and raise what the call needs — what the provider counted when it says (its prompt plus
    the completion where it counts that), else more than its window (stated or configured),
    the only thing then known."""
    window = learned.window() or provider.context_window
    limit = parse(message)
    if limit is not None:
        learned.learn(limit, size.estimate)
    if limit is not None and limit.requested is not None:
        needed = limit.requested
    elif limit is not None and limit.window is not None:
        needed = limit.window + 1
    else:
        needed = window + 1
    size.needs = max(size.needs, needed)


def too_long(provider: str, window: int, estimate: int) -> InvalidArgument:
    """The call's prompt is over the window `provider` stated: refused without a call."""
    return InvalidArgument(
        f"{provider}: the prompt (~{estimate} tokens) exceeds the {window}-token context "
        "window the provider stated",
        reason="PROVIDER_CONTEXT_LENGTH_EXCEEDED",
        metadata={"provider": provider, "context_window": str(window)},
    )
