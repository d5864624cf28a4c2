"""Sessions through the gateway over real processes, on SQLite and on PostgreSQL: a user's
sessions are theirs alone (another user gets NOT_FOUND, even running in one), runs with a
session append stages oldest first, a delete removes the stages and leaves the executions
without the session; pages, tampered tokens, bad ids and oversized input get precise
errors; and the `saga sessions` / `saga execute --session` CLI and the Node clients
(`sessions.js`, `execute.js --session`) do the same."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from saga.gateway.v1 import (
    account_pb2,
    account_pb2_grpc,
    execution_pb2,
    execution_pb2_grpc,
    sessions_pb2,
    sessions_pb2_grpc,
)
from services.common import page_tokens
from services.common.database import open_database
from services.common.status import describe
from services.runtime.schema import MIGRATIONS
from services.runtime.sessions import MAX_METADATA_BYTES, MAX_TITLE_CHARS
from tests.conftest import PG_URL, Backend, drop_schemas
from tests.e2e.test_cli import ok, run_cli
from tests.e2e.test_execute import bearer, chat
from tests.e2e.test_executions import node, node_text
from tests.harness import Stack, stack_for


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Stack, Backend]]:
    """The six services on each storage backend in turn."""
    namespace = f"t{secrets.token_hex(6)}"
    backend = Backend(request.param, PG_URL if request.param == "postgresql" else "", namespace)
    try:
        async with stack_for(
            tmp_path_factory.mktemp(f"sessions-{backend.name}"), **backend.env()
        ) as s:
            yield s, backend
    finally:
        if backend.url:
            await drop_schemas(namespace)


@pytest.fixture
def stack(deployment: tuple[Stack, Backend]) -> Stack:
    return deployment[0]


async def new_user(stack: Stack) -> str:
    """A new user's session token (default scopes: execute, sessions, usage:read)."""
    email, password = f"ses.{secrets.token_hex(4)}@example.com", "sessions " + secrets.token_hex(8)
    async with stack.gateway_channel() as ch:
        accounts = account_pb2_grpc.AccountServiceStub(ch)
        await accounts.Register(
            account_pb2.RegisterRequest(email=email, password=password),
            metadata=bearer(stack.admin_key()),
            timeout=30,
        )
        session = await accounts.Login(
            account_pb2.LoginRequest(email=email, password=password), timeout=30
        )
    return session.access_token


async def call(stack: Stack, method: str, request: object, token: str) -> object:
    async with stack.gateway_channel() as ch:
        stub = sessions_pb2_grpc.SessionServiceStub(ch)
        return await getattr(stub, method)(request, metadata=bearer(token), timeout=30)


