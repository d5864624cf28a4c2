"""The router's tables, one migration per version (`services.common.database` applies each
once). Append new versions; never edit one that has shipped.

* `outbox` — the only thing the router stores: each attempt's outcome (`payload`, an
  `optimizer.v1.Outcome`) until the optimizer acknowledged it, keyed by its idempotent id,
  with the `traceparent` of the Reason call it came from; `created_at` is epoch seconds
  (see `outbox.py`).
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
)
