"""The circuit breaker: opens on consecutive failures or a failure ratio, refuses calls for
the cooldown, lets exactly one probe through, and ignores verdicts from before a change."""

from __future__ import annotations

from services.common.circuit import Circuit, CircuitSettings, CircuitState, Permit
from tests.clock import Clock

SETTINGS = CircuitSettings(
    consecutive_failures=3,
    failure_ratio=0.5,
    min_calls=10,
    window_seconds=30,
    cooldown_seconds=5,
)


def admitted(circuit: Circuit) -> Permit:
    permit = circuit.allow()
    assert permit is not None
    return permit


def fail(circuit: Circuit, times: int = 1) -> None:
    for _ in range(times):
        circuit.record_failure(admitted(circuit))


def succeed(circuit: Circuit, times: int = 1) -> None:
    for _ in range(times):
        circuit.record_success(admitted(circuit))


def test_consecutive_failures_open_the_circuit() -> None:
    clock = Clock()
    circuit = Circuit(SETTINGS, clock)
    fail(circuit, 2)
    assert circuit.state is CircuitState.CLOSED
    fail(circuit)
    assert circuit.state is CircuitState.OPEN
    assert circuit.allow() is None
    assert circuit.retry_after() == 5
    assert not circuit.healthy


def test_a_success_resets_the_consecutive_count() -> None:
    only_consecutive = CircuitSettings(consecutive_failures=3, failure_ratio=1.0, min_calls=10)
    circuit = Circuit(only_consecutive, Clock())
    for _ in range(5):
        fail(circuit, 2)
        succeed(circuit)
    assert circuit.state is CircuitState.CLOSED
    fail(circuit, 3)
    assert circuit.state is CircuitState.OPEN


def test_alternating_failures_under_the_ratio_keep_it_closed() -> None:
    circuit = Circuit(SETTINGS, Clock())
    for _ in range(10):
        fail(circuit)
        succeed(circuit, 2)
    assert circuit.state is CircuitState.CLOSED  # 1 in 3 failed, never 3 in a row


def test_the_failure_ratio_opens_it_once_enough_calls_were_seen() -> None:
    clock = Clock()
    circuit = Circuit(SETTINGS, clock)
    for _ in range(4):
        fail(circuit, 1)
        succeed(circuit, 1)
    assert circuit.state is CircuitState.CLOSED  # 50 % of 8 calls: under min_calls
    fail(circuit)
    succeed(circuit)
    assert circuit.state is CircuitState.CLOSED  # 5 of 10: but the last call succeeded
    fail(circuit)
    assert circuit.state is CircuitState.OPEN  # 6 of 11


def test_old_failures_leave_the_window() -> None:
    clock = Clock()
    circuit = Circuit(SETTINGS, clock)
    for _ in range(5):
        fail(circuit, 2)
        succeed(circuit)
        clock.now += 10  # spread over 50 s: at most 3 rounds (9 calls) in any 30 s
    assert circuit.state is CircuitState.CLOSED


def test_after_the_cooldown_exactly_one_probe_is_let_through() -> None:
    clock = Clock()
    circuit = Circuit(SETTINGS, clock)
    fail(circuit, 3)
    clock.now += 4.9
    assert circuit.allow() is None
    clock.now += 0.1
    assert circuit.state is CircuitState.HALF_OPEN
    probe = admitted(circuit)
    assert probe.probe
    assert circuit.allow() is None  # one probe at a time
    circuit.record_success(probe)
    assert circuit.state is CircuitState.CLOSED
    assert circuit.healthy
    assert not admitted(circuit).probe


def test_a_failed_probe_opens_it_for_another_cooldown() -> None:
    clock = Clock()
    circuit = Circuit(SETTINGS, clock)
    fail(circuit, 3)
    clock.now += 5
    circuit.record_failure(admitted(circuit))
    assert circuit.state is CircuitState.OPEN
    assert circuit.retry_after() == 5


def test_a_released_probe_lets_the_next_call_probe() -> None:
    clock = Clock()
    circuit = Circuit(SETTINGS, clock)
    fail(circuit, 3)
    clock.now += 5
    circuit.release(admitted(circuit))
    assert admitted(circuit).probe


def test_trip_opens_at_once() -> None:
    circuit = Circuit(SETTINGS, Clock())
    circuit.trip(admitted(circuit))
    assert circuit.state is CircuitState.OPEN


def test_verdicts_on_permits_from_before_a_change_are_ignored() -> None:
    clock = Clock()
    circuit = Circuit(SETTINGS, clock)
    slow = admitted(circuit)  # began while closed
    fail(circuit, 3)
    clock.now += 5
    probe = admitted(circuit)
    circuit.record_success(slow)  # must not close the half-open circuit
    assert circuit.state is CircuitState.HALF_OPEN
    circuit.record_failure(slow)
    assert circuit.state is CircuitState.HALF_OPEN
    circuit.record_success(probe)
    assert circuit.state is CircuitState.CLOSED


def test_every_transition_is_announced() -> None:
    clock = Clock()
    circuit = Circuit(SETTINGS, clock)
    seen: list[CircuitState] = []
    circuit.on_change = seen.append
    fail(circuit, 3)
    clock.now += 5
    succeed(circuit)
    assert seen == [CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED]
