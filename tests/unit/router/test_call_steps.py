"""The steps of a Reason call around its attempts (`call_steps.run_call`), against fakes of the
budget, the attempts and the outbox that write one shared log: the order of the steps, the
degrade to CHEAPEST, no Finished before every outcome is stored, and a settlement however the
call ended — answered, failed, refused by the outbox or cancelled."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field

import pytest

from services.common.config import ProviderConfig
from services.common.errors import InvalidArgument, ResourceExhausted, SagaError, Unavailable
from services.common.prices import PriceTable, price_table
from services.common.strategy import Strategy
from services.common.usage import Usage
from services.router.attempts import CLAIM_AHEAD_CHARS, AttemptRecord, AttemptStatus
from services.router.budget_reservations import Reservation, max_cost
from services.router.call_steps import Attempts, CustomRank, run_call
from services.router.calls import Accounting, CustomWeights, ReasonCall
from services.router.charges import ChargePolicy
from services.router.coalescing import coalesce, merge_text
from services.router.engines.base import ChatMessage, FinishReason, TextDelta
from services.router.rankings import RankingSnapshot
from services.router.reasoning import AttemptStarted, Finished, Report, RouterEvent

CHEAP = ProviderConfig(
    name="cheap", kind="sim", model="s", input_micro_usd_per_mtok=1, output_micro_usd_per_mtok=1
)
DEAR = ProviderConfig(
    name="dear",
    kind="sim",
    model="l",
    input_micro_usd_per_mtok=4_000_000,
    output_micro_usd_per_mtok=4_000_000,
)
PROVIDERS = (DEAR, CHEAP)
PRICES = price_table(PROVIDERS)
SNAPSHOT = RankingSnapshot(
    version=1,
    default_strategy=Strategy.BALANCED,
    rankings={Strategy.BALANCED: ("dear", "cheap"), Strategy.CHEAPEST: ("cheap", "dear")},
    prices=PRICES,
)
CALL = ReasonCall(
    messages=(ChatMessage("user", "hello"),),
    max_tokens=100,
    accounting=Accounting("usr_a", "ses", "exe_1", "step_1"),
)


def record(
    provider: str, n: int, cost: int, status: AttemptStatus, charge: int | None = None
) -> AttemptRecord:
    return AttemptRecord(
        provider=provider,
        model="m",
        n=n,
        status=status,
        error_reason="",
        usage=Usage(input_tokens=1, output_tokens=1),
        cost_micro_usd=cost,
        charge_micro_usd=cost if charge is None else charge,
        latency_ms=1,
        ttft_ms=1,
        price_table_version=PRICES.version,
        occurred_at=0.0,
    )


def finished(*attempts: AttemptRecord) -> Finished:
    return Finished(
        text="hi",
        finish_reason=FinishReason.STOP,
        usage=Usage(input_tokens=1, output_tokens=1),
        cost_micro_usd=sum(a.cost_micro_usd for a in attempts),
        charge_micro_usd=sum(a.charge_micro_usd for a in attempts),
        provider=attempts[-1].provider,
        model="m",
        latency_ms=1,
        ttft_ms=1,
        attempts=attempts,
        price_table_version=PRICES.version,
    )


@dataclass
class World:
    """The fakes; every step they see is appended to `log`."""

    log: list[tuple[object, ...]] = field(default_factory=list)
    degrade: bool = False
    budgeted: bool = True
    refusal: SagaError | None = None
    left: int | None = None
    """What is left of the budget: a larger reservation is refused BUDGET_EXHAUSTED."""
    store_failure: Exception | None = None
    store_held: bool = False
    """Outcomes stay unstored until `release_store`."""
    fail_after_first: Exception | None = None
    """The attempts raise this after the first attempt ended."""
    block_after_first: bool = False
    """The attempts wait forever after the first attempt ended (to be cancelled)."""
    pending: list[asyncio.Future[None]] = field(default_factory=list)
    first_charge: int | None = None
    """The first attempt's charge (None: its cost)."""

    async def reserve(
        self,
        reservation_id: str,
        user_id: str,
        execution_id: str,
        amount: int,
        key_id: str = "",
    ) -> Reservation | None:
        self.log.append(("reserve", user_id, execution_id, amount))
        if self.refusal is not None:
            raise self.refusal
        if self.left is not None and amount > self.left:
            raise ResourceExhausted(
                "spent", reason="BUDGET_EXHAUSTED", metadata={"remainingMicroUsd": str(self.left)}
            )
        if not self.budgeted:
            return None
        return Reservation(reservation_id, amount, self.degrade)

    def settle(self, reservation: Reservation | None, cost: int) -> None:
        self.log.append(("settle", reservation is not None, cost))

    def store(self, rec: AttemptRecord, cid: str) -> asyncio.Future[None]:
        self.log.append(("store", rec.n, cid.startswith("exe_1:step_1:")))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        if not self.store_held:
            self._resolve(future)
        return future

    def _resolve(self, future: asyncio.Future[None]) -> None:
        if self.store_failure is not None:
            future.set_exception(self.store_failure)
        else:
            future.set_result(None)
        self.log.append(("stored",))

    def release_store(self) -> None:
        for future in self.pending:
            if not future.done():
                self._resolve(future)

    async def attempts(
        self, candidates: Sequence[ProviderConfig], report: Report
    ) -> AsyncGenerator[RouterEvent, None]:
        names = [c.name for c in candidates]
        self.log.append(("attempts", *names))
        first = record(names[0], 1, 30, AttemptStatus.FAILED, self.first_charge)
        yield AttemptStarted(names[0], "m", 1)
        report(first)
        if self.fail_after_first is not None:
            raise self.fail_after_first
        if self.block_after_first:
            await asyncio.Event().wait()
        second = record(names[1], 2, 12, AttemptStatus.SUCCEEDED)
        yield AttemptStarted(names[1], "m", 2)
        yield TextDelta("hi")
        report(second)
        yield finished(first, second)


