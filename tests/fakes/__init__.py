"""Fakes of the upstreams Saga calls: real servers on loopback that speak their wire formats."""
