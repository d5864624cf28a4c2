"""Active health checks: a tiny real call to each provider, on demand (CheckProviders) and,
when `router.health_check_interval_seconds` > 0, periodically with no user traffic at all.

A probe is two calls through the provider's own engine — a fixed one-word prompt,
`max_tokens` 1 — streamed first (as calls are made by default), then not streamed (COMPLETE
response mode), one after the other: a provider whose streams are broken while its plain
answers work is not healthy, and the result shows each mode. Each exercises what a user's call
would: the credential, the
provider's wire format, its connect / first-token / total timeouts (the engine's), the
router's per-provider limits (a probe takes a slot and its tokens like any call, so it never
pushes a provider past its RPM). It is bounded by `health_check_timeout_seconds`, the
provider's `total_timeout_ms` and the caller's deadline, whichever ends first. `sim`
providers are probed too and honour their failure injection. Probes are not billed and not
reported to the optimizer: they are the router's, not a user's.

A provider whose credential is per user (`oauth_user`) is not probed: there is no user to
call it for, and the operator's credential would say nothing of the users' tokens. Its
result is `ok=False` with reason `SKIPPED_PER_USER_CREDENTIAL`, and its circuit is left alone.

How a probe's outcome meets the circuit (`circuit.Circuit`), through the same permits a
call takes:

* the circuit admits a call (CLOSED, or HALF_OPEN with no probe in flight): the probe takes
  the permit and gives its verdict — a success counts as one (and, on HALF_OPEN's probe
  permit, closes the circuit), a failure counts towards opening it like a failed call (and
  reopens a half-open one), an authentication failure opens it at once;
* the circuit refuses calls (OPEN in its cooldown, or another probe in flight): the provider
  is probed anyway, so the operator sees how it is, but the circuit does not move — a
  cooldown is never cut short by a probe; only `healthy` follows the probe.

Verdicts are those of real calls (`failures.classify`), with one difference: a refused input
counts as a failure, because the probe's fixed one-token prompt is refused only by a provider
that cannot serve calls as configured. Outcomes that say nothing of the provider — auth could
not be reached for the credential, the router's own limit refused the probe, the caller's
deadline ended it, an engine's bug — give no verdict and leave `healthy` as it was.
`ListProviders.healthy` is the circuit's `healthy`: the last verdict, probe or call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass

from services.common.circuit import Circuit, Permit
from services.common.config import ProviderConfig, RouterConfig
from services.common.errors import FieldViolation, InvalidArgument, SagaError
from services.router.attempts import ms
from services.router.engines.base import (
    ChatMessage,
    Engine,
    EngineRequest,
    ErrorKind,
    Finish,
    ProviderError,
    ProviderTimeout,
    estimate_input_tokens,
)
from services.router.failures import Verdict, classify
from services.router.limits import LimitReached
from services.router.resilience import ProviderState, Resilience

log = logging.getLogger("saga.router.probes")

PROBE_PROMPT = "ping"
PROBE_MAX_TOKENS = 1
MAX_NAMES = 256
"""Provider names one CheckProviders may list."""
DEADLINE_MARGIN_SECONDS = 0.2
"""Probes end this long before the caller's deadline, so the answer still reaches it."""
SKIPPED_PER_USER_CREDENTIAL = "SKIPPED_PER_USER_CREDENTIAL"
LIMIT_REACHED = "PROVIDER_LIMIT_REACHED"
INTERNAL = "INTERNAL"
_SHOWN = 5  # unknown names echoed back at most


@dataclass(frozen=True)
class ModeResult:
    """One mode of a probe (saga.router.v1.ProbeModeResult)."""

    ok: bool
    latency_ms: int = 0
    error_reason: str = ""
    """The ErrorInfo reason a call failing this way would end with; empty when ok."""


NOT_PROBED = "NOT_PROBED"


@dataclass(frozen=True)
class ProbeResult:
    """One provider's probe (saga.router.v1.ProviderCheck): ok when both modes are."""

    provider: str
    ok: bool
    latency_ms: int
    error_reason: str = ""
    """The reason of the first mode that failed (streamed first); empty when ok."""
    stream: ModeResult | None = None
    complete: ModeResult | None = None


@dataclass(frozen=True)
class ProbeOutcome:
    """What a probe's ending says: its reason (empty: ok) and its verdict on the provider."""

    error_reason: str
    verdict: Verdict


OK = ProbeOutcome("", Verdict.SUCCESS)


