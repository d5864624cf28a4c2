"""Idempotent intake of call outcomes: an outcome id is counted once however often the router
resends it.

Issue 3 keeps the ids in memory only, bounded (the oldest are forgotten first), which covers
the resends of a live router; the persisted usage ledger (issue 5) replaces this with a
unique key in the database.
"""

from __future__ import annotations

from collections import OrderedDict

DEFAULT_REMEMBERED = 100_000


class SeenOutcomes:
    """The most recent outcome ids, to tell new outcomes from resent ones."""

    def __init__(self, capacity: int = DEFAULT_REMEMBERED) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, outcome_id: str) -> bool:
        """Remember `outcome_id`; True if it is new, False if it was seen already."""
        if outcome_id in self._ids:
            self._ids.move_to_end(outcome_id)
            return False
        self._ids[outcome_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return True