def steps(world: World, prices: PriceTable = PRICES) -> AsyncGenerator[RouterEvent, None]:
    return run_call(CALL, PROVIDERS, SNAPSHOT, prices, world, world.attempts, world.store)


async def collect(world: World) -> list[RouterEvent]:
    out: list[RouterEvent] = []
    events = steps(world)
    try:
        async for event in events:
            out.append(event)
            world.log.append(("yield", type(event).__name__))
    finally:
        await events.aclose()
    return out


async def test_the_steps_run_in_their_order() -> None:
    world = World()
    events = await collect(world)
    amount = max_cost(CALL.engine_request(), [DEAR, CHEAP], PRICES)
    assert amount > 0
    assert world.log == [
        ("reserve", "usr_a", "exe_1", amount),  # before any provider
        ("attempts", "dear", "cheap"),  # the call's (default) ranking
        ("yield", "AttemptStarted"),
        ("store", 1, True),  # each attempt stored as it ends, under the call's id
        ("stored",),
        ("yield", "AttemptStarted"),
        ("yield", "TextDelta"),
        ("store", 2, True),
        ("stored",),
        ("yield", "Finished"),
        ("settle", True, 42),  # the attempts' cost, once the events are done
    ]
    assert isinstance(events[-1], Finished)


async def test_near_the_limit_the_call_is_ranked_by_cheapest() -> None:
    world = World(degrade=True)
    await collect(world)
    assert ("attempts", "cheap", "dear") in world.log


async def test_a_refused_reservation_ends_the_call_before_any_attempt() -> None:
    world = World(refusal=ResourceExhausted("spent", reason="BUDGET_EXHAUSTED"))
    with pytest.raises(ResourceExhausted):
        await collect(world)
    assert [step[0] for step in world.log] == ["reserve"]  # no attempt, nothing to settle


