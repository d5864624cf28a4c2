"""The ranking strategies: one vocabulary for the configuration, the optimizer and the router.

The values are the names saga.toml uses (`optimizer.default_strategy`); the protobuf enum
values they travel as are mapped in `strategy_proto`, the one place that knows both.
"""

from __future__ import annotations

import enum


class Strategy(enum.StrEnum):
    """How to order candidates (see `services.optimizer.ranking` for what each one means)."""

    CHEAPEST = "cheapest"
    FASTEST = "fastest"
    QUALITY = "quality"
    BALANCED = "balanced"
    RELIABLE = "reliable"
    CUSTOM = "custom"
