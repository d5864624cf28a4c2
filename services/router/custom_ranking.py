"""A STRATEGY_CUSTOM call with the caller's own weights, ranked by the optimizer's `Rank`.

The hot path ranks from the `WatchRankings` snapshot, which holds one ranking per strategy —
for CUSTOM, the operator's configured weights. A caller's own weights cannot be read from
it, so such a call asks the optimizer (router → optimizer `Rank` is in the call matrix): one
unary call before the first attempt, with the call's candidates and token estimates, so the
scoring stays the optimizer's one mechanism (docs/architecture.md, "One mechanism for each
thing"). Only calls that pass weights pay for it.

The router fails closed: an optimizer it cannot reach ends the call with UNAVAILABLE
`RANKING_UNAVAILABLE` rather than rank by weights the caller did not ask for. The
optimizer's own refusals (e.g. `WEIGHTS_INVALID`) reach the caller unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc

from saga.execution.v1 import common_pb2
from saga.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc, ranking_pb2
from services.common.errors import Unavailable
from services.router.budget_reservations import UNREACHABLE
from services.router.calls import CustomWeights, ReasonCall
from services.router.engines.base import estimate_input_tokens

log = logging.getLogger("saga.router.custom_ranking")

RANK_TIMEOUT_SECONDS = 2.0


class CustomRanker:
    """Ranks calls by their own CUSTOM weights with the optimizer's `Rank`."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = optimizer_pb2_grpc.OptimizerServiceStub(channel)

    async def rank(
        self, weights: CustomWeights, candidates: Sequence[str], call: ReasonCall
    ) -> list[str]:
        """`candidates` best first by `weights` (excluded ones left out)."""
        request = call.engine_request()
        try:
            reply = await self._stub.Rank(
                optimizer_pb2.RankRequest(
                    strategy=common_pb2.STRATEGY_CUSTOM,
                    weights=ranking_pb2.Weights(
                        cost=weights.cost,
                        latency=weights.latency,
                        quality=weights.quality,
                        reliability=weights.reliability,
                    ),
                    candidates=list(candidates),
                    estimated_input_tokens=estimate_input_tokens(request),
                    estimated_output_tokens=request.max_tokens,
                ),
                timeout=RANK_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() not in UNREACHABLE:
                raise
            log.warning(
                "custom ranking failed: optimizer unreachable", extra={"code": error.code().name}
            )
            raise Unavailable(
                "the call's CUSTOM weights cannot be ranked now",
                reason="RANKING_UNAVAILABLE",
                retry_after=1.0,
            ) from None
        return [r.provider for r in reply.ranked]
