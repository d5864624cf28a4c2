"""The router's live view of each provider: its circuit, its retry budget, its limits, the
context window it stated.

One `ProviderState` per configured provider, made once per process and shared by every call
(they only make sense across calls). Circuit transitions are logged here, where the provider's
name is known.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.common.backoff import Backoff
from services.common.circuit import Circuit, CircuitSettings, CircuitState
from services.common.config import ProviderConfig, RouterConfig
from services.router.context_windows import LearnedWindow
from services.router.limits import ProviderLimits
from services.router.retries import RetryBudget, rate_limit_backoff, retry_backoff

log = logging.getLogger("saga.router.resilience")


@dataclass(frozen=True)
class ProviderState:
    """What the router knows of one provider between calls."""

    config: ProviderConfig
    circuit: Circuit
    retries: RetryBudget
    limits: ProviderLimits
    window: LearnedWindow
    """The context window the provider stated in its last context-length error."""


@dataclass(frozen=True)
class Resilience:
    """Every provider's state plus the retry backoff: what `reasoning` needs besides the
    call itself."""

    states: dict[str, ProviderState]
    backoff: Backoff
    on_refusal: Callable[[str, str], None] | None = None
    """Told (provider, reason) when a candidate is passed over without a call (metrics)."""
    rate_limit_backoff: Backoff | None = None
    """The wait before retrying a 429 without Retry-After (None: `backoff`'s)."""

    @classmethod
    def build(
        cls,
        providers: Sequence[ProviderConfig],
        config: RouterConfig,
        clock: Callable[[], float] = time.monotonic,
        on_refusal: Callable[[str, str], None] | None = None,
    ) -> Resilience:
        """Fresh state (circuits closed, budgets full) for `providers`."""
        settings = CircuitSettings.from_config(config)
        states = {}
        for p in providers:
            circuit = Circuit(settings, clock)
            circuit.on_change = _logger(p.name)
            states[p.name] = ProviderState(
                config=p,
                circuit=circuit,
                retries=RetryBudget.from_config(config, clock),
                limits=ProviderLimits(p, config.concurrency_wait_ms / 1000, clock),
                window=LearnedWindow(clock),
            )
        return cls(states, retry_backoff(config), on_refusal, rate_limit_backoff(config))

    def refused(self, provider: str, reason: str) -> None:
        """Note that `provider` was passed over for `reason` (CIRCUIT_OPEN, …)."""
        if self.on_refusal is not None:
            self.on_refusal(provider, reason)

    def circuit_states(self) -> dict[str, CircuitState]:
        """Each provider's circuit state now."""
        return {name: s.circuit.state for name, s in self.states.items()}


def _logger(provider: str) -> Callable[[CircuitState], None]:
    def changed(state: CircuitState) -> None:
        level = logging.WARNING if state is CircuitState.OPEN else logging.INFO
        log.log(level, "circuit %s", state.name.lower(), extra={"provider": provider})

    return changed
