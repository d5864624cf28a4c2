"""`saga models`: the model names the OpenAI-compatible API takes (what `GET /v1/models`
lists), with their kind (provider model, alias, group) and the providers each may use."""

from __future__ import annotations

import argparse

import grpc

from clients.cli import arguments
from clients.cli.output import table, to_json
from clients.cli.settings import Metadata
from saga.gateway.v1 import models_pb2, models_pb2_grpc

_KINDS = {
    models_pb2.MODEL_KIND_PROVIDER: "provider",
    models_pb2.MODEL_KIND_ALIAS: "alias",
    models_pb2.MODEL_KIND_GROUP: "group",
}


def add_parser(sub: argparse._SubParsersAction[arguments.Parser], common: arguments.Parser) -> None:
    """Register `saga models`."""
    sub.add_parser("models", parents=[common], help="the model names /v1/chat/completions takes")


async def models(channel: grpc.aio.Channel, args: argparse.Namespace, md: Metadata) -> int:
    """`saga models`: ModelService.ListModels."""
    reply = await models_pb2_grpc.ModelServiceStub(channel).ListModels(
        models_pb2.ListModelsRequest(), metadata=md, timeout=30
    )
    if args.json:
        print(to_json(reply))
        return 0
    rows = [
        (
            m.id,
            _KINDS.get(m.kind, "?"),
            ", ".join(m.providers) if m.kind != models_pb2.MODEL_KIND_ALIAS else "all",
            m.description,
        )
        for m in reply.models
    ]
    print(table(("MODEL", "KIND", "PROVIDERS", "DESCRIPTION"), rows))
    return 0
