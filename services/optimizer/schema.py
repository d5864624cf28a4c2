"""The optimizer's tables (SQLite and PostgreSQL alike; see services.common.database).

* `usage_records` — the usage ledger: one row per provider attempt, keyed by the router's
  outcome id so a resent outcome is stored once. `occurred_at` is epoch seconds and `day`
  its UTC date (`YYYY-MM-DD`), which GetUsage filters and groups on.
* `budget_spend` — per user and period, what settled calls were charged; its row is the lock
  that serialises a user's reservations.
* `budget_reservations` — one row per reservation: `held` until settled (or until it
  expires: a held row past `expires_at` no longer counts), then `settled` with the real
  cost. The answer given at reservation time is kept so a repeated reserve repeats it.
* `provider_priors` — operator-set priors (UpdateMetrics); NULL = the configured value.
* `budget_limits` (migration 2) — the budgets an admin set: per user (`key_id` '') and per
  API key of a user; a user without a row has the configured default. `updated_at` is
  BIGINT microseconds. Reservations gained `key_id` (the API key the call was made with,
  '' for none), which a key's spend is summed over.
* migration 3 — `usage_records` gained `cache_write_tokens` (input tokens written to the
  provider's prompt cache; 0 before) and `charge_micro_usd` (what the caller is charged
  for the attempt; rows from before are charged their cost, as they were).
* migration 4 — `provider_priors.samples_since`: an operator's UpdateMetrics with
  `reset_samples` (epoch seconds; NULL = never), so the outcomes before it stay out of the
  live metrics of every replica and across restarts, although the ledger keeps them; and
  `default_strategy` — the one row (id 1) SetDefaultStrategy wrote last (CUSTOM with its
  normalised weights, NULL otherwise), which every replica takes, and a restart keeps over
  `optimizer.default_strategy`.
"""

from __future__ import annotations

from services.common.database import Migration

MIGRATIONS: tuple[Migration, ...] = (
    """
    CREATE TABLE usage_records (
        outcome_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        execution_id TEXT NOT NULL,
        step_id TEXT NOT NULL,
        pattern_id TEXT NOT NULL,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        cached_tokens BIGINT NOT NULL,
        estimated BOOLEAN NOT NULL,
        cost_micro_usd BIGINT NOT NULL,
        latency_ms INTEGER NOT NULL,
        ttft_ms INTEGER NOT NULL,
        status TEXT NOT NULL,
        error_reason TEXT NOT NULL,
        retry_count INTEGER NOT NULL,
        price_table_version TEXT NOT NULL,
        occurred_at DOUBLE PRECISION NOT NULL,
        day TEXT NOT NULL,
        recorded_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX usage_records_day ON usage_records (day);
    CREATE INDEX usage_records_user_day ON usage_records (user_id, day);
    CREATE INDEX usage_records_provider_occurred ON usage_records (provider, occurred_at);
    CREATE TABLE budget_spend (
        user_id TEXT NOT NULL,
        period TEXT NOT NULL,
        spent_micro_usd BIGINT NOT NULL,
        PRIMARY KEY (user_id, period)
    );
    CREATE TABLE budget_reservations (
        reservation_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        execution_id TEXT NOT NULL,
        period TEXT NOT NULL,
        amount_micro_usd BIGINT NOT NULL,
        state TEXT NOT NULL,
        cost_micro_usd BIGINT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        remaining_micro_usd BIGINT NOT NULL,
        degrade BOOLEAN NOT NULL
    );
    CREATE INDEX budget_reservations_held ON budget_reservations (user_id, period, state);
    CREATE INDEX budget_reservations_created ON budget_reservations (created_at);
    CREATE TABLE provider_priors (
        provider TEXT PRIMARY KEY,
        p50_latency_ms DOUBLE PRECISION,
        p99_latency_ms DOUBLE PRECISION,
        p50_ttft_ms DOUBLE PRECISION,
        p99_ttft_ms DOUBLE PRECISION,
        success_rate DOUBLE PRECISION,
        quality DOUBLE PRECISION,
        updated_at DOUBLE PRECISION NOT NULL
    )
    """,
    """
    CREATE TABLE budget_limits (
        user_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        amount_micro_usd BIGINT NOT NULL,
        period_kind TEXT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (user_id, key_id)
    );
    ALTER TABLE budget_reservations ADD COLUMN key_id TEXT NOT NULL DEFAULT '';
    CREATE INDEX budget_reservations_key ON budget_reservations (user_id, key_id, created_at)
    """,
    """
    ALTER TABLE usage_records ADD COLUMN cache_write_tokens BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE usage_records ADD COLUMN charge_micro_usd BIGINT NOT NULL DEFAULT 0;
    UPDATE usage_records SET charge_micro_usd = cost_micro_usd
    """,
    """
    ALTER TABLE provider_priors ADD COLUMN samples_since DOUBLE PRECISION;
    CREATE TABLE default_strategy (
        id INTEGER PRIMARY KEY,
        strategy TEXT NOT NULL,
        cost DOUBLE PRECISION,
        latency DOUBLE PRECISION,
        quality DOUBLE PRECISION,
        reliability DOUBLE PRECISION,
        updated_at DOUBLE PRECISION NOT NULL
    )
    """,
)
"""Migrations in order; append, never edit one that has shipped."""
