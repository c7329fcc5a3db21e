"""The callback service on the SQL store (a SQLite file), with a dialer that records its calls
and answers the outcome each test scripts: line order, dialing slots, outcomes recorded,
closed or trunkless queues left waiting, leases renewed, a dead site adopted, a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from callbacks import CallbackDesk, CallbackPolicy, CallbackRequest, CallbackState, Outcome
from events.callbacks import CallbacksPending, CallbackTryEnded, CallbackTryStarted
from pbx.calls.callback_service import CallbackService, TryResult
from pbx.store import Store
from pbx.store.callbacks import SqlCallbackStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=3)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class ScriptedDialer:
    """Answers each dial with the next scripted outcome (default: answered), after
    ``hold`` seconds, and remembers which numbers it called, in order."""

    def __init__(self, *outcomes: Outcome, hold: float = 0.0, trunkless: set[str] = frozenset()) -> None:
        self.outcomes = list(outcomes)
        self.hold = hold
        self.trunkless = trunkless
        self.called: list[str] = []
        self.release = asyncio.Event()

    def can_dial(self, queue: str) -> bool:
        return queue not in self.trunkless

    async def dial(self, request: CallbackRequest) -> TryResult:
        self.called.append(request.number)
        if self.hold:
            await asyncio.sleep(self.hold)
        outcome = self.outcomes.pop(0) if self.outcomes else Outcome.ANSWERED
        return TryResult(outcome, f"scripted {outcome.value}", call_id=f"call-{len(self.called)}")


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


def _desk(store: SqlCallbackStore, clock: Clock, site: str = "madrid",
          events: list[object] | None = None) -> CallbackDesk:
    policy = CallbackPolicy(max_attempts=2, retry_delay=timedelta(minutes=1), expiry=timedelta(hours=2))
    return CallbackDesk(store, site=site, clock=clock, lease=LEASE, policies={"sales": policy},
                        publish=None if events is None else events.append)


def _service(desk: CallbackDesk, dialer: ScriptedDialer, *, slots: int = 4,
             is_open=None, events: list[object] | None = None) -> CallbackService:
    return CallbackService(desk, dialer, queues=lambda: ["sales", "support"], concurrent_tries=slots,
                           is_open=is_open, publish=None if events is None else events.append)


async def _finish(service: CallbackService) -> None:
    while service._tries:
        await asyncio.gather(*service._tries.values())


async def test_due_requests_are_dialled_in_line_order_and_outcomes_recorded(
        store: SqlCallbackStore, clock: Clock) -> None:
    events: list[object] = []
    desk = _desk(store, clock, events=events)
    late, _ = await desk.request("600000001", "sales", requested_at=T0 - timedelta(seconds=10))
    early, _ = await desk.request("600000002", "sales", requested_at=T0 - timedelta(seconds=50))
    vip, _ = await desk.request("600000003", "sales", priority=3, requested_at=T0)
    dialer = ScriptedDialer(Outcome.ANSWERED, Outcome.BUSY, Outcome.ANSWERED)
    service = _service(desk, dialer, slots=1, events=events)

    for _ in range(3):
        await service.run_round()
        await _finish(service)
    assert dialer.called == ["600000003", "600000002", "600000001"]

    assert (await store.callback(vip.id)).state is CallbackState.COMPLETED
    busy = await store.callback(early.id)
    assert busy.state is CallbackState.PENDING and busy.attempts == 1
    assert busy.earliest_at == T0 + timedelta(minutes=1)  # retried after the queue's delay
    assert busy.history[-1].outcome is Outcome.BUSY
    assert (await store.callback(late.id)).state is CallbackState.COMPLETED

    await service.run_round()
    assert service.dialing == []  # the busy one is not due yet
    clock.advance(61)
    await service.run_round()
    await _finish(service)
    assert dialer.called[-1] == "600000002"
    assert (await store.callback(early.id)).state is CallbackState.COMPLETED

    ended = [event for event in events if isinstance(event, CallbackTryEnded)]
    assert [event.outcome for event in ended] == ["answered", "busy", "answered", "answered"]
    assert ended[1].call_id == "call-2" and ended[1].state == "pending"
    assert [(event.answered, event.ended) for event in ended] == [
        (True, True), (False, False), (True, True), (True, True)]
    assert {event.site for event in ended} == {"madrid"}
    # Stamped with the desk's clock, not the wall clock: the retry came 61 s later.
    assert ended[0].at == T0.timestamp() and ended[-1].at == (T0 + timedelta(seconds=61)).timestamp()
    started = [event for event in events if isinstance(event, CallbackTryStarted)]
    assert started[1].waited_seconds == 50.0
    assert [event.by_queue for event in events if isinstance(event, CallbacksPending)][0] == {"sales": 3}


async def test_dialing_slots_bound_the_tries_at_once(store: SqlCallbackStore, clock: Clock) -> None:
    desk = _desk(store, clock)
    for n in range(5):
        await desk.request(f"60000000{n}", "sales", requested_at=T0 - timedelta(seconds=10 - n))
    dialer = ScriptedDialer(hold=0.05)
    service = _service(desk, dialer, slots=2)
    await service.run_round()
    assert len(service.dialing) == 2
    await service.run_round()
    assert len(service.dialing) == 2  # no slot free yet
    await _finish(service)
    await service.run_round()
    await _finish(service)
    await service.run_round()
    await _finish(service)
    assert dialer.called == [f"60000000{n}" for n in range(5)]


async def test_closed_or_trunkless_queues_wait(store: SqlCallbackStore, clock: Clock) -> None:
    desk = _desk(store, clock)
    sales, _ = await desk.request("600000001", "sales")
    support, _ = await desk.request("600000002", "support")
    dialer = ScriptedDialer(trunkless={"support"})
    closed = {"sales"}
    service = _service(desk, dialer, is_open=lambda queue, now: queue not in closed)
    await service.run_round()
    assert service.dialing == []
    closed.clear()
    await service.run_round()
    await _finish(service)
    assert dialer.called == ["600000001"]
    assert (await store.callback(support.id)).state is CallbackState.PENDING


async def test_a_dead_sites_requests_are_adopted_and_dialled_once(store: SqlCallbackStore,
                                                                  clock: Clock) -> None:
    madrid = _desk(store, clock, "madrid")
    bogota = _desk(store, clock, "bogota")
    first, _ = await madrid.request("600000001", "sales", requested_at=T0 - timedelta(seconds=5))
    await madrid.request("600000002", "sales")
    held_dialer = ScriptedDialer(hold=3600)  # madrid dies in the middle of this try
    madrid_service = _service(madrid, held_dialer, slots=1)
    await madrid_service.run_round()
    assert madrid_service.dialing == [first.id]
    await asyncio.sleep(0.01)  # the try is under way
    for task in madrid_service._tries.values():
        task.cancel()  # killed: no outcome, no release of its leases

    bogota_dialer = ScriptedDialer()
    bogota_service = _service(bogota, bogota_dialer)
    clock.advance(1)
    await bogota_service.run_round()
    assert bogota_service.dialing == []  # madrid's leases still hold
    clock.advance(LEASE.total_seconds())
    await bogota_service.run_round()
    await _finish(bogota_service)
    await bogota_service.run_round()
    await _finish(bogota_service)
    assert sorted(bogota_dialer.called) == ["600000001", "600000002"]
    assert held_dialer.called == ["600000001"]
    adopted = await store.callback(first.id)
    assert adopted.state is CallbackState.COMPLETED and adopted.site == "bogota"
    assert [record.outcome for record in adopted.history] == [Outcome.INTERRUPTED, Outcome.ANSWERED]


async def test_a_live_site_keeps_its_leases_by_renewing_them(store: SqlCallbackStore, clock: Clock) -> None:
    madrid = _desk(store, clock, "madrid")
    await madrid.request("600000001", "sales", earliest_at=T0 + timedelta(seconds=30))
    madrid_service = _service(madrid, ScriptedDialer())
    bogota_dialer = ScriptedDialer()
    bogota_service = _service(_desk(store, clock, "bogota"), bogota_dialer)
    for _ in range(40):  # well past the lease, madrid renewing as it goes
        clock.advance(1)
        await madrid_service.run_round()
        await bogota_service.run_round()
        await _finish(madrid_service)
    assert bogota_dialer.called == []
    [request] = await store.callbacks()
    assert request.site == "madrid" and request.state is CallbackState.COMPLETED


async def test_a_restart_puts_the_interrupted_try_back_in_line_and_dials_it_once(
        store: SqlCallbackStore, clock: Clock) -> None:
    desk = _desk(store, clock)
    request, _ = await desk.request("600000001", "sales")
    await desk.claim(request.id)  # the previous run was dialing it when it died
    dialer = ScriptedDialer()
    service = _service(_desk(store, clock), dialer)
    await service.start()
    try:
        await service.run_round()
        await _finish(service)
    finally:
        await service.stop()
    assert dialer.called == ["600000001"]
    stored = await store.callback(request.id)
    assert stored.state is CallbackState.COMPLETED
    assert [record.outcome for record in stored.history] == [Outcome.INTERRUPTED, Outcome.ANSWERED]


async def test_stopping_releases_the_leases_for_another_site(store: SqlCallbackStore, clock: Clock) -> None:
    madrid = _desk(store, clock, "madrid")
    request, _ = await madrid.request("600000001", "sales", earliest_at=T0 + timedelta(seconds=30))
    service = _service(madrid, ScriptedDialer())
    await service.start()
    await service.stop()
    assert (await store.callback(request.id)).lease_expires_at == T0
    adopted = await _desk(store, clock, "bogota").adopt_lapsed()
    assert [item.id for item in adopted] == [request.id]


async def test_the_metrics_follow_the_events(store: SqlCallbackStore, clock: Clock) -> None:
    from prometheus_client import CollectorRegistry

    from events import EventBus
    from monitoring.callbacks import CallbackMetrics

    bus = EventBus()
    registry = CollectorRegistry()
    CallbackMetrics(registry).subscribe(bus)
    desk = _desk(store, clock)
    desk._publish = bus.publish
    await desk.request("600000001", "sales", requested_at=T0 - timedelta(seconds=90))
    await desk.request("600000002", "sales")
    cancelled, _ = await desk.request("600000003", "support")
    await desk.cancel(cancelled.id, "operator")
    service = _service(desk, ScriptedDialer(Outcome.ANSWERED, Outcome.BUSY), slots=1,
                       events=None)
    service._publish = bus.publish
    await service.run_round()
    await _finish(service)
    await service.run_round()
    await _finish(service)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("centralita_callbacks_requested_total", queue="sales") == 2
    assert value("centralita_callback_attempts_total", queue="sales") == 2
    assert value("centralita_callbacks_connected_total", queue="sales") == 1
    assert value("centralita_callback_attempts_failed_total", queue="sales", cause="busy") == 1
    assert value("centralita_callbacks_ended_total", queue="sales", state="completed") == 1
    assert value("centralita_callbacks_ended_total", queue="support", state="cancelled") == 1
    assert value("centralita_callback_wait_seconds_count", queue="sales") == 1
    assert value("centralita_callback_wait_seconds_sum", queue="sales") == 90
    assert value("centralita_callbacks_pending", queue="sales") == 2  # counted before the tries


async def test_a_finished_try_frees_its_slot_for_the_next_at_once(store: SqlCallbackStore,
                                                                  clock: Clock) -> None:
    desk = _desk(store, clock)
    for n in range(3):
        await desk.request(f"60000000{n}", "sales", requested_at=T0 - timedelta(seconds=3 - n))
    dialer = ScriptedDialer(hold=0.02)
    service = CallbackService(desk, dialer, queues=lambda: ["sales"], concurrent_tries=1,
                              poll_seconds=30)  # no second round within the test
    await service.start()
    try:
        for _ in range(100):
            if len(dialer.called) == 3 and not service.dialing:
                break
            await asyncio.sleep(0.02)
    finally:
        await service.stop()
    assert dialer.called == ["600000000", "600000001", "600000002"]
    assert {request.state for request in await store.callbacks()} == {CallbackState.COMPLETED}


class RecordingLine:
    """A waiting line that remembers what the service told it."""

    def __init__(self) -> None:
        self.kept: list[list[str]] = []
        self.unclaimable: list[str] = []
        self.over: list[str] = []

    def keep(self, due: list[CallbackRequest]) -> None:
        self.kept.append([request.number for request in due])

    def not_claimed(self, request_id: str) -> None:
        self.unclaimable.append(request_id)

    def try_over(self, request_id: str) -> None:
        self.over.append(request_id)


async def test_with_a_line_due_requests_wait_in_it_and_are_tried_when_their_turn_comes(
        store: SqlCallbackStore, clock: Clock) -> None:
    desk = _desk(store, clock)
    later, _ = await desk.request("600000001", "sales", requested_at=T0 - timedelta(seconds=10))
    earlier, _ = await desk.request("600000002", "sales", requested_at=T0 - timedelta(seconds=50))
    await desk.request("600000003", "sales", earliest_at=T0 + timedelta(minutes=5))  # not due yet
    await desk.request("600000004", "support")  # its queue is closed
    cancelled, _ = await desk.request("600000005", "sales", requested_at=T0 - timedelta(seconds=5))
    line = RecordingLine()
    dialer = ScriptedDialer(Outcome.AGENT_REJECTED, Outcome.ANSWERED)
    service = CallbackService(desk, dialer, queues=lambda: ["sales", "support"], concurrent_tries=1,
                              is_open=lambda queue, now: queue == "sales", line=line)

    assert await service.run_round() == []
    # Every due request of an open queue waits in the line, first in line first; none is dialled.
    assert line.kept == [["600000002", "600000001", "600000005"]]
    assert dialer.called == []

    # Turns come (an agent reserved for each), beyond the slots: the agents are the limit.
    assert service.take_turn(earlier.id) and service.take_turn(later.id)
    assert not service.take_turn(earlier.id)  # its try is under way
    await _finish(service)
    assert sorted(dialer.called) == ["600000001", "600000002"]
    assert sorted(line.over) == sorted([earlier.id, later.id])
    rejected = await store.callback(earlier.id)
    assert rejected.state is CallbackState.PENDING and rejected.attempts == 0  # back, no try counted
    assert rejected.history[-1].outcome is Outcome.AGENT_REJECTED
    assert (await store.callback(later.id)).state is CallbackState.COMPLETED

    # A request cancelled while it waited cannot be claimed: the line is told.
    await desk.cancel(cancelled.id, "operator")
    assert service.take_turn(cancelled.id)
    await _finish(service)
    assert line.unclaimable == [cancelled.id]
    assert "600000005" not in dialer.called