async def test_without_a_budget_the_call_runs_and_settles_nothing_held() -> None:
    world = World(budgeted=False)
    await collect(world)
    assert world.log[-1] == ("settle", False, 42)


async def test_finished_waits_until_every_outcome_is_stored() -> None:
    world = World(store_held=True)
    events = steps(world)
    seen: list[str] = []

    async def consume() -> None:
        async for event in events:
            seen.append(type(event).__name__)

    consumer = asyncio.ensure_future(consume())
    for _ in range(10):
        await asyncio.sleep(0)
    assert seen == ["AttemptStarted", "AttemptStarted", "TextDelta"]  # Finished held back
    assert not any(step[0] == "settle" for step in world.log)
    world.release_store()
    await consumer
    await events.aclose()
    assert seen[-1] == "Finished"
    kinds = [step[0] for step in world.log]
    assert kinds.index("stored") < kinds.index("settle")  # the outbox before the settlement


async def test_an_outcome_not_stored_fails_the_call_and_still_settles() -> None:
    world = World(store_failure=OSError("disk full"))
    with pytest.raises(Unavailable) as caught:
        await collect(world)
    assert caught.value.reason == "USAGE_NOT_STORED"
    assert ("yield", "Finished") not in world.log
    assert world.log[-1] == ("settle", True, 42)


async def test_the_budget_settles_to_what_the_caller_is_charged_not_the_cost() -> None:
    world = World(first_charge=0)  # the failed first attempt is waived by the charge policy
    await collect(world)
    assert world.log[-1] == ("settle", True, 12)


async def test_a_failed_call_settles_what_its_attempts_cost() -> None:
    world = World(fail_after_first=Unavailable("all down", reason="NO_PROVIDER_AVAILABLE"))
    with pytest.raises(Unavailable):
        await collect(world)
    assert world.log[-1] == ("settle", True, 30)


async def test_a_cancelled_call_settles_what_its_attempts_cost() -> None:
    world = World(block_after_first=True)
    consumer = asyncio.ensure_future(collect(world))
    for _ in range(10):
        await asyncio.sleep(0)
    assert world.log[-1][0] == "stored"  # the first attempt ended; the call is waiting
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert world.log[-1] == ("settle", True, 30)


async def test_a_consumer_that_stops_early_settles_when_it_closes_the_steps() -> None:
    world = World()
    events = steps(world)
    async for event in events:
        if isinstance(event, AttemptStarted) and event.n == 2:
            break  # the caller went away during the second attempt
    assert not any(step[0] == "settle" for step in world.log)
    await events.aclose()
    assert world.log[-1] == ("settle", True, 30)


@dataclass
class Held:
    """A fake `hold`: logs each provisional record (attempt n, claimed output tokens) and
    what the caller had been given when it was written."""

    log: list[tuple[int, int, bool]] = field(default_factory=list)
    given: int = 0
    failure: Exception | None = None
    charges: list[tuple[int, int]] = field(default_factory=list)
    """(cost, charge) of each provisional record."""

    def __call__(self, rec: AttemptRecord, cid: str) -> asyncio.Future[None]:
        assert rec.usage.estimated
        assert rec.error_reason == "ROUTER_STOPPED"
        self.log.append((rec.n, rec.usage.output_tokens, cid.startswith("exe_1:step_1:")))
        self.charges.append((rec.cost_micro_usd, rec.charge_micro_usd))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failure is not None:
            future.set_exception(self.failure)
        else:
            future.set_result(None)
        return future


def streaming(pieces: int, size: int, order: list[str]) -> Attempts:
    """Attempts: one attempt streaming `pieces` deltas of `size` characters."""

    async def attempts(
        candidates: Sequence[ProviderConfig], report: Report
    ) -> AsyncGenerator[RouterEvent, None]:
        yield AttemptStarted(candidates[0].name, "m", 1)
        order.append("provider called")
        for _ in range(pieces):
            yield TextDelta("x" * size)
        done = record(candidates[0].name, 1, 5, AttemptStatus.SUCCEEDED)
        report(done)
        yield finished(done)

    return attempts


