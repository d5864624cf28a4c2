"""The `llm` agent: LLM capabilities served by the router's `Reason`.

`llm.complete` answers a prompt; `llm.summarize` summarises a text; `llm.classify` answers one
of the labels the step gives; `llm.extract` answers a JSON object checked against the JSON
Schema the step gives (services/runtime/json_check.py). A classify or extract reply that does
not fit is sent back once with what is wrong with it; a second one that does not fit fails
the step FAILED_PRECONDITION `LLM_REPLY_INVALID`. Each step's `mode` chooses the router's
response mode: `streaming` relays tokens to the caller as they come, `complete` relays none
and takes the whole text from the final event. complete and summarize stream by default;
classify and extract answer complete by default, since their answer is a checked value
rather than text to read, and a streamed reply may yet be refused.

Each call acts for the run's user: the caller's `saga-context` token travels unchanged and
`accounting` names the user, session, execution, step and pattern, so the router can verify
the context and account the call.

The run's options travel with each call: the allow-list, `disable_fallback` (the router's
`allow_fallback` is its negation), the CUSTOM weights, and what is left of the run's cost
limit after the steps before this one and this step's earlier calls (a step that finds
nothing left is refused RESOURCE_EXHAUSTED COST_LIMIT_EXCEEDED without calling the router).

`llm.complete` also takes tools, a tool choice, parallel tool calls and a response format
(`llm_tools`), and its output holds the tool calls the model made.

The router's events are read as bytes: a Delta, Switched, Skipped or ToolCallDelta is relayed
without being decoded
(the runtime writes the step id in front, see `services/runtime/wire.py`); only Final, which
ends the call, is parsed. Failures from the router propagate unchanged, so its reason and
domain reach the client.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from saga.execution.v1 import common_pb2, options_pb2, reason_events_pb2
from saga.router.v1 import router_pb2
from services.common import sampling
from services.common.context import METADATA_KEY
from services.common.errors import (
    FailedPrecondition,
    QuotaViolation,
    ResourceExhausted,
    Unavailable,
)
from services.common.usage import Usage
from services.common.usage_messages import usage_from_proto
from services.runtime import json_check, wire
from services.runtime.agents import llm_tools
from services.runtime.agents.llm_history import history_messages
from services.runtime.agents.local import step_args_invalid
from services.runtime.agents.step import Relayed, StepCall, StepEvent, StepResult
from services.runtime.capabilities import Capability, FieldSpec, check_fields

REASON = "/saga.router.v1.RouterService/Reason"
EMBED = "/saga.router.v1.RouterService/Embed"
MAX_MESSAGES = 200
"""The router's bound on a call's messages."""
FINISH_REASONS = ("stop", "length", "content_filter", "tool_calls")
_FINISH_NAMES = {
    reason_events_pb2.FINISH_REASON_LENGTH: "length",
    reason_events_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
    reason_events_pb2.FINISH_REASON_TOOL_CALLS: "tool_calls",
}
STREAMING, COMPLETE = "streaming", "complete"
MODES = (STREAMING, COMPLETE)
MAX_LABELS = 100
MAX_LABEL_CHARS = 200
MAX_TEXT_CHARS = 200_000

SYSTEM = FieldSpec("system", "string", description="system prompt (each capability has its own)")
MAX_TOKENS = FieldSpec("max_tokens", "integer", description="upper bound on generated tokens")
TEMPERATURE = FieldSpec(
    "temperature",
    "number",
    description="sampling temperature, 0..2",
    check=lambda value: sampling.number_problem("temperature", value),
)
SAMPLING_ARGS = (
    FieldSpec(
        "top_p",
        "number",
        description="nucleus sampling, 0..1",
        check=lambda value: sampling.number_problem("top_p", value),
    ),
    FieldSpec(
        "presence_penalty",
        "number",
        description="-2..2",
        check=lambda value: sampling.number_problem("presence_penalty", value),
    ),
    FieldSpec(
        "frequency_penalty",
        "number",
        description="-2..2",
        check=lambda value: sampling.number_problem("frequency_penalty", value),
    ),
    FieldSpec("seed", "integer", description="sampling seed", check=sampling.seed_problem),
    FieldSpec(
        "stop",
        "array",
        max_length=sampling.MAX_STOP_SEQUENCES,
        description="stop sequences",
        check=sampling.stop_problem,
    ),
    FieldSpec(
        "end_user",
        "string",
        max_length=sampling.MAX_END_USER_CHARS,
        description="the caller's end user, for providers' abuse monitoring",
    ),
)
"""`llm.complete`'s sampling arguments; only providers whose engine sends each one given
are called (the router's check)."""


def mode_arg(default: str) -> FieldSpec:
    """The `mode` argument of a capability that answers `default` when a step leaves it out."""
    return FieldSpec(
        "mode",
        "string",
        choices=MODES,
        description=f"streaming: tokens reach the caller as they come; complete: the whole "
        f"answer at once (default {default})",
    )


def _text(description: str) -> FieldSpec:
    return FieldSpec(
        "text", "string", required=True, max_length=MAX_TEXT_CHARS, description=description
    )


def _labels_problem(labels: Any) -> str:
    """What is wrong with a classify step's `labels` ("" when nothing is)."""
    if not labels:
        return "at least one label"
    if not all(isinstance(x, str) and x.strip() for x in labels):
        return "every label is a non-empty string"
    if any(len(x) > MAX_LABEL_CHARS for x in labels):
        return f"a label has at most {MAX_LABEL_CHARS} characters"
    if len({x.strip().casefold() for x in labels}) != len(labels):
        return "labels are distinct (ignoring case and surrounding spaces)"
    return ""


def _schema_problem(schema: Any) -> str:
    """What is wrong with an extract step's `schema` ("" when nothing is)."""
    problems = json_check.schema_problems(schema)
    if not problems and schema.get("type", "object") != "object":
        problems = ["the schema describes an object (type: object)"]
    return "; ".join(problems[:3])


LLM_COMPLETE = Capability(
    name="llm.complete",
    agent="llm",
    description="Answer a prompt with an LLM chosen by the router; text streams as tokens.",
    args=(
        FieldSpec(
            "prompt",
            "string",
            description="the user message, sent after the history; absent: the history "
            "alone (e.g. ending with tool results for the model to answer)",
        ),
        SYSTEM,
        MAX_TOKENS,
        TEMPERATURE,
        mode_arg(STREAMING),
        FieldSpec(
            "history",
            "array",
            description="earlier turns, sent before the prompt: {role: user|assistant, "
            "content} (assistant: tool_calls [{id, name, arguments}]) or {role: tool, content, "
            "tool_call_id}",
        ),
        FieldSpec(
            "messages",
            "array",
            max_length=MAX_MESSAGES,
            description="this call's own earlier turns, sent after history and before the "
            "prompt, of the same shape",
        ),
        *SAMPLING_ARGS,
        FieldSpec(
            "tools",
            "array",
            description="tools the model may call: [{name, description, parameters (JSON "
            "Schema), strict}]",
            check=llm_tools.tools_problem,
        ),
        FieldSpec(
            "tool_choice",
            "string",
            description="auto (default), none, required, or the name of one of the tools",
        ),
        FieldSpec("parallel_tool_calls", "boolean", description="may the model call several tools"),
        FieldSpec(
            "response_format",
            "object",
            description="{type: text|json_object|json_schema, name, schema, strict}: the "
            "router checks a JSON answer (one retry) before it is delivered",
            check=llm_tools.format_problem,
        ),
    ),
    outputs=(
        FieldSpec("text", "string", required=True, description="the whole answer"),
        FieldSpec(
            "finish_reason",
            "string",
            choices=FINISH_REASONS,
            description="why the answer ended: stop (natural end or a stop sequence), length "
            "(max_tokens or the context window), content_filter, or tool_calls",
        ),
        FieldSpec(
            "tool_calls",
            "array",
            description="the tools the model called: [{id, name, arguments}]; run them and "
            "send the results as tool turns of the next history",
        ),
    ),
    # Until text streams nothing reached the caller, so another attempt is invisible.
    retry_safe=True,
)
LLM_SUMMARIZE = Capability(
    name="llm.summarize",
    agent="llm",
    description="Summarise a text, optionally in at most max_words words.",
    args=(
        _text("the text to summarise"),
        FieldSpec(
            "max_words",
            "integer",
            description="asked of the model: at most this many words",
            check=lambda words: "" if words >= 1 else "at least 1",
        ),
        SYSTEM,
        MAX_TOKENS,
        TEMPERATURE,
        mode_arg(STREAMING),
    ),
    outputs=(FieldSpec("summary", "string", required=True, description="the summary"),),
    retry_safe=True,
)
LLM_CLASSIFY = Capability(
    name="llm.classify",
    agent="llm",
    description="Classify a text as exactly one of the given labels.",
    args=(
        _text("the text to classify"),
        FieldSpec(
            "labels",
            "array",
            required=True,
            max_length=MAX_LABELS,
            description="the labels to choose from (distinct strings)",
            check=_labels_problem,
        ),
        SYSTEM,
        MAX_TOKENS,
        TEMPERATURE,
        mode_arg(COMPLETE),
    ),
    outputs=(FieldSpec("label", "string", required=True, description="one of the labels"),),
    retry_safe=True,
)
LLM_EXTRACT = Capability(
    name="llm.extract",
    agent="llm",
    description="Extract a JSON object from a text, checked against the JSON Schema given.",
    args=(
        _text("the text to extract from"),
        FieldSpec(
            "schema",
            "object",
            required=True,
            description="JSON Schema of the object (type, properties, required, enum, items, "
            "additionalProperties, description, title)",
            check=_schema_problem,
        ),
        SYSTEM,
        MAX_TOKENS,
        TEMPERATURE,
        mode_arg(COMPLETE),
    ),
    outputs=(FieldSpec("data", "object", required=True, description="the object extracted"),),
    retry_safe=True,
)
LLM_EMBED = Capability(
    name="llm.embed",
    agent="llm",
    description="Embed texts with a provider able to (the router's Embed); one vector each.",
    args=(
        FieldSpec(
            "texts",
            "array",
            required=True,
            description="the texts (1 to 2048 non-blank strings)",
            check=lambda texts: "" if all(isinstance(t, str) for t in texts) else "strings only",
        ),
        FieldSpec(
            "dimensions",
            "integer",
            description="vector length, for models that can shorten theirs (default: the model's)",
        ),
    ),
    outputs=(
        FieldSpec("vectors", "array", required=True, description="one vector per text, in order"),
        FieldSpec("model", "string", required=True, description="the model of the vectors"),
    ),
    retry_safe=True,
)
CAPABILITIES = {
    c.name: c for c in (LLM_COMPLETE, LLM_SUMMARIZE, LLM_CLASSIFY, LLM_EXTRACT, LLM_EMBED)
}


DEFAULT_MODE = {
    LLM_COMPLETE.name: STREAMING,
    LLM_SUMMARIZE.name: STREAMING,
    LLM_CLASSIFY.name: COMPLETE,
    LLM_EXTRACT.name: COMPLETE,
}


def cost_left(call: StepCall) -> int:
    """What the step may spend of the run's cost limit (0 = no limit); raise
    COST_LIMIT_EXCEEDED when the steps before it spent it all."""
    limit = call.run.max_cost_micro_usd
    if limit <= 0:
        return 0
    left = limit - call.spent_micro_usd
    if left <= 0:
        raise ResourceExhausted(
            f"max_cost_micro_usd exceeded: the run's steps before {call.step_id} spent "
            f"{call.spent_micro_usd} of {limit} micro-USD",
            reason="COST_LIMIT_EXCEEDED",
            metadata={
                "limitMicroUsd": str(limit),
                "spentMicroUsd": str(call.spent_micro_usd),
                "stepId": call.step_id,
            },
            quota_violations=[
                QuotaViolation("max_cost_micro_usd", f"{call.spent_micro_usd} of {limit} spent")
            ],
        )
    return left


def accounting(call: StepCall) -> router_pb2.AccountingContext:
    """Whom and what a router call of the step is accounted to."""
    run = call.run
    return router_pb2.AccountingContext(
        user_id=run.user_id,
        session_id=run.session_id,
        execution_id=run.execution_id,
        step_id=call.step_id,
        pattern_id=run.pattern_id,
    )


def user(text: str) -> router_pb2.Message:
    return router_pb2.Message(role=router_pb2.ROLE_USER, content=text)


def assistant(text: str) -> router_pb2.Message:
    return router_pb2.Message(role=router_pb2.ROLE_ASSISTANT, content=text)


def reason_request(
    call: StepCall,
    messages: Sequence[router_pb2.Message] | None = None,
    system: str | None = None,
) -> router_pb2.ReasonRequest:
    """The router request for one call of a step: `messages` (default: the step's `prompt`)
    under `system` (default: the step's `system`), in the step's response mode."""
    args = call.args
    run = call.run
    complete = args.get("mode", DEFAULT_MODE.get(call.capability, STREAMING)) == COMPLETE
    request = router_pb2.ReasonRequest(
        messages=(
            messages
            if messages is not None
            else [
                *history_messages(call),
                *history_messages(call, "messages"),
                *([] if args.get("prompt") is None else [user(args["prompt"])]),
            ]
        ),
        stop=args.get("stop") or (),
        end_user=args.get("end_user") or "",
        system_prompt=args.get("system") or system or "",
        max_tokens=int(args.get("max_tokens") or 0),
        response_mode=common_pb2.RESPONSE_MODE_COMPLETE
        if complete
        else common_pb2.RESPONSE_MODE_STREAMING,
        strategy=run.strategy,  # type: ignore[arg-type]
        preferred_providers=run.preferred_providers,
        allowed_providers=run.allowed_providers,
        allow_fallback=not run.disable_fallback,
        accounting=accounting(call),
        max_cost_micro_usd=cost_left(call),
    )
    if run.weights is not None:
        cost, latency, quality, reliability = run.weights
        request.weights.CopyFrom(
            options_pb2.StrategyWeights(
                cost=cost, latency=latency, quality=quality, reliability=reliability
            )
        )
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        if args.get(name) is not None:
            setattr(request, name, float(args[name]))
    if args.get("seed") is not None:
        request.seed = int(args["seed"])
    llm_tools.apply(request, args)
    return request


@dataclass(frozen=True)
class Answer:
    """One call's answer; a step's result sums the usage and cost of all its calls."""

    text: str
    usage: Usage
    provider: str
    model: str
    cost_micro_usd: int
    finish_reason: str = "stop"
    tool_calls: tuple[reason_events_pb2.ToolCall, ...] = ()

    def result(self, output: Mapping[str, Any], before: Answer | None = None) -> StepResult:
        """The step's result with `output`, counting an earlier call `before` too."""
        usage, cost = self.usage, self.cost_micro_usd
        if before is not None:
            usage, cost = usage + before.usage, cost + before.cost_micro_usd
        return StepResult(output, usage, self.provider, self.model, cost)


class ReplyInvalid(Exception):
    """A reply that does not fit what the step asked for (the message says how)."""


def summary_prompt(args: Mapping[str, Any]) -> str:
    words = args.get("max_words")
    limit = f" in at most {words} words" if words else ""
    return f"Summarise the following text{limit}. Answer with the summary only.\n\n{args['text']}"


def classify_prompt(args: Mapping[str, Any]) -> str:
    labels = "\n".join(f"- {label}" for label in args["labels"])
    return (
        f"Classify the text below as exactly one of these labels:\n{labels}\n\n"
        f"Answer with the label only.\n\nText:\n{args['text']}"
    )


def extract_prompt(args: Mapping[str, Any]) -> str:
    schema = json.dumps(args["schema"], sort_keys=True)
    return (
        "Extract from the text below one JSON object that matches this JSON Schema:\n"
        f"{schema}\n\nAnswer with the JSON object only.\n\nText:\n{args['text']}"
    )


def parse_label(reply: str, labels: Sequence[str]) -> str:
    """The label `reply` names (ignoring case, spaces, quotes and a final period)."""
    said = reply.strip(" \t\n\"'`*.").casefold()
    for label in labels:
        if label.strip().casefold() == said:
            return label
    raise ReplyInvalid(
        f"the answer {reply.strip()[:80]!r} is not one of the labels: " + ", ".join(labels)
    )


def parse_object(reply: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object `reply` holds (a Markdown code fence around it is allowed), checked
    against `schema`."""
    text = reply.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise ReplyInvalid(f"the answer is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise ReplyInvalid("the answer is JSON but not an object")
    problems = json_check.value_problems(schema, value)
    if problems:
        raise ReplyInvalid("the object does not match the schema: " + "; ".join(problems[:5]))
    return value


SYSTEMS = {
    LLM_SUMMARIZE.name: "You write faithful, concise summaries.",
    LLM_CLASSIFY.name: "You are a classifier. You answer with exactly one of the given labels.",
    LLM_EXTRACT.name: "You extract data from text. You answer with one JSON object, no prose.",
}
# classify and extract: (the prompt of the first call, how a reply becomes the output, and
# the output field it fills).
CHECKED: dict[
    str, tuple[Callable[[Mapping[str, Any]], str], Callable[[str, Mapping[str, Any]], Any], str]
] = {
    LLM_CLASSIFY.name: (
        classify_prompt,
        lambda reply, args: parse_label(reply, args["labels"]),
        "label",
    ),
    LLM_EXTRACT.name: (
        extract_prompt,
        lambda reply, args: parse_object(reply, args["schema"]),
        "data",
    ),
}


class LlmAgent:
    """Owns the `llm.*` capabilities; one per process, over the one router channel."""

    name = "llm"
    capabilities = tuple(CAPABILITIES.values())

    def __init__(self, router: grpc.aio.Channel) -> None:
        # No response deserializer: events arrive as bytes, to be relayed as they are.
        self._reason: Callable[..., Any] = router.unary_stream(
            REASON,
            request_serializer=router_pb2.ReasonRequest.SerializeToString,
            response_deserializer=None,
        )
        self._embed: Callable[..., Any] = router.unary_unary(
            EMBED,
            request_serializer=router_pb2.EmbedRequest.SerializeToString,
            response_deserializer=router_pb2.EmbedResponse.FromString,
        )

    async def run(self, call: StepCall) -> AsyncIterator[StepEvent]:
        """Run one step: relayed events of its calls as they come, then its result."""
        args, problems = check_fields(CAPABILITIES[call.capability].args, call.args)
        if problems:
            raise step_args_invalid(call, problems)
        call = dataclasses.replace(call, args=args)
        if call.capability == LLM_EMBED.name:
            yield await self._embeddings(call)
            return
        system = SYSTEMS.get(call.capability)
        checked = call.capability in CHECKED
        steps = self._checked(call, system) if checked else self._plain(call, system)
        async for event in steps:
            yield event

    async def _embeddings(self, call: StepCall) -> StepResult:
        """An embed step: one router Embed with the run's options, accounted like a call."""
        run = call.run
        reply: router_pb2.EmbedResponse = await self._embed(
            router_pb2.EmbedRequest(
                inputs=call.args["texts"],
                dimensions=int(call.args.get("dimensions") or 0),
                preferred_providers=run.preferred_providers,
                allowed_providers=run.allowed_providers,
                allow_fallback=not run.disable_fallback,
                accounting=accounting(call),
                max_cost_micro_usd=cost_left(call),
            ),
            metadata=((METADATA_KEY, run.context_token),),
            timeout=run.time_left(),
        )
        return StepResult(
            {"vectors": [list(e.values) for e in reply.embeddings], "model": reply.model},
            usage_from_proto(reply.usage),
            reply.provider,
            reply.model,
            reply.cost_micro_usd,
        )

    async def _plain(self, call: StepCall, system: str | None) -> AsyncIterator[StepEvent]:
        """A complete or summarize step: one call, its text the output."""
        summarize = call.capability == LLM_SUMMARIZE.name
        messages = [user(summary_prompt(call.args))] if summarize else None
        async for event in self._ask(call, messages, system):
            if isinstance(event, Answer):
                if summarize:
                    yield event.result({"summary": event.text})
                    continue
                output: dict[str, Any] = {"text": event.text, "finish_reason": event.finish_reason}
                if event.tool_calls or call.args.get("tools"):
                    # [] when tools were offered and none called: the caller reads "no call".
                    output["tool_calls"] = llm_tools.calls_output(event.tool_calls)
                yield event.result(output)
            else:
                yield event

    async def _checked(self, call: StepCall, system: str | None) -> AsyncIterator[StepEvent]:
        """A classify or extract step: ask; a reply that does not fit is sent back once with
        what is wrong with it; a second misfit fails the step."""
        prompt, parse, key = CHECKED[call.capability]
        messages = [user(prompt(call.args))]
        first: Answer | None = None
        for attempt in (1, 2):
            answer: Answer | None = None
            async for event in self._ask(call, messages, system):
                if isinstance(event, Answer):
                    answer = event
                else:
                    yield event
            assert answer is not None
            try:
                output = parse(answer.text, call.args)
            except ReplyInvalid as invalid:
                if attempt == 2:
                    raise FailedPrecondition(
                        f"step {call.step_id} ({call.capability}): the model's reply did not "
                        f"fit twice; the second time {invalid}",
                        reason="LLM_REPLY_INVALID",
                        metadata={
                            "stepId": call.step_id,
                            "capability": call.capability,
                            "problem": str(invalid)[:500],
                        },
                    ) from None
                messages += [
                    assistant(answer.text),
                    user(f"That answer does not fit: {invalid}. Answer again, correctly."),
                ]
                # The second call may spend only what the first left of the run's limit.
                call = dataclasses.replace(
                    call, spent_micro_usd=call.spent_micro_usd + answer.cost_micro_usd
                )
                first = answer
                continue
            yield answer.result({key: output}, first)
            return

    async def _ask(
        self,
        call: StepCall,
        messages: Sequence[router_pb2.Message] | None,
        system: str | None,
    ) -> AsyncIterator[Relayed | Answer]:
        """One router call: its relayed tokens and switches, then its Answer."""
        stream = self._reason(
            reason_request(call, messages, system),
            metadata=((METADATA_KEY, call.run.context_token),),
            timeout=call.run.time_left(),
        )
        deltas: list[bytes] = []
        final: reason_events_pb2.Final | None = None
        try:
            async for raw in stream:
                event = wire.single_field(raw)
                if event is not None and event[0] in wire.RELAYED_FIELDS:
                    if event[0] == wire.TOKEN:
                        deltas.append(event[1])
                    yield Relayed(call.step_id, event[0], event[1])
                    continue
                parsed = router_pb2.ReasonResponse.FromString(raw)
                if parsed.HasField("final"):
                    final = parsed.final
        finally:
            # Leaving early (the client cancelled, the run failed) stops the router's work.
            stream.cancel()
        if final is None:
            raise Unavailable(
                "the router ended the answer without its final event",
                reason="ROUTER_STREAM_INCOMPLETE",
                metadata={"stepId": call.step_id},
            )
        text = final.text or "".join(reason_events_pb2.Delta.FromString(d).text for d in deltas)
        yield Answer(
            text,
            usage_from_proto(final.usage),
            final.provider,
            final.model,
            final.cost_micro_usd,
            _FINISH_NAMES.get(final.finish_reason, "stop"),
            tuple(final.tool_calls),
        )