def probe_request(stream: bool) -> EngineRequest:
    """A probe's call: one fixed word in, at most one token out, streamed or one answer."""
    return EngineRequest(
        messages=(ChatMessage("user", PROBE_PROMPT),),
        system_prompt="",
        max_tokens=PROBE_MAX_TOKENS,
        stream=stream,
    )


_SEVERITY = {Verdict.TRIP: 3, Verdict.FAILURE: 2, Verdict.NONE: 1, Verdict.SUCCESS: 0}


def worst(*verdicts: Verdict) -> Verdict:
    """The verdict of a probe whose modes said `verdicts`: the worst of them (a mode that
    says nothing makes the whole say nothing unless another failed)."""
    return max(verdicts, key=_SEVERITY.__getitem__)


def probe_outcome(error: ProviderError, provider: ProviderConfig) -> ProbeOutcome:
    """The outcome of a probe that failed with `error` (see the module docstring)."""
    failure = classify(error, provider)
    verdict = failure.verdict
    if error.kind is ErrorKind.INVALID_INPUT:
        verdict = Verdict.FAILURE  # a one-word prompt refused: no call would get through
    return ProbeOutcome(failure.error.reason, verdict)


def probe_timeout(
    provider: ProviderConfig, limit: float, remaining: float | None
) -> tuple[float, bool]:
    """How long a probe of `provider` may take with `limit` (the configured bound) and
    `remaining` seconds of the caller's deadline (None: no deadline), and whether the
    caller's deadline is what bounds it."""
    own = limit
    if provider.total_timeout_ms > 0:
        own = min(own, provider.total_timeout_ms / 1000)
    if remaining is not None and remaining - DEADLINE_MARGIN_SECONDS < own:
        return max(0.0, remaining - DEADLINE_MARGIN_SECONDS), True
    return own, False


def judge(circuit: Circuit, permit: Permit | None, verdict: Verdict) -> None:
    """Give the circuit the probe's verdict (see the module docstring)."""
    if permit is None:
        if verdict is not Verdict.NONE:
            circuit.healthy = verdict is Verdict.SUCCESS
        return
    if verdict is Verdict.SUCCESS:
        circuit.record_success(permit)
    elif verdict is Verdict.FAILURE:
        circuit.record_failure(permit)
    elif verdict is Verdict.TRIP:
        circuit.trip(permit)
    else:
        circuit.release(permit)


async def _call(
    engine: Engine, provider: ProviderConfig, seconds: float, by_caller: bool, stream: bool
) -> tuple[ProbeOutcome, int | None]:
    """Run one mode's call, for at most `seconds`: its outcome and the tokens it used
    (None: unknown)."""
    try:
        async with asyncio.timeout(seconds):
            async with aclosing(engine.stream(probe_request(stream))) as events:
                used = None
                async for event in events:
                    if isinstance(event, Finish):
                        used = event.input_tokens + event.output_tokens
        return OK, used
    except ProviderError as error:
        return probe_outcome(error, provider), None
    except TimeoutError:
        timed_out = ProviderTimeout(f"{provider.name}: no answer to the probe in {seconds:.1f} s")
        outcome = probe_outcome(timed_out, provider)
        # Cut short by the caller's deadline, the probe says nothing of the provider.
        return (ProbeOutcome(outcome.error_reason, Verdict.NONE) if by_caller else outcome), None
    except SagaError as error:
        return ProbeOutcome(error.reason, Verdict.NONE), None
    except Exception:
        # An engine's bug: report it, and keep the other providers' probes going.
        log.exception("probe failed unexpectedly", extra={"provider": provider.name})
        return ProbeOutcome(INTERNAL, Verdict.NONE), None


