"""Ledger import and export rights through the gateway, with all six services as real processes
and the LLM played by a fake HTTP provider (so its request count is known).

Covered: `saga ledger import FILE.csv` appends atomically and returns the new head, which the
next run pins and reads positions at; a bad file is refused with every bad cell named by line
and nothing appended; a key without scope `admin` is refused (control: the admin's key).
`export=true` on a pattern whose lineage holds a denying source is PERMISSION_DENIED
RIGHTS_EXPORT_BLOCKED before anything runs — no event, no provider call, no execution record
(control: the same pattern without export runs); an allowed export is a watermarked JSON or CSV
document, and `Completed.attributions` lists the sources the run used. On SQLite and
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import secrets
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import struct_pb2

from saga.execution.v1 import options_pb2
from saga.gateway.v1 import account_pb2, account_pb2_grpc, execution_pb2, execution_pb2_grpc
from services.common.status import describe
from tests.conftest import PG_URL, Backend, drop_schemas
from tests.e2e.test_cli import ok, run_cli, saga_cli
from tests.e2e.test_execute import bearer
from tests.e2e.test_resilience_gateway import provider_toml
from tests.fakes.providers import FakeProviders, Script
from tests.harness import Stack, stack_for

POSITIONS = """
id: positions_report
description: The demo portfolio's positions and a line of LLM text.
inputs:
  portfolio: {type: string, required: true}
steps:
  - id: positions
    capability: ledger.positions
    args: {portfolio: "{{inputs.portfolio}}"}
  - id: note
    capability: llm.complete
    args: {prompt: "Describe portfolio {{inputs.portfolio}}"}
outputs:
  positions: "{{state.positions.positions}}"
  commit: "{{state.positions.ledger_commit_hash}}"
  note: "{{state.note.text}}"
"""

REFERENCE = """
id: reference_report
description: Positions, their reference data (a source that denies export) and LLM text.
inputs:
  portfolio: {type: string, required: true}
steps:
  - id: positions
    capability: ledger.positions
    args: {portfolio: "{{inputs.portfolio}}"}
  - id: securities
    capability: data.lookup
    args: {dataset: securities, keys: [AAPL, MSFT]}
  - id: note
    capability: llm.complete
    args: {prompt: "Describe {{inputs.portfolio}}"}
