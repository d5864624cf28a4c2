"""`saga.gateway.v1.ModelService`: the model names an OpenAI-compatible call may send, and
what each stands for, from the configuration every service reads (scope `execute`).

* a provider's model (`[[providers]].model`): the providers that serve it, in the
  configuration's order (fallback among them only);
* a routing alias, `saga/<strategy>` (`saga/cheapest`, `saga/fastest`, ...): every provider,
  ranked by that strategy; `saga/default` ranks by the operator's default strategy;
* an operator's group (`[[gateway.model_groups]]`): its providers only, tried in its order.

`route` turns a name into the Execute options that make the runtime's LLM step use those
providers; the router does the ranking and the fallback as for any run."""

from __future__ import annotations

from saga.execution.v1 import options_pb2
from saga.gateway.v1 import models_pb2, models_pb2_grpc
from services.common.config import MODEL_ALIAS_PREFIX, Config
from services.common.errors import FieldViolation, NotFound
from services.common.guard import Context
from services.common.strategy import Strategy
from services.common.strategy_proto import TO_PROTO
from services.gateway.edge import Edge

DEFAULT_ALIAS = MODEL_ALIAS_PREFIX + "default"
_ALIAS_STRATEGIES = {
    DEFAULT_ALIAS: None,
    **{MODEL_ALIAS_PREFIX + s.value: s for s in Strategy if s is not Strategy.CUSTOM},
}


def catalog(config: Config) -> list[models_pb2.Model]:
    """Every model name of `config`, provider models first, then aliases, then groups."""
    models: list[models_pb2.Model] = []
    served: dict[str, list[str]] = {}
    for provider in config.providers:
        served.setdefault(provider.model, []).append(provider.name)
    for model, providers in served.items():
        models.append(
            models_pb2.Model(
                id=model,
                kind=models_pb2.MODEL_KIND_PROVIDER,
                providers=providers,
                description=f"served by {', '.join(providers)}",
            )
        )
    everyone = [p.name for p in config.providers]
    for alias, strategy in _ALIAS_STRATEGIES.items():
        name = strategy.value if strategy else ""
        models.append(
            models_pb2.Model(
                id=alias,
                kind=models_pb2.MODEL_KIND_ALIAS,
                providers=everyone,
                strategy=name,
                description=f"every provider, ranked {name or 'by the default strategy'}",
            )
        )
    for group in config.gateway.model_groups:
        models.append(
            models_pb2.Model(
                id=group.name,
                kind=models_pb2.MODEL_KIND_GROUP,
                providers=group.providers,
                description=group.description or f"{' then '.join(group.providers)}",
            )
        )
    return models


def model_not_found(name: str) -> NotFound:
    """NOT_FOUND MODEL_NOT_FOUND for `name`, naming the `model` field."""
    return NotFound(
        f"the model {name[:128]!r} does not exist; GET /v1/models lists the models",
        reason="MODEL_NOT_FOUND",
        field_violations=[FieldViolation("model", "one of the ids /v1/models lists")],
    )


class ModelCatalog:
    """The configuration's model names, resolved without a call."""

    def __init__(self, config: Config) -> None:
        self.models = catalog(config)
        self._by_id = {m.id: m for m in self.models}
        self._provider_models = {p.name: p.model for p in config.providers}
        self._capabilities = {p.name: p.capabilities for p in config.providers}

    def get(self, name: str) -> models_pb2.Model:
        """The model called `name`; NOT_FOUND MODEL_NOT_FOUND naming `model` otherwise."""
        model = self._by_id.get(name)
        if model is None:
            raise model_not_found(name)
        return model

    def route(self, model: models_pb2.Model) -> options_pb2.ExecuteOptions:
        """The Execute options that route a call to `model`'s providers."""
        if model.kind == models_pb2.MODEL_KIND_ALIAS:
            strategy = _ALIAS_STRATEGIES.get(model.id)
            options = options_pb2.ExecuteOptions()
            if strategy is not None:
                options.strategy = TO_PROTO[strategy]
            return options
        # The model's own providers only, preferred in its order: the router falls back
        # along that order and never to a provider outside it.
        return options_pb2.ExecuteOptions(
            preferred_providers=model.providers, allowed_providers=model.providers
        )

    def capabilities(self, model: models_pb2.Model) -> list[str]:
        """What a call with `model` can ask for (`[[providers]].capabilities`: tools,
        json_output, embeddings, ...): what at least one of its providers can do, since the
        router sends each call only to the providers able to answer it."""
        able = {c for p in model.providers for c in self._capabilities.get(p, ())}
        return sorted(able)

    def model_of(self, provider: str) -> str:
        """The model `provider` serves ("" for a name that is not configured)."""
        return self._provider_models.get(provider, "")


class ModelServicer(models_pb2_grpc.ModelServiceServicer):
    """ListModels: the catalog, for scope `execute`."""

    def __init__(self, edge: Edge, models: ModelCatalog) -> None:
        self._edge = edge
        self._models = models

    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: Context
    ) -> models_pb2.ListModelsResponse:
        """Every model name the gateway resolves."""
        principal = await self._edge.principal(context)
        principal.require("execute")
        return models_pb2.ListModelsResponse(models=self._models.models)
