"""A circuit breaker: stop calling what keeps failing, try again later. The router keeps one
per provider (services/router/resilience.py), the runtime one per agent
(services/runtime/agent_circuits.py); both expose their states with `CircuitCollector`.

CLOSED: calls flow; each verdict is counted. The circuit OPENS after `consecutive_failures`
failures in a row, or when at least `min_calls` calls ended in the last `window_seconds` and
`failure_ratio` of them failed — whether or not the provider has company in its group (a
provider alone must trip too, or its callers keep waiting on a dead upstream). An
authentication failure opens it at once (`trip`): every call would fail the same way.

OPEN: calls are refused until `cooldown_seconds` have passed; `retry_after` says how long.
HALF_OPEN (after the cooldown): exactly one call — the probe — is let through; its success
closes the circuit (counts start afresh), its failure opens it for another cooldown. A probe
that ends without a verdict (the caller went away, the input was refused) is `release`d so
the next call probes instead.

Each admitted call holds a `Permit` of the circuit's current generation; a verdict on a permit
of an older generation (a slow call that began before the circuit opened) is ignored, so it
cannot close or reopen a circuit it knows nothing about. Pure: the clock is injected.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.common.config import RouterConfig
from services.common.windows import SlidingCounts


class CircuitState(enum.Enum):
    """Values mirror saga.router.v1.CircuitState (and the `saga_router_circuit_state` gauge)."""

    CLOSED = 1
    OPEN = 2
    HALF_OPEN = 3


@dataclass(frozen=True)
class CircuitSettings:
    """When a circuit opens and for how long (RouterConfig `circuit_*`)."""

    consecutive_failures: int = 5
    failure_ratio: float = 0.5
    min_calls: int = 10
    window_seconds: float = 30.0
    cooldown_seconds: float = 30.0

    @classmethod
    def from_config(cls, config: RouterConfig) -> CircuitSettings:
        """The settings of a router configuration."""
        return cls(
            consecutive_failures=config.circuit_consecutive_failures,
            failure_ratio=config.circuit_failure_ratio,
            min_calls=config.circuit_min_calls,
            window_seconds=config.circuit_window_seconds,
            cooldown_seconds=config.circuit_cooldown_seconds,
        )


@dataclass(frozen=True)
class Permit:
    """Admission of one call; hand it back with the call's verdict."""

    generation: int
    probe: bool


class Circuit:
    """The breaker of one provider (see the module docstring)."""

    def __init__(
        self, settings: CircuitSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._generation = 0
        self._consecutive = 0
        self._window = SlidingCounts(settings.window_seconds, ("calls", "failures"))
        self._open_until = 0.0
        self._probing = False
        self.healthy = True
        """Whether the most recent verdict was a success (ListProviders' `healthy`)."""
        self.on_change: Callable[[CircuitState], None] | None = None
        """Called with the new state on every transition (metrics, logs)."""

    @property
    def state(self) -> CircuitState:
        """The state now: an OPEN circuit whose cooldown has passed reads HALF_OPEN."""
        if self._state is CircuitState.OPEN and self._clock() >= self._open_until:
            return CircuitState.HALF_OPEN
        return self._state

    def retry_after(self) -> float:
        """Seconds until a call may be admitted (0 when one may be now)."""
        if self._state is CircuitState.OPEN:
            return max(0.0, self._open_until - self._clock())
        if self._state is CircuitState.HALF_OPEN and self._probing:
            # The probe's verdict decides; a caller cannot know when, so suggest a short wait.
            return min(1.0, self._settings.cooldown_seconds)
        return 0.0

    def allow(self) -> Permit | None:
        """Admit a call, or None while the circuit refuses calls."""
        if self._state is CircuitState.OPEN:
            if self._clock() < self._open_until:
                return None
            self._move(CircuitState.HALF_OPEN)
        if self._state is CircuitState.HALF_OPEN:
            if self._probing:
                return None
            self._probing = True
            return Permit(self._generation, probe=True)
        return Permit(self._generation, probe=False)

    def record_success(self, permit: Permit) -> None:
        """The admitted call succeeded (the provider answered)."""
        if permit.generation != self._generation:
            return
        self.healthy = True
        if permit.probe:
            self._probing = False
            self._close()
            return
        self._consecutive = 0
        self._window.add(self._clock(), "calls")

    def record_failure(self, permit: Permit) -> None:
        """The admitted call failed in a way that says the provider is unwell."""
        if permit.generation != self._generation:
            return
        self.healthy = False
        if permit.probe:
            self._probing = False
            self._open()
            return
        now = self._clock()
        self._consecutive += 1
        self._window.add(now, "calls")
        self._window.add(now, "failures")
        calls = self._window.total(now, "calls")
        failures = self._window.total(now, "failures")
        s = self._settings
        if self._consecutive >= s.consecutive_failures or (
            calls >= s.min_calls and failures >= s.failure_ratio * calls
        ):
            self._open()

    def release(self, permit: Permit) -> None:
        """The admitted call ended without a verdict on the provider."""
        if permit.generation == self._generation and permit.probe:
            self._probing = False

    def trip(self, permit: Permit | None = None) -> None:
        """Open now (an authentication failure: every call would fail alike)."""
        if permit is not None and permit.generation != self._generation:
            return
        self.healthy = False
        self._probing = False
        self._open()

    def _open(self) -> None:
        self._open_until = self._clock() + self._settings.cooldown_seconds
        self._move(CircuitState.OPEN)

    def _close(self) -> None:
        self._consecutive = 0
        self._window.clear()
        self._move(CircuitState.CLOSED)

    def _move(self, state: CircuitState) -> None:
        self._state = state
        self._generation += 1
        if self.on_change is not None:
            self.on_change(state)


class CircuitCollector(Collector):
    """A gauge of circuit states by `label` (1 closed, 2 open, 3 half-open), read from the
    live circuits at scrape time: an open circuit whose cooldown has passed shows as
    half-open without any call having touched it."""

    def __init__(
        self, name: str, label: str, what: str, states: Callable[[], Mapping[str, CircuitState]]
    ) -> None:
        self._name, self._label, self._what, self._states = name, label, what, states

    def collect(self) -> Iterator[Metric]:
        """One sample per circuit."""
        gauge = GaugeMetricFamily(
            self._name,
            f"Circuit state per {self._what}: 1 closed, 2 open, 3 half-open.",
            labels=[self._label],
        )
        for name, state in sorted(self._states().items()):
            gauge.add_metric([name], state.value)
        yield gauge
