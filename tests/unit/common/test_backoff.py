"""Reconnect backoff: doubling to a cap, jittered to 50-100 %."""

from __future__ import annotations

from services.common.backoff import reconnect_delay


def test_reconnect_delay_doubles_up_to_the_cap_with_jitter() -> None:
    for failures, full in ((1, 0.2), (2, 0.4), (3, 0.8), (10, 5.0)):
        delays = [reconnect_delay(failures, 0.2, 5.0) for _ in range(200)]
        assert all(full * 0.5 <= d <= full for d in delays)
        assert max(delays) - min(delays) > full * 0.2  # jittered, not constant
