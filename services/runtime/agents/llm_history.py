"""The `history` argument of `llm.complete`: earlier turns of a conversation (such as
`{{session.history}}`, services/runtime/session_root.py), sent to the router as messages
before the step's prompt, in order. A turn is {role: user|assistant, content: text}; an
assistant turn may carry the tool calls it made ({…, tool_calls: [{id, name, arguments}]})
and a tool turn answers one ({role: tool, content: text, tool_call_id}, `llm_tools`).
Anything else is the pattern's mistake, refused before the router is called."""

from __future__ import annotations

from saga.router.v1 import router_pb2
from services.runtime.agents.llm_tools import history_calls
from services.runtime.agents.local import step_args_invalid
from services.runtime.agents.step import StepCall

HISTORY_ROLES = {"user": router_pb2.ROLE_USER, "assistant": router_pb2.ROLE_ASSISTANT}
TURN = (
    "expected {role: user|assistant, content: text} (an assistant turn may add tool_calls: "
    "[{id, name, arguments}]) or {role: tool, content: text, tool_call_id}"
)


def history_messages(call: StepCall, arg: str = "history") -> list[router_pb2.Message]:
    """The step's `arg` (`history`, or `messages`: the same turns given by the run's own
    inputs) as router messages; INVALID_ARGUMENT STEP_ARGS_INVALID naming each turn that is
    not one (`TURN`)."""
    turns = call.args.get(arg)
    if turns is None:
        return []
    if not isinstance(turns, list | tuple):
        raise step_args_invalid(call, [(arg, "expected an array")])
    messages, problems = [], []
    for i, entry in enumerate(turns):
        match entry:
            case {"role": "tool", "content": str(content), "tool_call_id": str(call_id)}:
                messages.append(
                    router_pb2.Message(
                        role=router_pb2.ROLE_TOOL, content=content, tool_call_id=call_id
                    )
                )
            case {"role": str(role), "content": str(content)} if (
                role in HISTORY_ROLES
                and (calls := history_calls(entry)) is not None
                and (not calls or role == "assistant")
            ):
                messages.append(
                    router_pb2.Message(role=HISTORY_ROLES[role], content=content, tool_calls=calls)
                )
            case _:
                problems.append((f"{arg}[{i}]", TURN))
    if problems:
        raise step_args_invalid(call, problems)
    return messages
