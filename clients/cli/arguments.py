"""Command-line values and what a bad one prints: one line naming the problem, exit 2.

`Parser` replaces argparse's usage dump with a single line that points at `--help`; the
value parsers here are argparse `type=` functions, so a bad `--expires` or `--by` is refused
before any call is made.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import NoReturn

from saga.execution.v1 import options_pb2, records_pb2
from services.common.call_options import MAX_COST_MICRO_USD, weights_problem

EXIT_USAGE = 2
"""The exit code of a usage error: argparse's own, and every bad value's."""

DIMENSIONS = tuple(
    name.removeprefix("USAGE_DIMENSION_").lower()
    for name, value in records_pb2.UsageDimension.items()
    if value != records_pb2.USAGE_DIMENSION_UNSPECIFIED
)
"""The `--by` dimensions, in the order of the UsageDimension enum."""

MAX_BUDGET_MICRO_USD = 10**15
"""The largest `--amount` (the optimizer's bound: $1,000,000,000)."""

MAX_TIMEOUT = 86_400.0
"""The longest `--timeout`, in seconds."""

_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"(\d+)([mhdw])")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (`saga keys create: … (see --help)`)."""

    def error(self, message: str) -> NoReturn:
        """Print the problem and where to read more, then exit 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def expiry(text: str, now: datetime) -> datetime:
    """`--expires`: a duration from `now` (`45m`, `12h`, `30d`, `2w`) or an ISO 8601 time
    (`2027-01-01T00:00:00Z`; UTC when it names no offset); it must lie in the future."""
    match = _DURATION.fullmatch(text.strip())
    if match:
        amount, unit = int(match[1]), _UNITS[match[2]]
        if amount == 0:
            raise argparse.ArgumentTypeError(f"{text!r} is no time at all; the key would be dead")
        try:
            return now + timedelta(**{unit: amount})
        except OverflowError:
            raise argparse.ArgumentTypeError(f"{text!r} is too far in the future") from None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (45m, 12h, 30d, 2w) nor an ISO 8601 time "
            f"(2027-01-01T00:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment <= now:
        raise argparse.ArgumentTypeError(f"{text!r} is in the past; an expiry must be ahead")
    return moment


def expiry_from_now(text: str) -> datetime:
    """`expiry` against the clock, for argparse."""
    return expiry(text, datetime.now(UTC))


def seconds(text: str) -> float:
    """`--timeout`: a deadline in seconds, above 0 and at most a day (gRPC cannot carry an
    absurd deadline: it would fail at once)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"{text!r}: use more than 0 and at most {MAX_TIMEOUT:g}")
    return value


def count_limit(high: int) -> Callable[[str], int]:
    """`--rpm` / `--concurrent`: a whole number from 1 to `high` (auth's bound)."""

    def parse(text: str) -> int:
        if not text.isdigit() or not 1 <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"{text!r}: use a whole number from 1 to {high:,}")
        return int(text)

    return parse


def dimensions(text: str) -> tuple[str, ...]:
    """`--by`: comma-separated dimensions, each named once (repeats are dropped)."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in DIMENSIONS]
    if unknown:
        which = ", ".join(repr(name) for name in unknown)
        noun = "dimension" if len(unknown) == 1 else "dimensions"
        raise argparse.ArgumentTypeError(
            f"unknown {noun} {which}; use any of {', '.join(DIMENSIONS)}"
        )
    if not names:
        raise argparse.ArgumentTypeError(f"name at least one of {', '.join(DIMENSIONS)}")
    return tuple(dict.fromkeys(names))


WEIGHT_NAMES = ("cost", "latency", "quality", "reliability")
"""The criteria `--weights` may name (saga.execution.v1.StrategyWeights)."""


def weights(text: str) -> options_pb2.StrategyWeights:
    """`--weights`: comma-separated NAME=NUMBER (`cost=0.7,latency=0.3`); a criterion not
    named weighs 0. Bounded as the gateway bounds them (each 0 to 1,000,000, not all 0)."""
    given: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in WEIGHT_NAMES:
            raise argparse.ArgumentTypeError(
                f"{part!r}: use NAME=NUMBER with NAME one of {', '.join(WEIGHT_NAMES)}"
            )
        if name in given:
            raise argparse.ArgumentTypeError(f"{name!r} is named twice")
        try:
            given[name] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part!r}: {value.strip()!r} is not a number"
            ) from None
    if problem := weights_problem([given.get(n, 0.0) for n in WEIGHT_NAMES]):
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
    return options_pb2.StrategyWeights(**given)


def dimension_values(names: tuple[str, ...]) -> list[records_pb2.UsageDimension.ValueType]:
    """The UsageDimension values of `--by` names."""
    return [records_pb2.UsageDimension.Value(f"USAGE_DIMENSION_{name.upper()}") for name in names]


def _micro_usd(text: str, maximum: int) -> int:
    """Dollars (`5`, `5.00`, `$0.25`, `1,000`), at most to the micro-dollar, as micro-USD
    exactly (Decimal, never a float), from 0 to `maximum` micro-USD."""
    try:
        value = Decimal(text.strip().removeprefix("$").replace(",", ""))
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount of dollars (5.00)")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: dollars cannot be negative")
    micro = value * 1_000_000
    if micro != micro.to_integral_value():
        raise argparse.ArgumentTypeError(f"{text!r}: at most 6 decimals (a micro-dollar)")
    if micro > maximum:
        raise argparse.ArgumentTypeError(f"{text!r}: at most ${maximum // 10**6:,}")
    return int(micro)


def amount(text: str) -> int:
    """`--amount`: dollars as micro-USD; 0 to $1,000,000,000 (0 = nothing may be spent)."""
    return _micro_usd(text, MAX_BUDGET_MICRO_USD)


def max_cost(text: str) -> int:
    """`--max-cost`: the run's cost limit in dollars, as micro-USD; from $0.000001 to
    $1,000,000 (the gateway's bound). Not 0: the option's 0 means no limit of the run's own,
    the opposite of what `--max-cost 0` says (leave the flag out for that)."""
    micro = _micro_usd(text, MAX_COST_MICRO_USD)
    if micro == 0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a run cannot be limited to nothing; leave out --max-cost for no limit "
            "of its own"
        )
    return micro
