"""GCRA at the edge: a burst, then the sustained rate, per key."""

from __future__ import annotations

from services.gateway.limits import Gcra, Limit, client_address


def test_burst_then_sustained_rate_per_key() -> None:
    gcra = Gcra(Limit(count=10, period=60, burst=3))  # one every 6 s, 3 at once
    assert [gcra.take("a", now=0) for _ in range(3)] == [0, 0, 0]
    wait = gcra.take("a", now=0)
    assert wait == 6.0
    assert gcra.take("b", now=0) == 0  # another caller is not affected
    assert gcra.take("a", now=5.9) > 0
    assert gcra.take("a", now=6.0) == 0
    assert gcra.take("a", now=6.0) > 0


def test_client_address() -> None:
    assert client_address("ipv4:10.1.2.3:5555") == "10.1.2.3"
    assert client_address("ipv6:[::1]:5555") == "::1"
    assert client_address("unix:/tmp/s") == "unix:/tmp/s"
