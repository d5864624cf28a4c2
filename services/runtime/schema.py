"""The runtime's schema: versioned migrations, applied at start by
`services.common.database.open_database` (SQLite `<data_dir>/runtime.db`, or the PostgreSQL
schema `<namespace>_runtime`). Append new versions; never edit one that has shipped.

`exclusive` makes a transaction the only writer of a named thing across every process (the
ledger's head, the first pack), so replicas never fork the chain or seed twice.
"""

from __future__ import annotations

from services.common.database import Tx

_V1 = """
    CREATE TABLE ledger_transactions (
        seq {seq},
        portfolio TEXT NOT NULL,
        trade_date TEXT NOT NULL,
        symbol TEXT NOT NULL,
        side TEXT NOT NULL,
        quantity_micro {int64} NOT NULL,
        price_micro {int64} NOT NULL,
        currency TEXT NOT NULL,
        prev_hash TEXT NOT NULL UNIQUE,
        hash TEXT NOT NULL UNIQUE,
        recorded_at TEXT NOT NULL
    );
    CREATE INDEX ledger_transactions_portfolio ON ledger_transactions (portfolio, seq);
    CREATE TABLE packs (
        pack_id TEXT PRIMARY KEY,
        asof TEXT NOT NULL,
        source TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        prices TEXT NOT NULL,
        checksum TEXT NOT NULL
    );
    CREATE INDEX packs_asof ON packs (status, asof, created_at);
    CREATE TABLE executions (
        execution_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        pattern_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        asof TEXT NOT NULL,
        status TEXT NOT NULL,
        error_reason TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        completed_at TEXT,
        usage TEXT NOT NULL DEFAULT '{{}}',
        cost_micro_usd {int64} NOT NULL DEFAULT 0,
        pricing_pack_id TEXT NOT NULL,
        ledger_commit_hash TEXT NOT NULL,
        trace_id TEXT NOT NULL
    );
    CREATE INDEX executions_user ON executions (user_id, created_at)
    """

_V3 = """
    CREATE TABLE execution_events (
        execution_id TEXT NOT NULL,
        sequence BIGINT NOT NULL,
        payload {bytes} NOT NULL,
        PRIMARY KEY (execution_id, sequence)
    );
    ALTER TABLE executions ADD COLUMN error_status {bytes};
    ALTER TABLE executions ADD COLUMN idempotency_key TEXT NOT NULL DEFAULT '';
    ALTER TABLE executions ADD COLUMN request_digest TEXT NOT NULL DEFAULT '';
    ALTER TABLE executions ADD COLUMN events_pruned BOOLEAN NOT NULL DEFAULT FALSE;
    CREATE INDEX executions_created ON executions (created_at, execution_id);
    CREATE UNIQUE INDEX executions_idempotency ON executions (user_id, idempotency_key)
        WHERE idempotency_key <> ''
    """

_V4 = """
    ALTER TABLE packs ADD COLUMN reconciliation TEXT NOT NULL DEFAULT '';
    ALTER TABLE packs ADD COLUMN ready_by TEXT NOT NULL DEFAULT '';
    ALTER TABLE packs ADD COLUMN price_count INTEGER NOT NULL DEFAULT 0;
    UPDATE packs SET price_count = json_array_length({prices});
    CREATE INDEX packs_date ON packs (asof, created_at)
    """

_V5 = """
    CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        title TEXT NOT NULL,
        metadata TEXT NOT NULL,
        created_at_us BIGINT NOT NULL,
        updated_at_us BIGINT NOT NULL
    );
    CREATE INDEX sessions_user ON sessions (user_id, updated_at_us, session_id);
    CREATE TABLE session_stages (
        seq {seq},
        session_id TEXT NOT NULL,
        execution_id TEXT NOT NULL,
        pattern_id TEXT NOT NULL,
        outputs TEXT NOT NULL,
        started_at_us BIGINT NOT NULL,
        completed_at_us BIGINT NOT NULL
    );
    CREATE INDEX session_stages_session ON session_stages (session_id, seq);
    CREATE INDEX executions_session ON executions (session_id)
    """

