"""The freshness gate (SPEC 3.1): whether a run that reads pack data may start on the pack
that serves its asof. One rule, applied by the gateway on its cached pack health (the cheap,
early refusal) and by the runtime on the pack it pins (so a pack that changed inside the
gateway's cache second cannot slip through).

    no pack            FAILED_PRECONDITION PACK_MISSING
    WARMING            UNAVAILABLE PACK_WARMING (+RetryInfo; metadata estimatedReady)
    ERROR              FAILED_PRECONDITION PACK_RECONCILIATION_FAILED
    STALE              FAILED_PRECONDITION PACK_STALE, unless allow_stale_pack (whose scope
                       `pack:stale` the gateway checks)
    FRESH              the run starts
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from services.common.errors import FailedPrecondition, Unavailable

MIN_RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class PackState:
    """What the gate needs to know of the pack serving a run."""

    status: str  # FRESH, WARMING, STALE, ERROR; "" when no pack serves the date
    pack_id: str
    asof: str  # the run's
    pack_asof: str = ""
    estimated_ready: datetime.datetime | None = None


def check_fresh(state: PackState, allow_stale: bool, now: datetime.datetime) -> None:
    """Raise the gate's refusal for `state`; return when the run may start."""
    meta = {"packId": state.pack_id, "asof": state.asof}
    if state.status == "FRESH" or (state.status == "STALE" and allow_stale):
        return
    if state.status == "WARMING":
        ready = state.estimated_ready
        wait = (ready - now).total_seconds() if ready is not None else 0.0
        if ready is not None:
            meta["estimatedReady"] = ready.astimezone(datetime.UTC).isoformat()
        raise Unavailable(
            f"pricing pack {state.pack_id} for {state.asof} is still warming",
            reason="PACK_WARMING",
            metadata=meta,
            retry_after=max(wait, MIN_RETRY_SECONDS),
        )
    if state.status == "ERROR":
        raise FailedPrecondition(
            f"pricing pack {state.pack_id} for {state.asof} failed reconciliation "
            "(see its health); publish a corrected pack",
            reason="PACK_RECONCILIATION_FAILED",
            metadata=meta,
        )
    if state.status == "STALE":
        raise FailedPrecondition(
            f"the newest pricing pack for {state.asof} is {state.pack_id} of {state.pack_asof}, "
            "older than the maximum age; publish a newer pack, or set allow_stale_pack "
            "(scope pack:stale)",
            reason="PACK_STALE",
            metadata={**meta, "packAsof": state.pack_asof},
        )
    raise FailedPrecondition(
        f"no pricing pack serves {state.asof}: publish one (saga packs publish)",
        reason="PACK_MISSING",
        metadata={"asof": state.asof},
    )
