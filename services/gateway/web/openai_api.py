"""The OpenAI-compatible API (SPEC 3.1): `POST /v1/chat/completions`, `POST /v1/embeddings`,
`GET /v1/models` and `GET /v1/models/{id}`.

A chat completion is a run of the `chat` pattern (or, with tools or a response format, of
`tool_call`) through `ExecutionServicer.execute_events` (the gRPC door's Execute, decoded): the
same authentication, scopes, freshness gate, budgets, limits, fallback (also mid-stream),
accounting and traces. The request's `model` picks the providers
(`services.gateway.models`); its conversation, tool and sampling fields are the pattern's
inputs (`openai_request`). An embeddings call is a run of the `embed` pattern the same way
(`openai_embeddings`). `/v1/models` is `ModelService.ListModels`.

Tool calls: the model's calls are `message.tool_calls` with `finish_reason: tool_calls`.
On a stream they are `delta.tool_calls` chunks as OpenAI sends them (a call's first chunk
has its index, id, type, name and `arguments: ""`; the next ones fragments of its
arguments), but only once
the answer is complete: a call streamed by a provider that then failed (the router falls
back, `tool_calls_discarded`) or whose arguments the router sent back for not fitting the
schema is void, and OpenAI's chunks cannot take back what a client has accumulated. So the
edge holds the tool-call pieces and sends them after the run completed, as the provider cut
them — never half arguments, never a call the router voided; text still streams as it comes.

The answer is OpenAI's: `model` names the model that finished (the fallback's after a
fallback: the step's StepCompleted says which), `usage` is the run's (every attempt, as
billed), with `prompt_tokens_details.cached_tokens`. Headers: `x-request-id` and
`x-saga-execution-id` (the execution id), `x-saga-provider` and `x-saga-cost-micro-usd`.

A stream opens at the first text (or at the end when none came), so a refusal before any
text — a spent budget, an unknown provider, a rate limit — is an HTTP error with its status,
as the SDKs expect. Chunks are `chat.completion.chunk`s; until a step reports its model,
chunks name the requested model (or, after a switch, the fallback provider's). The last
chunk carries `finish_reason`, then one with `usage` when `stream_options.include_usage`,
then `data: [DONE]`. A run that fails after text was sent ends with `data: {"error": ...}`
(which the SDKs raise) and no `[DONE]`: a truncated answer never looks complete. On a
stream, the cost and provider are in the usage chunk's `saga` object, not headers."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from google.protobuf import json_format

from saga.execution.v1 import events_pb2
from saga.gateway.v1 import execution_pb2, models_pb2
from services.common.errors import SagaError, Unavailable
from services.common.status import status_for
from services.gateway.edge import Edge
from services.gateway.execution import ExecutionServicer
from services.gateway.models import ModelCatalog, ModelServicer, model_not_found
from services.gateway.web import openai_embeddings
from services.gateway.web.calls import headers_of, read_json
from services.gateway.web.context import HttpCallContext
from services.gateway.web.errors import DOMAIN
from services.gateway.web.openai_errors import openai_error, openai_error_response
from services.gateway.web.openai_request import ChatCompletionRequest, parse
from services.gateway.web.openai_tools import openai_calls
from services.gateway.web.sse import EventStream

log = logging.getLogger(__name__)

MODELS_TIMEOUT_SECONDS = 30.0
_MODEL_OWNERS = {models_pb2.MODEL_KIND_ALIAS: "saga", models_pb2.MODEL_KIND_GROUP: "saga"}


@dataclass
class _Answer:
    """What a run's events said so far, in OpenAI's terms."""

    requested: str
    model: str
    catalog: ModelCatalog
    created: int = field(default_factory=lambda: int(time.time()))
    execution_id: str = ""
    provider: str = ""
    finish_reason: str = "stop"
    text: str = ""
    usage: dict[str, Any] | None = None
    cost_micro_usd: int = 0
    completed: bool = False
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """The step's complete calls, in OpenAI's shape (`openai_tools.openai_calls`)."""
    pieces: list[execution_pb2.ExecuteResponse] = field(default_factory=list)
    """The tool-call tokens of the current attempt, held until the answer is complete
    (bounded by the router: at most 65,536 characters of arguments an answer)."""

    def see(self, event: execution_pb2.ExecuteResponse) -> str | None:
        """Take in one event; the text it adds, if any."""
        kind = event.WhichOneof("event")
        if kind == "accepted":
            self.execution_id = event.accepted.execution_id
        elif kind == "token":
            return event.token.text
        elif kind == "tool_call_token":
            self.pieces.append(event)
        elif kind == "provider_switched":
            self.provider = event.provider_switched.to_provider
            self.model = self.catalog.model_of(self.provider) or self.model
            if event.provider_switched.tool_calls_discarded:
                self.pieces.clear()  # void: the next attempt's calls start over
        elif kind == "step_completed":
            step = event.step_completed
            self.provider, self.model = step.provider or self.provider, step.model or self.model
            reason = step.output.fields.get("finish_reason")
            if reason is not None and reason.string_value:
                self.finish_reason = reason.string_value
            calls = step.output.fields.get("tool_calls")
            if calls is not None:
                value: Any = json_format.MessageToDict(calls)
                self.tool_calls = self._calls(value if isinstance(value, list) else [])
        elif kind == "completed":
            done = event.completed
            text = done.outputs.fields.get("text")
            self.text = text.string_value if text is not None else ""
            self.cost_micro_usd = done.cost_micro_usd
            self.usage = {
                "prompt_tokens": done.usage.input_tokens,
                "completion_tokens": done.usage.output_tokens,
                "total_tokens": done.usage.total_tokens,
                "prompt_tokens_details": {"cached_tokens": done.usage.cached_tokens},
            }
            self.completed = True
        return None

    def _fragments(self, index: int) -> list[str]:
        return [
            e.tool_call_token.arguments for e in self.pieces if e.tool_call_token.index == index
        ]

    def _calls(self, calls: list[Any]) -> list[dict[str, Any]]:
        """The step's calls with their arguments as the provider wrote them (the held
        pieces), when those are what the step checked; a Struct would turn 3 into 3.0."""
        out = openai_calls(calls)
        for index, call in enumerate(out):
            text = "".join(self._fragments(index))
            with contextlib.suppress(ValueError):
                if json.loads(text) == calls[index].get("arguments"):
                    call["function"]["arguments"] = text
        return out

    def tool_call_chunks(self) -> list[dict[str, Any]]:
        """The complete calls as OpenAI streams them: per call, a chunk with its index, id,
        type, name and empty arguments, then one chunk per fragment of its arguments."""
        chunks = []
        for index, call in enumerate(self.tool_calls):
            arguments = call["function"]["arguments"]
            pieces = self._fragments(index)
            if "".join(pieces) != arguments:
                pieces = [arguments]
            head = {"index": index, "id": call["id"], "type": "function"}
            head["function"] = {"name": call["function"]["name"], "arguments": ""}
            chunks.append(self.chunk({"tool_calls": [head]}))
            chunks += [
                self.chunk({"tool_calls": [{"index": index, "function": {"arguments": p}}]})
                for p in pieces
                if p
            ]
        return chunks

    @property
    def id(self) -> str:
        return f"chatcmpl-{self.execution_id}"

    def headers(self) -> dict[str, str]:
        """The response headers known now."""
        out = {}
        if self.execution_id:
            out["x-request-id"] = out["x-saga-execution-id"] = self.execution_id
        if self.completed:
            out["x-saga-provider"] = self.provider
            out["x-saga-cost-micro-usd"] = str(self.cost_micro_usd)
        return out

    def completion(self) -> dict[str, Any]:
        """The `chat.completion` object of a finished run."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text, "refusal": None}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
            message["content"] = self.text or None  # OpenAI's null beside calls
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                }
            ],
            "usage": self.usage,
        }

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        """One `chat.completion.chunk` with one choice."""
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def usage_chunk(self) -> dict[str, Any]:
        """The chunk after the last choice, with the run's usage (and Saga's accounting)."""
        chunk = self.chunk({})
        chunk["choices"] = []
        chunk["usage"] = self.usage
        chunk["saga"] = {"provider": self.provider, "cost_micro_usd": self.cost_micro_usd}
        return chunk


