"""The router's tables, one migration per version (`services.common.database` applies each
once). Append new versions; never edit one that has shipped.

* `outbox` — the only thing the router stores: each attempt's outcome (`payload`, an
  `optimizer.v1.Outcome`) until the optimizer acknowledged it, keyed by its idempotent id,
  with the `traceparent` of the Reason call it came from; `created_at` is epoch seconds
  (see `outbox.py`).
* `outbox_attempts` (v2) — attempts in flight: a provisional, estimated outcome per attempt
  (`payload`), written when it starts and raised as its text streams, owned by one router
  process (`owner`, a random id per start) while its lease (`lease_until_us`) is renewed; the
  attempt's real outcome replaces it. A row whose lease ran out is a crashed router's: it
  moves to `outbox` as it is (estimated, flagged) and is shipped.
* `outbox_dead_letters` (v2) — outcomes the optimizer refused for good (`problem` says why),
  kept for an operator instead of blocking the outbox.

Instants in the v2 tables are BIGINT microseconds since the epoch (`database.py`).
"""

from __future__ import annotations

from services.common.database import Migration

MIGRATIONS: tuple[Migration, ...] = (
    """
    CREATE TABLE outbox (
        outcome_id TEXT PRIMARY KEY,
        payload BYTEA NOT NULL,
        traceparent TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX outbox_created ON outbox (created_at)
    """,
    """
    CREATE TABLE outbox_attempts (
        outcome_id TEXT PRIMARY KEY,
        payload BYTEA NOT NULL,
        traceparent TEXT NOT NULL,
        owner TEXT NOT NULL,
        lease_until_us BIGINT NOT NULL,
        created_us BIGINT NOT NULL
    );
    CREATE INDEX outbox_attempts_lease ON outbox_attempts (lease_until_us);
    CREATE TABLE outbox_dead_letters (
        outcome_id TEXT PRIMARY KEY,
        payload BYTEA NOT NULL,
        problem TEXT NOT NULL,
        stored_us BIGINT NOT NULL,
        dead_us BIGINT NOT NULL
    )
    """,
)