"""

CSV_HEADER = "portfolio,trade_date,symbol,side,quantity,price,currency\n"


@dataclass
class Deployment:
    stack: Stack
    fake: FakeProviders
    backend: Backend

    async def execute(
        self, pattern: str, credential: str = "", **options: Any
    ) -> tuple[list[execution_pb2.ExecuteResponse], grpc.aio.AioRpcError | None]:
        inputs = struct_pb2.Struct()
        inputs.update({"portfolio": "demo"})
        request = execution_pb2.ExecuteRequest(
            pattern_id=pattern, inputs=inputs, options=options_pb2.ExecuteOptions(**options)
        )
        events: list[execution_pb2.ExecuteResponse] = []
        async with self.stack.gateway_channel() as ch:
            try:
                async for event in execution_pb2_grpc.ExecutionServiceStub(ch).Execute(
                    request, metadata=bearer(credential or self.stack.admin_key()), timeout=60
                ):
                    events.append(event)
            except grpc.aio.AioRpcError as error:
                return events, error
        return events, None

    async def executions(self) -> int:
        """How many execution records the runtime holds."""
        if self.backend.name == "sqlite":
            with sqlite3.connect(self.stack.data_dir / "runtime.db") as db:
                return int(db.execute("SELECT count(*) FROM executions").fetchone()[0])
        connection = await asyncpg.connect(self.backend.url)
        try:
            schema = f"{self.backend.namespace}_runtime"
            return int(await connection.fetchval(f'SELECT count(*) FROM "{schema}".executions'))  # noqa: S608 (our own test namespace)
        finally:
            await connection.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deployment]:
    # The `backend` fixture is per test; one stack per backend serves this module.
    namespace = f"t{secrets.token_hex(6)}"
    backend = Backend(request.param, PG_URL if request.param == "postgresql" else "", namespace)
    path = tmp_path_factory.mktemp("ledger_rights")
    patterns = path / "patterns"
    patterns.mkdir()
    (path / "stack").mkdir()
    (patterns / "positions_report.yaml").write_text(POSITIONS)
    (patterns / "reference_report.yaml").write_text(REFERENCE)
    fake = FakeProviders()
    await fake.start()
    fake.defaults["ollama"] = Script(tokens=3)
    config = provider_toml("local", fake, "ollama", credential="none") + (
        '\n[[rights.sources]]\nname = "securities"\nexport = "deny"\n'
        'attribution = "Reference data under licence"\n'
    )
    try:
        async with stack_for(
            path / "stack",
            config=config,
            SAGA_RUNTIME__PATTERNS_DIR=str(patterns),
            **backend.env(),
        ) as stack:
            yield Deployment(stack, fake, backend)
    finally:
        await fake.stop()
        if backend.name == "postgresql":
            await drop_schemas(namespace)


def completed(events: list[execution_pb2.ExecuteResponse]) -> Any:
    assert events[-1].WhichOneof("event") == "completed", events[-1]
    return events[-1].completed


async def test_an_imported_csv_moves_the_head_that_the_next_run_reads(
    deployment: Deployment, tmp_path: Path
) -> None:
    before, _ = await deployment.execute("positions_report")
    old_head = before[0].accepted.ledger_commit_hash
    file = tmp_path / "trades.csv"
    file.write_text(
        CSV_HEADER
        + "demo,2024-03-01,TSLA,buy,3,180.5,USD\n"
        + "demo,2024-03-02,AAPL,sell,25,190,USD\n"
    )
    reply = json.loads(ok(saga_cli(deployment.stack, "ledger", "import", str(file), "--json")))
    assert reply["previousCommitHash"] == old_head
    assert reply["transactions"] == 2
    new_head = reply["ledgerCommitHash"]
    assert new_head != old_head

    events, error = await deployment.execute("positions_report")
    assert error is None, describe(error)
    assert events[0].accepted.ledger_commit_hash == new_head
    outputs = completed(events).outputs
    assert outputs["commit"] == new_head
    held = {p["symbol"]: p["quantity"] for p in outputs["positions"]}
    assert held["TSLA"] == "3.000000"
    assert held["AAPL"] == "50.000000"


async def test_a_bad_csv_names_every_bad_cell_and_appends_nothing(
    deployment: Deployment, tmp_path: Path
) -> None:
    file = tmp_path / "bad.csv"
    file.write_text(
        CSV_HEADER + "demo,2024-03-01,TSLA,buy,3,1,USD\ndemo,2024-13-01,TSLA,buy,x,1,USD\n"
    )
    head = (await deployment.execute("positions_report"))[0][0].accepted.ledger_commit_hash
    result = saga_cli(deployment.stack, "ledger", "import", str(file))
    assert result.returncode == 1, result.stdout
    assert "LEDGER_IMPORT_INVALID" in result.stderr
    assert "csv.lines[3].trade_date" in result.stderr
    assert "csv.lines[3].quantity" in result.stderr
    oversold = tmp_path / "oversold.csv"
    oversold.write_text(CSV_HEADER + "demo,2024-03-01,MSFT,sell,1000,1,USD\n")
    result = saga_cli(deployment.stack, "ledger", "import", str(oversold))
    assert "LEDGER_OVERSOLD" in result.stderr
    assert "csv.lines[2].quantity" in result.stderr
    after = (await deployment.execute("positions_report"))[0][0].accepted.ledger_commit_hash
    assert after == head


async def test_ledger_import_needs_scope_admin(deployment: Deployment) -> None:
    async with deployment.stack.gateway_channel() as ch:
        made = await account_pb2_grpc.AccountServiceStub(ch).CreateApiKey(
            account_pb2.CreateApiKeyRequest(name="runner", scopes=["execute"]),
            metadata=bearer(deployment.stack.admin_key()),
            timeout=10,
        )
    result = run_cli(
        "--gateway",
        deployment.stack.target("gateway"),
        "--key",
        made.api_key,
        *("ledger", "import", "-"),
        stdin=CSV_HEADER,
    )
    assert result.returncode == 1
    assert "PERMISSION_DENIED" in result.stderr
    # Control: the admin's key reaches the runtime (which then refuses the empty file).
    control = saga_cli(deployment.stack, "ledger", "import", "-", stdin=CSV_HEADER)
    assert "LEDGER_IMPORT_INVALID" in control.stderr


async def test_an_export_through_a_denying_source_is_refused_before_anything_runs(
    deployment: Deployment,
) -> None:
    calls, records = len(deployment.fake.requests()), await deployment.executions()
    events, error = await deployment.execute("reference_report", export=True)
    assert error is not None
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, describe(error)
    details = describe(error)
    assert (details.reason, details.domain) == ("RIGHTS_EXPORT_BLOCKED", "runtime.saga")
    assert details.metadata["sources"] == "securities"
    assert events == []  # not even Accepted: no step started, the ledger was not read
    assert len(deployment.fake.requests()) == calls
    assert await deployment.executions() == records
    assert "export blocked by the rights registry" in deployment.stack.read_log("runtime")

    # Control: the same run, not an export, runs every step and credits the source.
    events, error = await deployment.execute("reference_report")
    assert error is None, describe(error)
    sources = [a.source for a in completed(events).attributions]
    assert sources == ["ledger", "securities"]
    assert completed(events).watermark == ""
    assert len(deployment.fake.requests()) == calls + 1


async def test_an_allowed_export_is_a_watermarked_document(deployment: Deployment) -> None:
    events, error = await deployment.execute("positions_report", export=True)
    assert error is None, describe(error)
    done = completed(events)
    execution_id = events[0].accepted.execution_id
    assert done.watermark == f"Saga ledger | Saga export {execution_id}"
    assert [a.source for a in done.attributions] == ["ledger"]
    document = json.loads(done.export_document)
    assert document["watermark"] == done.watermark
    assert document["ledger_commit_hash"] == done.ledger_commit_hash
    assert document["outputs"]["commit"] == done.ledger_commit_hash

    events, error = await deployment.execute(
        "positions_report", export=True, export_format=options_pb2.EXPORT_FORMAT_CSV
    )
    assert error is None, describe(error)
    rows = dict(csv.reader(io.StringIO(completed(events).export_document)))
    assert rows["saga.watermark"].startswith("Saga ledger | Saga export exe_")
    assert rows["positions.0.symbol"] == "AAPL"

    # Without export, the format is not read: the run is not an export.
    events, error = await deployment.execute(
        "positions_report", export_format=options_pb2.EXPORT_FORMAT_CSV
    )
    assert error is None, describe(error)
    assert (completed(events).watermark, completed(events).export_document) == ("", "")


async def test_saga_execute_export_prints_the_document_and_a_refusal_in_one_line(
    deployment: Deployment,
) -> None:
    # Off the event loop: the fake provider this process serves must keep answering.
    run = ("execute", "positions_report", "--input", "portfolio=demo", "--export", "csv")
    printed = ok(await asyncio.to_thread(saga_cli, deployment.stack, *run))
    assert "saga.watermark,Saga ledger | Saga export exe_" in printed
    blocked = ("execute", "reference_report", "--input", "portfolio=demo", "--export", "json")
    refused = await asyncio.to_thread(saga_cli, deployment.stack, *blocked)
    assert refused.returncode == 1
    assert "PERMISSION_DENIED RIGHTS_EXPORT_BLOCKED (runtime.saga)" in refused.stderr