async def probe(
    state: ProviderState, engine: Engine, *, limit: float, remaining: float | None = None
) -> ProbeResult:
    """Probe one provider in both modes and give its circuit the verdict; `limit` and
    `remaining` as in `probe_timeout` (the caller's deadline covers both modes)."""
    provider = state.config
    if provider.credential == "oauth_user":
        return ProbeResult(provider.name, False, 0, SKIPPED_PER_USER_CREDENTIAL)
    request = probe_request(stream=True)
    permit = state.circuit.allow()
    try:
        # One lease for both calls, which run one after the other: one slot, both's tokens.
        lease = await state.limits.acquire(2 * (estimate_input_tokens(request) + PROBE_MAX_TOKENS))
    except LimitReached:
        if permit is not None:
            state.circuit.release(permit)
        return ProbeResult(provider.name, False, 0, LIMIT_REACHED)
    except asyncio.CancelledError:
        if permit is not None:
            state.circuit.release(permit)  # a half-open circuit's probe permit must not be lost
        raise
    loop = asyncio.get_running_loop()
    deadline = None if remaining is None else loop.time() + remaining
    modes: dict[bool, tuple[ProbeOutcome, ModeResult]] = {}
    used: int | None = 0
    verdict = Verdict.NONE
    try:
        for stream in (True, False):
            left = None if deadline is None else deadline - loop.time()
            timeout, by_caller = probe_timeout(provider, limit, left)
            first = modes.get(True)
            if first is not None and (
                first[0].verdict is Verdict.TRIP or (by_caller and timeout <= 0)
            ):
                modes[stream] = (
                    ProbeOutcome(NOT_PROBED, Verdict.NONE),
                    ModeResult(False, 0, NOT_PROBED),
                )
                continue
            started = time.monotonic()
            outcome, tokens = await _call(engine, provider, timeout, by_caller, stream)
            used = None if used is None or tokens is None else used + tokens
            latency = ms(time.monotonic() - started)
            modes[stream] = (
                outcome,
                ModeResult(not outcome.error_reason, latency, outcome.error_reason),
            )
        verdict = worst(*(outcome.verdict for outcome, _ in modes.values()))
    finally:
        lease.release(used)
        judge(state.circuit, permit, verdict)  # cancelled: no verdict
    (stream_outcome, stream_result), (complete_outcome, complete_result) = modes[True], modes[False]
    reason = stream_outcome.error_reason or complete_outcome.error_reason
    return ProbeResult(
        provider.name,
        stream_result.ok and complete_result.ok,
        stream_result.latency_ms,
        reason,
        stream=stream_result,
        complete=complete_result,
    )


class HealthChecks:
    """The router's active probes: on demand (`check`) and periodic (`run_periodic`, a
    background task of the host)."""

    def __init__(
        self,
        providers: Sequence[ProviderConfig],
        engines: Mapping[str, Engine],
        resilience: Resilience,
        config: RouterConfig,
    ) -> None:
        self._providers = tuple(providers)
        self._engines = engines
        self._resilience = resilience
        self._limit = config.health_check_timeout_seconds
        self._interval = config.health_check_interval_seconds
        self._slots = asyncio.Semaphore(config.health_check_concurrency)

    def select(self, names: Sequence[str]) -> list[ProviderConfig]:
        """The providers `names` asks for (all when empty; each once, in the order named);
        raise InvalidArgument for too many names or an unknown one."""
        if not names:
            return list(self._providers)
        if len(names) > MAX_NAMES:
            raise InvalidArgument(
                f"at most {MAX_NAMES} provider names, got {len(names)}",
                reason="CHECK_REQUEST_INVALID",
                field_violations=[FieldViolation("providers", f"over {MAX_NAMES} names")],
            )
        by_name = {p.name: p for p in self._providers}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            shown = ", ".join(n[:128] for n in unknown[:_SHOWN])
            raise InvalidArgument(
                f"unknown provider(s): {shown}",
                reason="UNKNOWN_PROVIDER",
                field_violations=[FieldViolation("providers", f"not configured: {shown}")],
            )
        return [by_name[n] for n in dict.fromkeys(names)]

    async def check(
        self, providers: Sequence[ProviderConfig], *, deadline: float | None = None
    ) -> list[ProbeResult]:
        """Probe `providers`, at most `health_check_concurrency` at once across every check
        in progress; `deadline` is the caller's, in event-loop time. Results in their order."""
        return list(await asyncio.gather(*(self._probe(p, deadline) for p in providers)))

    async def _probe(self, provider: ProviderConfig, deadline: float | None) -> ProbeResult:
        async with self._slots:
            remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
            result = await probe(
                self._resilience.states[provider.name],
                self._engines[provider.name],
                limit=self._limit,
                remaining=remaining,
            )
        level = logging.INFO if result.ok else logging.WARNING
        log.log(
            level,
            "provider probed",
            extra={
                "provider": result.provider,
                "ok": result.ok,
                "reason": result.error_reason,
                "latency_ms": result.latency_ms,
            },
        )
        return result

    @property
    def periodic(self) -> bool:
        """Whether periodic probes are configured (`health_check_interval_seconds` > 0)."""
        return self._interval > 0

    async def run_periodic(self) -> None:
        """Probe every provider each `health_check_interval_seconds`, until cancelled (a
        probe in flight then releases its circuit permit)."""
        while True:
            # First wait, then probe: a router just started is not held up by its probes.
            await asyncio.sleep(self._interval)
            try:
                await self.check(self._providers)
            except Exception:
                log.exception("periodic health check failed")