async def test_an_attempt_is_held_before_its_provider_is_called_and_raised_ahead_of_its_text() -> (
    None
):
    world, held = World(), Held()
    order: list[str] = []
    events = run_call(
        CALL, PROVIDERS, SNAPSHOT, PRICES, world, streaming(200, 10, order), world.store, hold=held
    )
    given = 0
    async for event in events:
        if isinstance(event, AttemptStarted):
            order.append("held" if held.log else "not held")
        if isinstance(event, TextDelta):
            given += len(event.text)
            # Every character given is covered by a claim written before it went out.
            assert max((tokens for _, tokens, _ in held.log), default=0) * 4 >= given
    assert order[:2] == ["held", "provider called"]
    assert given == 2000
    # Raised ahead of the text by 256 characters or a quarter: a few writes, not 200.
    assert 5 <= len(held.log) <= 15
    assert all(n == 1 and ours for n, _, ours in held.log)
    claims = [tokens for _, tokens, _ in held.log]
    assert claims == sorted(claims)
    assert claims[-1] * 4 <= 2000 + max(CLAIM_AHEAD_CHARS, 2000 // 4) + 4
    assert [step[0] for step in world.log if step[0] == "store"] == ["store"]  # the real one


async def test_an_attempt_that_cannot_be_held_gives_the_caller_no_text() -> None:
    # The hold's write runs while the provider is called (it costs no latency); no text is
    # given before it is durable, so a failed write ends the call before any.
    world, held = World(), Held(failure=OSError("disk full"))
    order: list[str] = []
    events = run_call(
        CALL, PROVIDERS, SNAPSHOT, PRICES, world, streaming(3, 10, order), world.store, hold=held
    )
    given: list[RouterEvent] = []

    async def read() -> None:
        async for event in events:
            given.append(event)

    with pytest.raises(Unavailable) as error:
        await read()
    assert error.value.reason == "USAGE_NOT_STORED"
    assert [e for e in given if isinstance(e, TextDelta)] == []
    # Positive control: with a hold that works, the same attempt's text is given.
    works = run_call(
        CALL, PROVIDERS, SNAPSHOT, PRICES, World(), streaming(3, 10, []), world.store, hold=Held()
    )
    assert [e async for e in works if isinstance(e, TextDelta)] != []


async def test_an_attempt_already_ended_when_its_start_is_read_is_not_held() -> None:
    # With coalescing, the attempts run ahead of the reader: an attempt may have ended (and
    # its outcome be stored) before the reader sees it start.
    async def ran_ahead(
        candidates: Sequence[ProviderConfig], report: Report
    ) -> AsyncGenerator[RouterEvent, None]:
        done = record(candidates[0].name, 1, 5, AttemptStatus.SUCCEEDED)
        report(done)
        yield AttemptStarted(candidates[0].name, "m", 1)
        yield TextDelta("x" * 500)
        yield finished(done)

    world, held = World(), Held()
    events = run_call(CALL, PROVIDERS, SNAPSHOT, PRICES, world, ran_ahead, world.store, hold=held)
    async for _ in events:
        pass
    assert held.log == []


def gated(order: list[str]) -> Attempts:
    """Attempts that, as `reasoning.reason(gated=True)` does, call the provider only once
    the reader released the attempt's `held` gate — read ahead through `coalesce`, as the
    servicer does, so the reader's own pace holds nothing back."""

    async def attempts(
        candidates: Sequence[ProviderConfig], report: Report
    ) -> AsyncGenerator[RouterEvent, None]:
        held: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        yield AttemptStarted(candidates[0].name, "m", 1, held)
        try:
            await held
        except Unavailable:
            order.append("not sent")
            raise
        order.append("provider called")
        yield TextDelta("x" * 10)
        done = record(candidates[0].name, 1, 5, AttemptStatus.SUCCEEDED)
        report(done)
        yield finished(done)

    return lambda candidates, report: coalesce(attempts(candidates, report), merge_text)


class SlowHold(Held):
    """A hold whose writes commit only when `commit` is called."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[asyncio.Future[None]] = []

    def __call__(self, rec: AttemptRecord, cid: str) -> asyncio.Future[None]:
        super().__call__(rec, cid)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        return future

    def commit(self) -> None:
        for future in self.pending:
            if not future.done():
                future.set_result(None)


async def test_a_gated_attempt_calls_its_provider_only_once_it_is_held() -> None:
    world, held, order = World(), SlowHold(), []
    events = run_call(
        CALL, PROVIDERS, SNAPSHOT, PRICES, world, gated(order), world.store, hold=held
    )
    reading = asyncio.ensure_future(drain(events))
    for _ in range(20):
        await asyncio.sleep(0)
    assert held.log  # the claim is being written
    assert order == []  # the provider not called
    held.commit()
    await reading
    assert order == ["provider called"]


async def test_a_gated_attempt_that_cannot_be_held_is_never_sent() -> None:
    world, held, order = World(), Held(failure=OSError("disk full")), []
    events = run_call(
        CALL, PROVIDERS, SNAPSHOT, PRICES, world, gated(order), world.store, hold=held
    )
    with pytest.raises(Unavailable) as error:
        await drain(events)
    assert error.value.reason == "USAGE_NOT_STORED"
    assert order == ["not sent"]


async def test_a_gated_attempt_without_a_hold_goes_at_once() -> None:
    world, order = World(), []
    events = run_call(CALL, PROVIDERS, SNAPSHOT, PRICES, world, gated(order), world.store)
    await drain(events)
    assert order == ["provider called"]


# ---------------------------------------------------------------- the caller's options


def steps_of(
    world: World, call: ReasonCall, rank_custom: CustomRank | None = None
) -> AsyncGenerator[RouterEvent, None]:
    return run_call(
        call, PROVIDERS, SNAPSHOT, PRICES, world, world.attempts, world.store, rank_custom
    )


async def drain(events: AsyncGenerator[RouterEvent, None]) -> None:
    async with aclosing(events):
        async for _ in events:
            pass


async def test_a_cost_limit_no_candidate_fits_is_refused_before_reserving() -> None:
    world = World()
    # "cheap" bills 1 micro-USD a million tokens: its least cost rounds to 0, so only a
    # call whose candidates are all dear can be refused; allow only "dear".
    call = dataclasses.replace(CALL, allowed=("dear",), max_cost_micro_usd=1)
    with pytest.raises(ResourceExhausted) as caught:
        await drain(steps_of(world, call))
    assert caught.value.reason == "COST_LIMIT_EXCEEDED"
    assert world.log == []  # nothing reserved, no provider called


async def test_the_reservation_never_exceeds_the_cost_limit() -> None:
    world = World()
    limit = 50
    assert max_cost(CALL.engine_request(), [DEAR, CHEAP], PRICES) > limit
    await drain(steps_of(world, dataclasses.replace(CALL, max_cost_micro_usd=limit)))
    assert world.log[0] == ("reserve", "usr_a", "exe_1", limit)


async def test_an_allow_list_narrows_the_candidates() -> None:
    world = World()
    await drain(steps_of(world, dataclasses.replace(CALL, allowed=("cheap", "dear"))))
    assert ("attempts", "dear", "cheap") in world.log  # both allowed: the ranking's order
    world = World(fail_after_first=Unavailable("down", reason="PROVIDER_UNAVAILABLE"))
    with pytest.raises(Unavailable):
        await drain(steps_of(world, dataclasses.replace(CALL, allowed=("cheap",))))
    assert ("attempts", "cheap") in world.log


async def test_custom_weights_rank_the_call_through_the_ranker() -> None:
    asked: list[tuple[CustomWeights, tuple[str, ...]]] = []

    async def rank(weights: CustomWeights, names: Sequence[str], call: ReasonCall) -> list[str]:
        asked.append((weights, tuple(names)))
        return ["cheap", "dear"]

    weights = CustomWeights(cost=0.7, latency=0.3)
    call = dataclasses.replace(CALL, strategy=Strategy.CUSTOM, weights=weights)
    world = World()
    await drain(steps_of(world, call, rank))
    assert asked == [(weights, ("dear", "cheap"))]
    assert ("attempts", "cheap", "dear") in world.log
    # Control: without weights, the snapshot's CUSTOM ranking (the configured weights') does.
    configured = dataclasses.replace(
        SNAPSHOT, rankings={**SNAPSHOT.rankings, Strategy.CUSTOM: ("dear", "cheap")}
    )
    world = World()
    unweighted = dataclasses.replace(CALL, strategy=Strategy.CUSTOM)
    await drain(
        run_call(
            unweighted, PROVIDERS, configured, PRICES, world, world.attempts, world.store, rank
        )
    )
    assert len(asked) == 1
    assert ("attempts", "dear", "cheap") in world.log
    # Neither the caller's weights nor configured ones: refused, not ranked by another strategy.
    with pytest.raises(InvalidArgument) as refused:
        await drain(steps_of(World(), unweighted, rank))
    assert refused.value.reason == "WEIGHTS_INVALID"
    # Without a ranker the call cannot honour its weights: refused, not ranked otherwise.
    with pytest.raises(Unavailable) as caught:
        await drain(steps_of(World(), call))
    assert caught.value.reason == "RANKING_UNAVAILABLE"


async def test_near_the_limit_only_the_candidates_that_fit_are_reserved_for_and_tried() -> None:
    request = CALL.engine_request()
    dear, cheap = (max_cost(request, [p], PRICES) for p in (DEAR, CHEAP))
    assert cheap < dear
    world = World(left=cheap, fail_after_first=Unavailable("down", reason="X"))
    with pytest.raises(Unavailable):
        await collect(world)
    assert world.log[:4] == [
        ("reserve", "usr_a", "exe_1", dear),  # refused: only `cheap` is left
        ("reserve", "usr_a", "exe_1", cheap),
        ("yield", "ProvidersSkipped"),  # "dear" passed over, said before any attempt
        ("attempts", "cheap"),
    ]


async def test_when_no_candidate_fits_the_refusal_ends_the_call() -> None:
    world = World(left=0)
    only_dear = dataclasses.replace(CALL, allowed=("dear",))
    events = run_call(only_dear, PROVIDERS, SNAPSHOT, PRICES, world, world.attempts, world.store)
    async with aclosing(events):
        with pytest.raises(ResourceExhausted):
            await anext(events)
    assert [step[0] for step in world.log] == ["reserve"]


@pytest.mark.parametrize(
    ("policy", "before_text", "after_text"),
    [
        (ChargePolicy.ALL_ATTEMPTS, True, True),
        # Should the router stop now: charged once the caller was given some of the text.
        (ChargePolicy.DELIVERED_ONLY, False, True),
        (ChargePolicy.WAIVE_UPSTREAM_FAILURES, False, False),  # the router's stop: waived
    ],
)
async def test_a_held_attempt_is_charged_by_the_policy(
    policy: ChargePolicy, before_text: bool, after_text: bool
) -> None:
    world, held = World(), Held()
    events = run_call(
        CALL,
        PROVIDERS,
        SNAPSHOT,
        PRICES,
        world,
        streaming(200, 10, []),
        world.store,
        hold=held,
        policy=policy,
    )
    async for _ in events:
        pass
    (first_cost, first_charge), *later = held.charges
    assert first_cost > 0
    assert first_charge == (first_cost if before_text else 0)
    assert later
    assert all(charge == (cost if after_text else 0) for cost, charge in later)