_V7 = """
    ALTER TABLE executions ADD COLUMN resume_request {bytes};
    ALTER TABLE executions ADD COLUMN context_token TEXT NOT NULL DEFAULT '';
    ALTER TABLE executions ADD COLUMN resume_until_ms BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE executions ADD COLUMN moves INTEGER NOT NULL DEFAULT 0
    """

MIGRATIONS = (
    # 1: the hash-chained ledger, pricing packs, execution records. The SQLite text is the one
    # that shipped; PostgreSQL needs an identity column for `seq` (SQLite's INTEGER PRIMARY
    # KEY is the rowid) and 64-bit integers for amounts in millionths.
    {
        "sqlite": _V1.format(seq="INTEGER PRIMARY KEY", int64="INTEGER"),
        "postgresql": _V1.format(
            seq="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", int64="BIGINT"
        ),
    },
    # 2: which replica runs each execution, and the replicas' leases, so a replica that starts
    # interrupts only the runs of replicas that are gone (records from before: replica '').
    """
    ALTER TABLE executions ADD COLUMN replica_id TEXT NOT NULL DEFAULT '';
    CREATE INDEX executions_running ON executions (status, replica_id);
    CREATE TABLE replicas (
        replica_id TEXT PRIMARY KEY,
        expires_at_ms BIGINT NOT NULL
    )
    """,
    # 3: the event log of every execution (WatchExecution replays it), the status a failed
    # run's stream ended with (a watcher of it ends with the same), and idempotency keys (one
    # live run per user and key; the digest tells a retry from another request), and whether
    # a run's events were pruned by retention.
    {
        "sqlite": _V3.format(bytes="BLOB"),
        "postgresql": _V3.format(bytes="BYTEA"),
    },
    # 4: pack reconciliation (its summary as JSON, '' until reconciled), while a pack is
    # WARMING when it is expected to be ready, and its number of prices (so health and lists
    # read no prices; packs stored before are counted here); packs of one date, newest first.
    {
        "sqlite": _V4.format(prices="prices"),
        "postgresql": _V4.format(prices="prices::json"),
    },
    # 5: staged sessions and their stages (one per completed run, oldest first by `seq`).
    # Instants are BIGINT microseconds (services.common.database); a session's list order is
    # (updated_at_us, session_id) newest first, which is also its page token. Deleting a
    # session clears the session id of its executions, hence their index on it.
    {
        "sqlite": _V5.format(seq="INTEGER PRIMARY KEY"),
        "postgresql": _V5.format(seq="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
    },
    # 6: the inputs of each stage's run (JSON), from which `{{session.history}}` derives the
    # prompts of the conversation; stages stored before have none, so no turn.
    "ALTER TABLE session_stages ADD COLUMN inputs TEXT NOT NULL DEFAULT '{}'",
    # 7: what a detached run needs to continue on another replica when its own dies (durable
    # runs): its RunPatternRequest, the request context it was started with (bound to the
    # execution, expiring at the run's deadline), until when it may resume (the earlier of
    # the two), and how often it moved (a claim is conditional on it, so one replica wins).
    {
        "sqlite": _V7.format(bytes="BLOB"),
        "postgresql": _V7.format(bytes="BYTEA"),
    },
)


async def exclusive(dialect: str, tx: Tx, name: str) -> None:
    """Make `tx` the only writer of `name` until it ends, across every process, so what it
    reads next is the latest committed state.

    SQLite write transactions are already exclusive (BEGIN IMMEDIATE). PostgreSQL waits on a
    transaction-scoped advisory lock keyed by schema and name, so two replicas extending the
    ledger queue instead of one failing on the unique `prev_hash`.
    """
    if dialect == "postgresql":
        await tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.' || $1))", name
        )