def _incomplete() -> Unavailable:
    return Unavailable(
        "the run ended without completing", reason="EXECUTION_INCOMPLETE", retry_after=1.0
    )


def _logged(error: BaseException) -> BaseException:
    # A failure that is no domain or peer error is a bug: the client sees INTERNAL only.
    if not isinstance(error, SagaError) and not hasattr(error, "code"):
        log.exception("chat completion failed", exc_info=error)
    return error


class OpenAIApi:
    """The OpenAI-compatible routes, over the gateway's servicers."""

    def __init__(
        self,
        edge: Edge,
        execution: ExecutionServicer,
        models: ModelServicer,
        catalog: ModelCatalog,
    ) -> None:
        self._edge = edge
        self._execution = execution
        self._models = models
        self._catalog = catalog
        self._started = int(time.time())
        """`created` of every model (they exist since the configuration was read)."""

    def _model(self, model: models_pb2.Model) -> dict[str, Any]:
        """OpenAI's model object of `model` (with Saga's own description under `saga`)."""
        return {
            "id": model.id,
            "object": "model",
            "created": self._started,
            "owned_by": _MODEL_OWNERS.get(model.kind, ",".join(model.providers)),
            "capabilities": self._catalog.capabilities(model),
            "saga": json_format.MessageToDict(model, preserving_proto_field_name=True),
        }

    async def _list(self, request: web.Request) -> models_pb2.ListModelsResponse:
        context: Any = HttpCallContext(request, MODELS_TIMEOUT_SECONDS)  # a servicer context
        return await self._models.ListModels(models_pb2.ListModelsRequest(), context)

    async def list_models(self, request: web.Request) -> web.Response:
        """GET /v1/models: ListModels, as OpenAI's model list."""
        try:
            reply = await self._list(request)
        except Exception as error:
            return openai_error_response(_logged(error))
        return web.json_response({"object": "list", "data": [self._model(m) for m in reply.models]})

    async def retrieve_model(self, request: web.Request) -> web.Response:
        """GET /v1/models/{model}: one model of ListModels (ids may hold a `/`)."""
        wanted = request.match_info["model"]
        try:
            reply = await self._list(request)
        except Exception as error:
            return openai_error_response(_logged(error))
        model = next((m for m in reply.models if m.id == wanted), None)
        if model is None:
            return openai_error_response(model_not_found(wanted))
        return web.json_response(self._model(model))

    async def _run(
        self, request: web.Request, context: Any
    ) -> tuple[ChatCompletionRequest, _Answer, AsyncIterator[execution_pb2.ExecuteResponse]]:
        # The caller first: a bad key is 401 whatever the body says.
        principal = await self._edge.principal(context)
        principal.require("execute")
        chat = parse(await read_json(request))
        model = self._catalog.get(chat.model)
        answer = _Answer(chat.model, chat.model, self._catalog)
        run = execution_pb2.ExecuteRequest(
            pattern_id=chat.pattern, inputs=chat.inputs, options=self._catalog.route(model)
        )
        return chat, answer, self._execution.execute_events(run, context)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/chat/completions."""
        # No deadline of its own: the gateway's Execute deadline applies, as to gRPC callers.
        context: Any = HttpCallContext(request, None)  # a servicer context
        answer: _Answer | None = None
        try:
            chat, answer, events = await self._run(request, context)
            # Closed on every way out, so a client that left cancels the run down the chain.
            async with contextlib.aclosing(events):  # type: ignore[type-var]
                if chat.stream:
                    return await self._stream(request, context, chat, answer, events)
                async for event in events:
                    answer.see(event)
                    if request.transport is None or request.transport.is_closing():
                        # The client left: stop the run (and its bill) as a gRPC cancel does.
                        return web.Response(status=499)
            if not answer.completed:
                raise _incomplete()
        except Exception as error:
            headers = answer.headers() if answer is not None else {}
            return openai_error_response(_logged(error), {**headers_of(context), **headers})
        return web.json_response(
            answer.completion(), headers={**headers_of(context), **answer.headers()}
        )

    async def _stream(
        self,
        request: web.Request,
        context: HttpCallContext,
        chat: ChatCompletionRequest,
        answer: _Answer,
        events: AsyncIterator[execution_pb2.ExecuteResponse],
    ) -> web.StreamResponse:
        stream = EventStream(request)
        try:
            async for event in events:
                text = answer.see(event)
                if not stream.opened and (text or answer.completed):
                    await stream.open({**headers_of(context), **answer.headers()})
                    await stream.send(answer.chunk({"role": "assistant", "content": ""}))
                if text:
                    await stream.send(answer.chunk({"content": text}))
            if not answer.completed:
                raise _incomplete()
            for chunk in answer.tool_call_chunks():
                await stream.send(chunk)
            await stream.send(answer.chunk({}, answer.finish_reason))
            if chat.include_usage:
                await stream.send(answer.usage_chunk())
            await stream.send("[DONE]")
        except ConnectionResetError:
            pass  # the client left; nothing more can reach it
        except Exception as error:
            if not stream.opened:
                raise
            # After text: an error event (the SDKs raise it), and no [DONE].
            with contextlib.suppress(ConnectionResetError):
                await stream.send({"error": openai_error(status_for(_logged(error), DOMAIN))})
        return await stream.close()

    async def embeddings(self, request: web.Request) -> web.Response:
        """POST /v1/embeddings: a run of the `embed` pattern, answered once."""
        context: Any = HttpCallContext(request, None)  # a servicer context
        headers: dict[str, str] = {}
        try:
            principal = await self._edge.principal(context)
            principal.require("execute")
            asked = openai_embeddings.parse(await read_json(request))
            run = execution_pb2.ExecuteRequest(
                pattern_id=openai_embeddings.EMBED_PATTERN,
                inputs=asked.inputs,
                options=self._catalog.route(self._catalog.get(asked.model)),
            )
            done: events_pb2.Completed | None = None
            provider = ""
            events = self._execution.execute_events(run, context)
            async with contextlib.aclosing(events):  # type: ignore[type-var]
                async for event in events:
                    kind = event.WhichOneof("event")
                    if kind == "accepted":
                        headers["x-request-id"] = event.accepted.execution_id
                        headers["x-saga-execution-id"] = event.accepted.execution_id
                    elif kind == "step_completed":
                        provider = event.step_completed.provider
                    elif kind == "completed":
                        done = event.completed
            if done is None:
                raise _incomplete()
            outputs = json_format.MessageToDict(done.outputs)
            headers["x-saga-provider"] = provider
            headers["x-saga-cost-micro-usd"] = str(done.cost_micro_usd)
            body = openai_embeddings.response(
                outputs.get("vectors") or [],
                outputs.get("model") or asked.model,
                done.usage.input_tokens,
                asked.encoding_format,
            )
        except Exception as error:
            return openai_error_response(_logged(error), {**headers_of(context), **headers})
        return web.json_response(body, headers={**headers_of(context), **headers})

    def routes(self) -> list[web.RouteDef]:
        """The OpenAI-compatible routes."""
        return [
            web.post("/v1/chat/completions", self.chat_completions),
            web.post("/v1/embeddings", self.embeddings),
            web.get("/v1/models", self.list_models),
            web.get("/v1/models/{model:.+}", self.retrieve_model),
        ]
