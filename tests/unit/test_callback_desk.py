"""The callback desk on the SQL store (a SQLite file): dedupe, claims, outcomes, cancellation, leases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from callbacks import (
    CallbackConflict,
    CallbackDesk,
    CallbackPolicy,
    CallbackRequest,
    CallbackState,
    InvalidNumber,
    Outcome,
    due_in_line_order,
)
from pbx.store import Store
from pbx.store.callbacks import SqlCallbackStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlCallbackStore]:
    opened = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/centralita.db")
    try:
        yield SqlCallbackStore(opened.engine)
    finally:
        await opened.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _desk(store: SqlCallbackStore, clock: Clock, site: str = "madrid") -> CallbackDesk:
    policy = CallbackPolicy(max_attempts=2, retry_delay=timedelta(minutes=1),
                            expiry=timedelta(hours=2))
    return CallbackDesk(store, site=site, clock=clock, lease=LEASE, policies={"sales": policy})


async def test_one_active_request_per_number_and_queue(store: SqlCallbackStore, clock: Clock) -> None:
    desk = _desk(store, clock)
    first, created = await desk.request("+34 600 111 222", "sales", origin_call_id="call-1")
    assert created
    again, created_again = await desk.request("+34-600-111-222", "sales")
    assert (again, created_again) == (first, False)
    other_queue, created_other = await desk.request("+34600111222", "billing")
    assert created_other and other_queue.id != first.id
    assert await store.callback(first.id) == first

    claimed = await desk.claim(first.id)
    assert claimed is not None
    assert await desk.request("+34600111222", "sales") == (claimed, False)  # dialing is active too
    await desk.report(claimed, Outcome.ANSWERED)
    _, created_after = await desk.request("+34600111222", "sales")
    assert created_after  # the earlier one is over: a new request is welcome


async def test_simultaneous_requests_store_one(store: SqlCallbackStore, clock: Clock) -> None:
    desks = [_desk(store, clock, site) for site in ("madrid", "bogota")]
    results = await asyncio.gather(*(desks[n % 2].request("600111222", "sales") for n in range(12)))
    assert sum(created for _, created in results) == 1
    assert len({request.id for request, _ in results}) == 1
    assert len(await store.callbacks(queue="sales")) == 1


async def test_a_bad_number_is_refused_and_nothing_stored(store: SqlCallbackStore, clock: Clock) -> None:
    with pytest.raises(InvalidNumber, match="letters"):
        await _desk(store, clock).request("600 CALL ME", "sales")
    assert await store.callbacks() == []


async def test_due_requests_are_claimed_once_in_line_order(store: SqlCallbackStore,
                                                           clock: Clock) -> None:
    desk = _desk(store, clock)
    late, _ = await desk.request("600000001", "sales", requested_at=T0 - timedelta(minutes=1))
    early, _ = await desk.request("600000002", "sales", requested_at=T0 - timedelta(minutes=9))
    vip, _ = await desk.request("600000003", "sales", priority=3, requested_at=T0)
    later, _ = await desk.request("600000004", "sales", requested_at=T0 - timedelta(hours=1),
                                  earliest_at=T0 + timedelta(minutes=30))
    stored = await store.due_callbacks(clock())
    assert stored == due_in_line_order([late, early, vip, later], clock())
    assert [r.id for r in stored] == [vip.id, early.id, late.id]

    first = await desk.claim_due(limit=2)
    assert [r.id for r in first] == [vip.id, early.id]
    assert all(r.state is CallbackState.DIALING for r in first)
    assert [r.id for r in await desk.claim_due(limit=5)] == [late.id]
    assert await desk.claim_due(limit=5) == []
    clock.advance(minutes=30)
    assert [r.id for r in await desk.claim_due()] == [later.id]


async def test_outcomes_retry_then_fail_and_a_stale_report_is_refused(store: SqlCallbackStore,
                                                                      clock: Clock) -> None:
    desk = _desk(store, clock)
    request, _ = await desk.request("600111222", "sales")
    (dialing,) = await desk.claim_due()
    retry = await desk.report(dialing, Outcome.NO_ANSWER, "ring timeout")
    assert retry.state is CallbackState.PENDING and retry.earliest_at == T0 + timedelta(minutes=1)
    assert await desk.claim_due() == []
    with pytest.raises(CallbackConflict):
        await desk.report(dialing, Outcome.ANSWERED)  # that try was reported already
    clock.advance(minutes=1)
    (again,) = await desk.claim_due()
    failed = await desk.report(again, Outcome.BUSY)
    assert (failed.state, failed.attempts) == (CallbackState.FAILED, 2)
    stored = await store.callback(request.id)
    assert stored == failed
    assert [(r.outcome, r.detail) for r in stored.history] == [
        (Outcome.NO_ANSWER, "ring timeout"), (Outcome.BUSY, "")]


async def test_the_customer_reaching_an_agent_cancels_their_callbacks(store: SqlCallbackStore,
                                                                      clock: Clock) -> None:
    desk = _desk(store, clock)
    sales, _ = await desk.request("600111222", "sales")
    billing, _ = await desk.request("600111222", "billing")
    other, _ = await desk.request("600999888", "sales")
    assert await desk.cancel_for_customer("anonymous") == []
    (dialing,) = await desk.claim_due(queue="billing")
    cancelled = await _desk(store, clock, "bogota").cancel_for_customer("600 111 222", "billing")
    assert [(r.id, r.state) for r in cancelled] == [(billing.id, CallbackState.CANCELLED)]
    with pytest.raises(CallbackConflict):
        await desk.report(dialing, Outcome.ANSWERED)  # the site dialing it learns it is over
    everywhere = await desk.cancel_for_customer("600111222")
    assert [r.id for r in everywhere] == [sales.id]
    assert (await store.callback(other.id)).state is CallbackState.PENDING  # type: ignore[union-attr]
    assert await desk.cancel(sales.id, "again") is None


class CountingStore(SqlCallbackStore):
    """The SQL store, counting the per-number lookups an answered call would cost."""

    def __init__(self, store: SqlCallbackStore) -> None:
        super().__init__(store._engine)
        self.number_lookups = 0

    async def active_callbacks(self, number: str,
                               queue: str | None = None) -> list[CallbackRequest]:
        self.number_lookups += 1
        return await super().active_callbacks(number, queue)


async def test_with_the_numbers_loaded_only_customers_with_requests_cost_a_lookup(
        store: SqlCallbackStore, clock: Clock) -> None:
    counting = CountingStore(store)
    before, _ = await _desk(store, clock, "bogota").request("600111222", "sales")
    desk = CallbackDesk(counting, site="madrid", clock=clock, lease=LEASE)
    await desk.load_active_numbers()
    assert await desk.cancel_for_customer("600999888") == []
    assert counting.number_lookups == 0  # no request: the store is not asked
    after, _ = await desk.request("600333444", "billing")  # stored here after the load
    cancelled = await desk.cancel_for_customer("600 111 222")
    assert [(r.id, r.state) for r in cancelled] == [(before.id, CallbackState.CANCELLED)]
    cancelled = await desk.cancel_for_customer("600333444")
    assert [(r.id, r.state) for r in cancelled] == [(after.id, CallbackState.CANCELLED)]
    assert counting.number_lookups == 2


async def test_a_request_another_site_stores_is_seen_from_the_next_load(
        store: SqlCallbackStore, clock: Clock) -> None:
    desk = _desk(store, clock, "madrid")
    await desk.load_active_numbers()
    elsewhere, _ = await _desk(store, clock, "bogota").request("600555666", "sales")
    assert await desk.cancel_for_customer("600555666") == []  # the documented limit
    await desk.load_active_numbers()
    cancelled = await desk.cancel_for_customer("600555666")
    assert [(r.id, r.state) for r in cancelled] == [(elsewhere.id, CallbackState.CANCELLED)]
    await desk.load_active_numbers()
    assert not desk.may_have_active_requests("600555666")  # ended requests leave the index


async def test_leases_renew_release_and_lapse_to_another_site(store: SqlCallbackStore,
                                                              clock: Clock) -> None:
    madrid, bogota = _desk(store, clock, "madrid"), _desk(store, clock, "bogota")
    for n in range(3):
        await madrid.request(f"60000000{n}", "sales", requested_at=T0 - timedelta(seconds=3 - n))
    (dialing,) = await madrid.claim_due()
    clock.advance(seconds=20)
    assert await madrid.renew_leases() == 3
    clock.advance(seconds=20)  # 40 s after the start, 20 s after the renewal
    assert await bogota.adopt_lapsed() == []
    assert await bogota.claim_due(limit=3) == []
    clock.advance(seconds=10)  # madrid's lease ran out
    adopted = await bogota.adopt_lapsed()
    assert len(adopted) == 3 and {r.site for r in adopted} == {"bogota"}
    requeued = next(r for r in adopted if r.id == dialing.id)
    assert requeued.state is CallbackState.PENDING
    assert requeued.history[-1].outcome is Outcome.INTERRUPTED
    with pytest.raises(CallbackConflict):
        await madrid.report(dialing, Outcome.ANSWERED)  # madrid came back too late
    assert await madrid.renew_leases() == 0
    assert await madrid.claim_due(limit=3) == []
    assert len(await bogota.claim_due(limit=3)) == 3

    assert await bogota.release_leases() == 3
    assert len(await madrid.adopt_lapsed()) == 3  # released: adopted without waiting


async def test_a_restart_requeues_the_tries_it_was_making(tmp_path: Path, clock: Clock) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/centralita.db"
    first_run = await Store.open(url)
    desk = _desk(SqlCallbackStore(first_run.engine), clock)
    dialed, _ = await desk.request("600000001", "sales", requested_at=T0 - timedelta(minutes=2))
    waiting, _ = await desk.request("600000002", "sales", requested_at=T0 - timedelta(minutes=1),
                                    earliest_at=T0 + timedelta(minutes=5))
    assert [r.id for r in await desk.claim_due()] == [dialed.id]
    await first_run.close()

    second_run = await Store.open(url)
    try:
        store = SqlCallbackStore(second_run.engine)
        desk = _desk(store, clock)
        assert await store.callback(waiting.id) == waiting
        recovered = await desk.recover_interrupted()
        assert [(r.id, r.state) for r in recovered] == [(dialed.id, CallbackState.PENDING)]
        assert await desk.recover_interrupted() == []
        clock.advance(minutes=5)
        assert [r.id for r in await desk.claim_due(limit=5)] == [dialed.id, waiting.id]
    finally:
        await second_run.close()


async def test_overdue_requests_expire(store: SqlCallbackStore, clock: Clock) -> None:
    desk = _desk(store, clock)
    request, _ = await desk.request("600111222", "sales")
    clock.advance(hours=2, seconds=-1)
    assert await desk.expire_overdue() == []
    clock.advance(seconds=1)
    (expired,) = await desk.expire_overdue()
    assert expired.id == request.id and expired.state is CallbackState.EXPIRED
    assert await desk.claim_due() == []


async def test_a_try_outlasting_lease_renewals_is_still_reported(store: SqlCallbackStore,
                                                                  clock: Clock) -> None:
    desk = _desk(store, clock)
    request, _ = await desk.request("600123456", "sales")
    [dialing] = await desk.claim_due()
    for _ in range(3):  # the try lasts several renewals
        clock.advance(seconds=LEASE.total_seconds() / 3)
        assert await desk.renew_leases() == 1
    done = await desk.report(dialing, Outcome.NO_ANSWER)
    assert done.state is CallbackState.PENDING and done.attempts == 1
    assert done.lease_expires_at == clock.now + LEASE  # the last renewal is kept


async def test_a_try_of_a_request_cancelled_meanwhile_is_a_conflict(store: SqlCallbackStore,
                                                                    clock: Clock) -> None:
    desk = _desk(store, clock)
    await desk.request("600123456", "sales")
    [dialing] = await desk.claim_due()
    await desk.renew_leases()
    await desk.cancel(dialing.id, "operator")
    with pytest.raises(CallbackConflict):
        await desk.report(dialing, Outcome.ANSWERED)
    assert (await store.callback(dialing.id)).state is CallbackState.CANCELLED