async def refused(stack: Stack, method: str, request: object, token: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(stack, method, request, token)
    return error.value


async def create(stack: Stack, token: str, title: str = "", **metadata: object) -> str:
    meta = struct_pb2.Struct()
    meta.update(metadata)
    made = await call(
        stack, "CreateSession", sessions_pb2.CreateSessionRequest(title=title, metadata=meta), token
    )
    assert isinstance(made, sessions_pb2.CreateSessionResponse)
    return made.session.session_id


async def get(stack: Stack, session_id: str, token: str) -> sessions_pb2.GetSessionResponse:
    got = await call(
        stack, "GetSession", sessions_pb2.GetSessionRequest(session_id=session_id), token
    )
    assert isinstance(got, sessions_pb2.GetSessionResponse)
    return got


async def execute_in(
    stack: Stack, session_id: str, token: str, prompt: str
) -> list[execution_pb2.ExecuteResponse]:
    request = chat(prompt)
    request.session_id = session_id
    async with stack.gateway_channel() as ch:
        stub = execution_pb2_grpc.ExecutionServiceStub(ch)
        return [e async for e in stub.Execute(request, metadata=bearer(token), timeout=60)]


async def test_a_users_sessions_are_theirs_alone(stack: Stack) -> None:
    alice, bob = await new_user(stack), await new_user(stack)
    session_id = await create(stack, alice, "Q3 review", team="risk")
    shown = (await get(stack, session_id, alice)).session
    assert (shown.title, json_format.MessageToDict(shown.metadata)) == (
        "Q3 review",
        {"team": "risk"},
    )
    assert shown.user_id
    assert list(shown.stages) == []

    # Bob cannot read, delete, list or run in it, and learns nothing of its existence: the
    # answer is the one for a session that never existed.
    never = "ses_" + "0" * 32
    for target in (session_id, never):
        for method, request in (
            ("GetSession", sessions_pb2.GetSessionRequest(session_id=target)),
            ("DeleteSession", sessions_pb2.DeleteSessionRequest(session_id=target)),
        ):
            error = await refused(stack, method, request, bob)
            assert error.code() == grpc.StatusCode.NOT_FOUND, describe(error)
            assert (describe(error).reason, describe(error).domain) == (
                "SESSION_NOT_FOUND",
                "runtime.saga",
            )
    listed = await call(stack, "ListSessions", sessions_pb2.ListSessionsRequest(), bob)
    assert isinstance(listed, sessions_pb2.ListSessionsResponse)
    assert list(listed.sessions) == []
    with pytest.raises(grpc.aio.AioRpcError) as run:
        await execute_in(stack, session_id, bob, "hi")
    assert run.value.code() == grpc.StatusCode.NOT_FOUND
    assert describe(run.value).reason == "SESSION_NOT_FOUND"
    assert list((await get(stack, session_id, alice)).session.stages) == []

    # A key without scope `sessions` is refused at the gateway.
    async with stack.gateway_channel() as ch:
        made = await account_pb2_grpc.AccountServiceStub(ch).CreateApiKey(
            account_pb2.CreateApiKeyRequest(name="runs only", scopes=["execute"]),
            metadata=bearer(alice),
            timeout=10,
        )
    error = await refused(
        stack, "GetSession", sessions_pb2.GetSessionRequest(session_id=session_id), made.api_key
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert describe(error).reason == "SCOPE_MISSING"


async def test_runs_append_stages_and_delete_keeps_the_executions(
    deployment: tuple[Stack, Backend],
) -> None:
    stack, backend = deployment
    alice = await new_user(stack)
    session_id = await create(stack, alice, "chat")
    runs = [await execute_in(stack, session_id, alice, p) for p in ("first", "second")]
    execution_ids = [r[0].accepted.execution_id for r in runs]
    texts = [r[-1].completed.outputs["text"] for r in runs]

    # Found as soon as Completed arrived: the stage was appended before it was sent.
    session = (await get(stack, session_id, alice)).session
    assert [s.execution_id for s in session.stages] == execution_ids
    assert [s.pattern_id for s in session.stages] == ["chat", "chat"]
    assert [s.outputs["text"] for s in session.stages] == texts
    assert [json_format.MessageToDict(s.inputs) for s in session.stages] == [
        {"prompt": "first"},
        {"prompt": "second"},
    ]
    assert (
        session.stages[0].created_at.ToMicroseconds()
        < session.stages[1].created_at.ToMicroseconds()
    )
    assert session.updated_at.ToMicroseconds() >= session.stages[1].created_at.ToMicroseconds()

    await call(
        stack, "DeleteSession", sessions_pb2.DeleteSessionRequest(session_id=session_id), alice
    )
    error = await refused(
        stack, "GetSession", sessions_pb2.GetSessionRequest(session_id=session_id), alice
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    db = await open_database(backend.url, backend.namespace, stack.data_dir, "runtime", MIGRATIONS)
    try:
        for execution_id in execution_ids:
            row = await db.fetchrow(
                "SELECT status, session_id FROM executions WHERE execution_id = $1", execution_id
            )
            assert row == {"status": "SUCCEEDED", "session_id": ""}
        assert (
            await db.fetchval(
                "SELECT COUNT(*) FROM session_stages WHERE session_id = $1", session_id
            )
            == 0
        )
    finally:
        await db.close()


async def test_pages_tokens_ids_and_sizes_get_precise_answers(stack: Stack) -> None:
    alice, bob = await new_user(stack), await new_user(stack)
    made = [await create(stack, alice, f"s{i}") for i in range(5)]
    seen, token, tokens = [], "", []
    while True:
        page = await call(
            stack,
            "ListSessions",
            sessions_pb2.ListSessionsRequest(page_size=2, page_token=token),
            alice,
        )
        assert isinstance(page, sessions_pb2.ListSessionsResponse)
        seen += [s.session_id for s in page.sessions]
        assert all(not s.stages for s in page.sessions)
        token = page.next_page_token
        if not token:
            break
        tokens.append(token)
    assert seen == made[::-1]  # most recently updated (here: created) first
    assert len(tokens) == 2

    def invalid(error: grpc.aio.AioRpcError, reason: str, fields: list[str]) -> None:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, describe(error)
        details = describe(error)
        assert details.reason == reason
        assert [v.field for v in details.field_violations] == fields

    # Alice's token is no key to Bob's listing, nor is one rewritten to name someone else.
    position = json.loads(base64.urlsafe_b64decode(tokens[0] + "=="))["p"]
    forged = page_tokens.encode(position, ("usr_other",))
    for who, bad in ((bob, tokens[0]), (alice, forged), (alice, "garbage!"), (alice, "e30")):
        error = await refused(
            stack, "ListSessions", sessions_pb2.ListSessionsRequest(page_token=bad), who
        )
        invalid(error, "PAGE_TOKEN_INVALID", ["page_token"])
    assert position  # the token held Alice's place, bound to her

    for bad_id in ("", "nope", "ses_" + "g" * 32, "ses_" + "0" * 10_000):
        error = await refused(
            stack, "GetSession", sessions_pb2.GetSessionRequest(session_id=bad_id), alice
        )
        invalid(error, "SESSION_ID_INVALID", ["session_id"])
    request = chat("hi")
    request.session_id = "not-a-session"
    async with stack.gateway_channel() as ch:
        with pytest.raises(grpc.aio.AioRpcError) as run:
            await (
                execution_pb2_grpc.ExecutionServiceStub(ch)
                .Execute(request, metadata=bearer(alice), timeout=30)
                .read()
            )
    invalid(run.value, "SESSION_ID_INVALID", ["session_id"])

    big = struct_pb2.Struct()
    big.update({"blob": "x" * (MAX_METADATA_BYTES + 1)})
    error = await refused(
        stack,
        "CreateSession",
        sessions_pb2.CreateSessionRequest(title="t" * (MAX_TITLE_CHARS + 1), metadata=big),
        alice,
    )
    invalid(error, "SESSION_INVALID", ["title", "metadata"])
    error = await refused(
        stack, "ListSessions", sessions_pb2.ListSessionsRequest(page_size=-1), alice
    )
    invalid(error, "SESSION_INVALID", ["page_size"])


def test_the_cli_creates_lists_shows_and_deletes_sessions(stack: Stack) -> None:
    def saga(*args: str) -> str:
        return ok(run_cli("--gateway", stack.target("gateway"), "--key", stack.admin_key(), *args))

    session_id = saga("sessions", "create", "--title", "cli run", "--meta", "desk=fx").strip()
    assert session_id.startswith("ses_")
    listed = saga("sessions", "list")
    assert listed.splitlines()[0].split() == ["SESSION", "ID", "CREATED", "UPDATED", "TITLE"]
    assert session_id in listed
    saga("sessions", "create", "--title", "a second")
    first = run_cli(
        "--gateway",
        stack.target("gateway"),
        "--key",
        stack.admin_key(),
        "sessions",
        "list",
        "--page-size",
        "1",
    )
    assert "a second" in ok(first)
    hint = first.stderr.strip()
    assert hint.startswith("more: --page-token ")
    assert "cli run" in saga("sessions", "list", "--page-size", "1", *hint.split()[1:])
    executed = json.loads(
        saga(
            "execute", "chat", "--input", "prompt=hi", "--session", session_id, "--json"
        ).splitlines()[0]
    )
    execution_id = executed["accepted"]["executionId"]

    shown = saga("sessions", "show", session_id)
    assert "title     cli run" in shown
    assert '{"desk": "fx"}' in shown
    stage = next(line for line in shown.splitlines() if execution_id in line)
    assert stage.split()[:3] == ["1", execution_id, "chat"]
    assert '{"prompt": "hi"}' in stage
    as_json = json.loads(saga("sessions", "show", session_id, "--json"))
    assert [s["executionId"] for s in as_json["session"]["stages"]] == [execution_id]
    assert as_json["session"]["stages"][0]["inputs"] == {"prompt": "hi"}

    assert saga("sessions", "delete", session_id).strip() == f"deleted {session_id}"
    gone = run_cli(
        "--gateway",
        stack.target("gateway"),
        "--key",
        stack.admin_key(),
        "sessions",
        "show",
        session_id,
    )
    assert gone.returncode == 1
    assert "NOT_FOUND SESSION_NOT_FOUND" in gone.stderr


async def test_the_node_client_creates_runs_in_shows_and_deletes_a_session(stack: Stack) -> None:
    alice, bob = await new_user(stack), await new_user(stack)
    [made] = await node(
        stack, "sessions.js", "create", "--title", "from node", "desk=fx", key=alice
    )
    session_id = made["session_id"]
    assert (made["title"], made["metadata"], made["stages"]) == ("from node", {"desk": "fx"}, [])
    runs = [
        await node(stack, "execute.js", "--session", session_id, "chat", f"prompt={p}", key=alice)
        for p in ("one", "two")
    ]
    assert all(run[-1]["event"] == "completed" for run in runs)

    [shown] = await node(stack, "sessions.js", "show", session_id, key=alice)
    assert [s["execution_id"] for s in shown["stages"]] == [
        run[0]["accepted"]["execution_id"] for run in runs
    ]
    assert [s["pattern_id"] for s in shown["stages"]] == ["chat", "chat"]
    assert [s["inputs"] for s in shown["stages"]] == [{"prompt": "one"}, {"prompt": "two"}]
    assert [s["outputs"]["text"] for s in shown["stages"]] == [node_text(run) for run in runs]
    assert shown["stages"][0]["created_at"] <= shown["stages"][1]["created_at"]
    [listed] = await node(stack, "sessions.js", "list", "--page-size", "1", key=alice)
    assert [s["session_id"] for s in listed["sessions"]] == [session_id]

    # Bob learns nothing of it: not shown, not deleted, the answer for a session never made.
    for command in ("show", "delete"):
        [refusal] = await node(stack, "sessions.js", command, session_id, key=bob, status=1)
        assert (refusal["error"], refusal["reason"], refusal["domain"]) == (
            "NOT_FOUND",
            "SESSION_NOT_FOUND",
            "runtime.saga",
        )

    assert await node(stack, "sessions.js", "delete", session_id, key=alice) == [
        {"deleted": session_id}
    ]
    [gone] = await node(stack, "sessions.js", "show", session_id, key=alice, status=1)
    assert gone["reason"] == "SESSION_NOT_FOUND"
