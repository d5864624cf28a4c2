"""`saga sessions create|list|show|delete`: the caller's staged sessions.

`create` prints the new session's id alone on stdout (so `S=$(saga sessions create --title
x)` captures it); `saga execute … --session S` then appends a stage to it per completed run.
`list` prints one page, and on stderr the `--page-token` of the next one when there is more.
`show` prints each stage on a line: the run's inputs and outputs, clipped (`--json` has them
whole).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from clients.cli.execute import inputs
from clients.cli.output import table, to_json, when
from clients.cli.settings import Metadata
from saga.execution.v1 import records_pb2
from saga.gateway.v1 import sessions_pb2, sessions_pb2_grpc

INPUTS_WIDTH = 40
OUTPUTS_WIDTH = 60
"""How much of a stage's inputs and outputs `show` prints on its line (`--json` has them
all)."""


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The `sessions` command and its subcommands."""
    sessions = sub.add_parser("sessions", help="your staged sessions (scope sessions)")
    ssub = sessions.add_subparsers(dest="sessions_command", required=True)
    create = ssub.add_parser("create", parents=[common], help="a new empty session")
    create.add_argument("--title", default="")
    create.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="metadata (repeatable; a value starting with [ or { is JSON)",
    )
    listing = ssub.add_parser("list", parents=[common], help="most recently updated first")
    listing.add_argument("--page-size", type=int, default=0, help="default 50, at most 500")
    listing.add_argument("--page-token", default="", help="from the previous page")
    show = ssub.add_parser("show", parents=[common], help="a session and its stages")
    show.add_argument("session_id")
    delete = ssub.add_parser("delete", parents=[common], help="delete it and its stages")
    delete.add_argument("session_id")


def sessions_table(sessions: list[records_pb2.Session]) -> str:
    """One row per session (the title last: the one wide column)."""
    return table(
        ("SESSION ID", "CREATED", "UPDATED", "TITLE"),
        [(s.session_id, when(s.created_at), when(s.updated_at), s.title) for s in sessions],
    )


def _clipped(values: struct_pb2.Struct, width: int) -> str:
    text = json.dumps(json_format.MessageToDict(values), ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def session_text(session: records_pb2.Session) -> str:
    """A session's fields, then its stages oldest first."""
    lines = [
        f"session   {session.session_id}",
        f"title     {session.title}",
        f"metadata  {json.dumps(json_format.MessageToDict(session.metadata), ensure_ascii=False)}",
        f"created   {when(session.created_at)}",
        f"updated   {when(session.updated_at)}",
        "",
    ]
    if not session.stages:
        return "\n".join([*lines, "no stages yet"])
    stages = table(
        ("#", "EXECUTION", "PATTERN", "COMPLETED", "INPUTS", "OUTPUTS"),
        [
            (
                str(n),
                s.execution_id,
                s.pattern_id,
                when(s.created_at),
                _clipped(s.inputs, INPUTS_WIDTH),
                _clipped(s.outputs, OUTPUTS_WIDTH),
            )
            for n, s in enumerate(session.stages, 1)
        ],
        right=(0,),
    )
    return "\n".join(lines) + stages


async def sessions(channel: grpc.aio.Channel, args: argparse.Namespace, md: Metadata) -> int:
    """`saga sessions create|list|show|delete`."""
    stub: sessions_pb2_grpc.SessionServiceAsyncStub = sessions_pb2_grpc.SessionServiceStub(channel)
    command, timeout = args.sessions_command, args.timeout
    if command == "create":
        metadata = inputs(args.meta, "--meta")
        request = sessions_pb2.CreateSessionRequest(title=args.title, metadata=metadata)
        created = await stub.CreateSession(request, metadata=md, timeout=timeout)
        print(to_json(created) if args.json else created.session.session_id)
    elif command == "list":
        listed = await stub.ListSessions(
            sessions_pb2.ListSessionsRequest(page_size=args.page_size, page_token=args.page_token),
            metadata=md,
            timeout=timeout,
        )
        if args.json:
            print(to_json(listed))
            return 0
        print(sessions_table(list(listed.sessions)))
        if listed.next_page_token:
            print(f"more: --page-token {listed.next_page_token}", file=sys.stderr)
    elif command == "show":
        shown = await stub.GetSession(
            sessions_pb2.GetSessionRequest(session_id=args.session_id), metadata=md, timeout=timeout
        )
        print(to_json(shown) if args.json else session_text(shown.session))
    else:
        await stub.DeleteSession(
            sessions_pb2.DeleteSessionRequest(session_id=args.session_id),
            metadata=md,
            timeout=timeout,
        )
        print("{}" if args.json else f"deleted {args.session_id}")
    return 0
