"""`saga.gateway.v1.UsageService`: tokens and cost for the caller, or anyone with
`usage:read:all`, relayed to the optimizer's usage ledger; and what is left of a budget
(the caller's own, or anyone's with `usage:read:all` or `admin`), relayed to its books."""

from __future__ import annotations

from saga.gateway.v1 import usage_pb2, usage_pb2_grpc
from services.common.guard import Context
from services.gateway.edge import Edge
from services.gateway.relay import Relay

_GET_USAGE = "/saga.optimizer.v1.OptimizerService/GetUsage"
_GET_BUDGET = "/saga.optimizer.v1.OptimizerService/GetBudget"


class UsageServicer(usage_pb2_grpc.UsageServiceServicer):
    """GetUsage with the scope rules of SPEC 3.1."""

    def __init__(self, edge: Edge, relay: Relay) -> None:
        self._edge = edge
        self._relay = relay

    async def GetUsage(
        self, request: usage_pb2.GetUsageRequest, context: Context
    ) -> usage_pb2.GetUsageResponse:
        """Own usage with `usage:read`; another user's or everyone's with `usage:read:all`."""
        principal = await self._edge.principal(context)
        principal.require("usage:read")
        asked = usage_pb2.GetUsageRequest()
        asked.CopyFrom(request)
        if request.all_users or (request.user_id and request.user_id != principal.user_id):
            principal.require("usage:read:all")
        elif not request.user_id:
            asked.user_id = principal.user_id
        response: usage_pb2.GetUsageResponse = await self._relay.unary(
            _GET_USAGE, usage_pb2.GetUsageResponse, asked, principal
        )
        return response

    async def GetBudget(
        self, request: usage_pb2.GetBudgetRequest, context: Context
    ) -> usage_pb2.GetBudgetResponse:
        """Own budget with `usage:read`; another user's with `usage:read:all` or `admin`."""
        principal = await self._edge.principal(context)
        asked = usage_pb2.GetBudgetRequest(user_id=request.user_id or principal.user_id)
        if asked.user_id != principal.user_id:
            if "admin" not in principal.scopes:
                principal.require("usage:read:all")
        else:
            principal.require("usage:read")
        response: usage_pb2.GetBudgetResponse = await self._relay.unary(
            _GET_BUDGET, usage_pb2.GetBudgetResponse, asked, principal
        )
        return response
