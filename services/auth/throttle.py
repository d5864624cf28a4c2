"""Per-account throttling of failed logins, in the database so every replica sees it.

An account (a hash of the normalised email, whether or not such a user exists — otherwise
the lock would tell who is registered) may fail `max_failures` times in a row; then it is
locked for `lockout` seconds, doubling with each further failure up to `max_lockout`.
Failures are forgotten `window` seconds after the last attempt, and at once after a
successful login.

Each attempt is counted BEFORE the password is checked, in one conditional statement: an
attempt is admitted only while the account is not locked, and the attempt that reaches
the limit locks it (provisionally, for `lockout`) in that same statement. So a burst of
concurrent guesses gets no more tries than a patient attacker.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.common.database import Database
from services.common.errors import ResourceExhausted

PRUNE_INTERVAL_SECONDS = 60.0


@dataclass(frozen=True)
class ThrottlePolicy:
    """How many failures lock an account, and for how long."""

    max_failures: int = 5
    lockout: float = 30.0
    max_lockout: float = 900.0
    window: float = 3600.0

    def lock_for(self, failures: int) -> float:
        """Seconds an account stays locked after its `failures`-th failure in a row."""
        if failures < self.max_failures:
            return 0.0
        doublings = min(failures - self.max_failures, 40)
        return float(min(self.max_lockout, self.lockout * 2**doublings))


def account_key(email: str) -> str:
    """The throttle's name for an account: a hash, so the table holds no email addresses
    (most rows are typos and guesses)."""
    return hashlib.sha256(email.encode()).hexdigest()


class LoginThrottle:
    """The failed-login counters of every account."""

    def __init__(
        self, db: Database, policy: ThrottlePolicy, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = db
        self._policy = policy
        self._clock = clock
        self._pruned_at = float("-inf")

    async def admit(self, account: str) -> int:
        """Count an attempt for `account` and return its number in the current run of
        failures; ResourceExhausted LOGIN_THROTTLED (with RetryInfo) while it is locked."""
        now = self._clock()
        policy = self._policy
        first_lock = now + policy.lock_for(1) if policy.max_failures <= 1 else 0.0
        row = await self._db.fetchrow(
            """
            INSERT INTO login_throttle (account, failures, locked_until, updated_at)
            VALUES ($1, 1, $2, $3)
            ON CONFLICT (account) DO UPDATE SET
                failures = CASE WHEN login_throttle.updated_at < $4 THEN 1
                                ELSE login_throttle.failures + 1 END,
                locked_until = CASE
                    WHEN (CASE WHEN login_throttle.updated_at < $4 THEN 1
                               ELSE login_throttle.failures + 1 END) >= $5
                        THEN CAST($6 AS DOUBLE PRECISION)
                    ELSE 0 END,
                updated_at = $3
            WHERE login_throttle.locked_until <= $3
            RETURNING failures
            """,
            account,
            first_lock,
            now,
            now - policy.window,
            policy.max_failures,
            now + policy.lockout,
        )
        if row is not None:
            return int(row["failures"])
        locked_until = await self._db.fetchval(
            "SELECT locked_until FROM login_throttle WHERE account = $1", account
        )
        wait = max(1.0, math.ceil((locked_until or now) - now))
        raise ResourceExhausted(
            "too many failed logins for this account; try again later",
            reason="LOGIN_THROTTLED",
            retry_after=wait,
            metadata={"retryAfterSeconds": str(int(wait))},
        )

    async def failed(self, account: str, failures: int) -> None:
        """Record that attempt number `failures` failed: lock the account when it reached
        the limit, for longer the more it failed."""
        now = self._clock()
        lock = self._policy.lock_for(failures)
        if lock > 0:
            await self._db.execute(
                "UPDATE login_throttle SET locked_until = $1 WHERE account = $2",
                now + lock,
                account,
            )
        if now - self._pruned_at >= PRUNE_INTERVAL_SECONDS:
            self._pruned_at = now
            await self._db.execute(
                "DELETE FROM login_throttle WHERE updated_at < $1 AND locked_until < $2",
                now - self._policy.window,
                now,
            )

    async def succeeded(self, account: str) -> None:
        """Forget `account`'s failures (a correct password ends the run)."""
        await self._db.execute("DELETE FROM login_throttle WHERE account = $1", account)
