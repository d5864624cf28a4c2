"""The runtime's SQLite schema (`<data_dir>/runtime.db`): versioned migrations, applied at
start by `services.common.storage.Database.open`. Append new versions; never edit one that
has shipped."""

from __future__ import annotations

MIGRATIONS = (
    # 1: the hash-chained ledger, pricing packs, execution records.
    """
    CREATE TABLE ledger_transactions (
        seq INTEGER PRIMARY KEY,
        portfolio TEXT NOT NULL,
        trade_date TEXT NOT NULL,
        symbol TEXT NOT NULL,
        side TEXT NOT NULL,
        quantity_micro INTEGER NOT NULL,
        price_micro INTEGER NOT NULL,
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
        usage TEXT NOT NULL DEFAULT '{}',
        cost_micro_usd INTEGER NOT NULL DEFAULT 0,
        pricing_pack_id TEXT NOT NULL,
        ledger_commit_hash TEXT NOT NULL,
        trace_id TEXT NOT NULL
    );
    CREATE INDEX executions_user ON executions (user_id, created_at)
    """,
)
