"""Relaying a router event by prefixing the step id gives exactly the chain response a
protobuf encoder would have built."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from saga.execution.v1 import events_pb2, reason_events_pb2
from saga.router.v1 import router_pb2
from saga.runtime.v1 import runtime_pb2
from services.runtime import wire


@given(step_id=st.text(max_size=80), text=st.text(max_size=300), sequence=st.integers(1, 2**40))
def test_a_router_delta_becomes_a_token_with_its_step_id(
    step_id: str, text: str, sequence: int
) -> None:
    raw = router_pb2.ReasonResponse(delta=reason_events_pb2.Delta(text=text)).SerializeToString()
    split = wire.single_field(raw)
    assert split is not None
    field, payload = split
    assert field == wire.TOKEN
    relayed = runtime_pb2.RunPatternResponse.FromString(
        wire.step_event(field, step_id, payload, sequence)
    )
    assert relayed == runtime_pb2.RunPatternResponse(
        token=events_pb2.Token(step_id=step_id, text=text), sequence=sequence
    )


def test_a_router_switch_becomes_provider_switched() -> None:
    switched = reason_events_pb2.Switched(
        from_provider="sim-fast", to_provider="sim-smart", reason="PROVIDER_UNAVAILABLE"
    )
    raw = router_pb2.ReasonResponse(switched=switched).SerializeToString()
    split = wire.single_field(raw)
    assert split is not None
    relayed = runtime_pb2.RunPatternResponse.FromString(
        wire.step_event(split[0], "answer", split[1], 7)
    )
    assert relayed.WhichOneof("event") == "provider_switched"
    assert relayed.provider_switched == events_pb2.ProviderSwitched(
        step_id="answer",
        from_provider="sim-fast",
        to_provider="sim-smart",
        reason="PROVIDER_UNAVAILABLE",
    )
    assert relayed.sequence == 7


def test_a_router_skip_becomes_providers_skipped() -> None:
    skip = reason_events_pb2.SkippedProvider(
        provider="down", reason="CIRCUIT_OPEN", retry_after_ms=1500
    )
    raw = router_pb2.ReasonResponse(
        skipped=reason_events_pb2.Skipped(providers=[skip])
    ).SerializeToString()
    split = wire.single_field(raw)
    assert split is not None
    assert split[0] in wire.RELAYED_FIELDS
    relayed = runtime_pb2.RunPatternResponse.FromString(
        wire.step_event(split[0], "answer", split[1], 3)
    )
    assert relayed.WhichOneof("event") == "providers_skipped"
    assert relayed.providers_skipped == events_pb2.ProvidersSkipped(
        step_id="answer", providers=[skip]
    )


def test_messages_that_are_not_one_length_delimited_field_are_not_split() -> None:
    final = router_pb2.ReasonResponse(final=reason_events_pb2.Final(provider="p"))
    assert wire.single_field(final.SerializeToString()) is not None  # one field: split fine
    assert wire.single_field(b"") is None
    assert wire.single_field(b"\x08\x01") is None  # a varint field
    assert wire.single_field(b"\x1a\x05ab") is None  # truncated
    assert wire.single_field(b"\x1a\x01a\x1a\x01b") is None  # two fields


def test_varints_match_protobuf() -> None:
    for value in (1, 127, 128, 300, 2**32, 2**63 - 1):
        encoded = runtime_pb2.RunPatternResponse(sequence=value).SerializeToString()
        assert encoded == b"\x80\x01" + wire.varint(value)
