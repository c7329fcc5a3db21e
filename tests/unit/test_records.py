"""The call recorder: real bus, real router, real IVR and telephony events, a real SQLite store.

Every scenario publishes events in the order the server produces them: telephony and
IVR events as the call and the flow publish them, router events as the router pushes them
onto the bus during each router operation (as in the server).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from events import CallAnswered, CallEnded, CallStarted, CallTransferred, EventBus
from events.callbacks import CallbackTryEnded, CallbackTryStarted
from events.ivr import (
    CallDeflected,
    DigitReceived,
    EnqueueRequested,
    IvrFinished,
    IvrNodeEntered,
    IvrStarted,
    SelfServiceAnswered,
    TransferRequested,
)
from ivr.call_log import IvrCallLog, IvrCallRecord
from pbx.records import CallRecorder, Disposition, QueueEvent
from pbx.store import (
    CallDetails,
    CallRecord,
    CustomerRecord,
    CustomerTier,
    QueueLogEntry,
    Store,
)
from router import AgentProfile, AgentState, QueueConfig, Router, RoutingRequest, UnknownCall

T0 = 1_700_000_000.0
FLOW = "demo"


class Clock:
    """One clock for the router and the recorder, as in the server (both use time.time)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def at(seconds_after_t0: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds_after_t0, UTC)


class Center:
    """The parts of the server the recorder listens to, wired as the server wires them."""

    def __init__(self, store: Store, clock: Clock, **options: Any) -> None:
        self.store = store
        self.clock = clock
        self.bus = EventBus()
        self.ivr_calls = IvrCallLog(100)
        self.registry = CollectorRegistry()
        self.router = Router(clock, reservation_timeout_seconds=4, publish=self.bus.publish)
        self.router.upsert_queue(QueueConfig("sales", {"sales": 1}, sla_seconds=30,
                                             wrap_up_seconds=10, ring_timeout_seconds=15))
        self.router.upsert_queue(QueueConfig("support", {"support": 1}, wrap_up_seconds=0,
                                             max_wait_seconds=60, overflow="sales"))
        self.router.upsert_queue(QueueConfig("billing", {"billing": 1}, max_wait_seconds=60))
        for extension in ("1001", "1002"):
            self.router.upsert_agent(AgentProfile(extension, extension, "madrid", {"sales": 5},
                                                  frozenset({"en"})))
            self.router.login(extension)
            clock.advance(1)  # 1001 has been idle longest: the first offer goes to it
        self.recorder = CallRecorder(store, self.bus, self.ivr_calls, "madrid", clock,
                                     registry=self.registry, **options)

    def publish(self, *events: object) -> None:
        for event in events:
            self.bus.publish(event)

    def route(self, operation: Callable[[], object]) -> Any:
        """One router step; the router pushes its events onto the bus as they happen."""
        return operation()

    def ivr(self, call_id: str, *nodes: str, node_type: str = "menu") -> None:
        self.publish(IvrStarted(call_id, FLOW, "600111222"))
        for node in nodes:
            self.publish(IvrNodeEntered(call_id, FLOW, node, node_type))

    def inbound(self, call_id: str, caller: str = "600111222") -> None:
        self.publish(CallStarted(call_id, caller, "100", "application"),
                     CallAnswered(call_id, "application"))

    def enqueue(self, call_id: str, queue: str = "sales") -> None:
        """The IVR's enqueue node; its IvrFinished comes when the call is over (see line_ends)."""
        self.publish(EnqueueRequested(call_id, FLOW, queue, 1))
        self.route(lambda: self.router.enqueue(RoutingRequest(call_id, queue, caller="600111222")))

    def line_ends(self, call_id: str, cause: str = "caller_hangup") -> None:
        """A queued call's line ends, in the server's order: the line, then the router is told
        (an abandon while waiting or ringing), then the IVR's enqueue node returns."""
        self.publish(CallEnded(call_id, "application", cause, None, 0.0))
        with contextlib.suppress(UnknownCall):  # already out of the router (overflow)
            self.route(lambda: self.router.call_ended(call_id))
        self.publish(IvrFinished(call_id, FLOW, "enqueued", "to_sales"))

    def offer(self) -> str:
        [reservation] = self.route(self.router.dispatch)
        return str(reservation.reservation_id)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/records.db")
    yield opened
    await opened.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def center(store: Store, clock: Clock) -> AsyncIterator[Center]:
    built = Center(store, clock)
    built.recorder.start()
    yield built
    await built.recorder.close()


async def only_record(store: Store, call_id: str) -> CallRecord:
    [record] = await store.call_records(call_id=call_id)
    return record


async def log_of(store: Store, call_id: str) -> list[QueueLogEntry]:
    return await store.queue_log(call_id=call_id)


def steps(entries: list[QueueLogEntry]) -> list[tuple[str, str | None]]:
    return [(entry.event, entry.agent) for entry in entries]


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait for something the background task does; bounded so a bug fails, not hangs."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


# ---------------------------------------------------------------------- a whole call


async def test_ivr_queue_rona_second_agent_answers_and_hangs_up(center: Center, clock: Clock,
                                                                 store: Store) -> None:
    started = clock.now - T0
    center.inbound("c1")
    center.ivr("c1", "welcome", "main_menu", "to_sales")
    center.publish(DigitReceived("c1", FLOW, "main_menu", "2"))
    clock.advance(12)
    center.enqueue("c1")

    first = center.offer()  # to 1001, idle longest
    clock.advance(1)
    center.route(lambda: center.router.ringing(first))
    clock.advance(15)
    center.route(lambda: center.router.reservation_failed(first, "no_answer"))
    second = center.offer()  # 1001 is on RONA break now: 1002
    clock.advance(1)
    center.route(lambda: center.router.ringing(second))
    clock.advance(3)
    center.route(lambda: center.router.answered(second))
    answered = clock.now - T0
    clock.advance(95)
    ended = clock.now - T0
    center.line_ends("c1")
    clock.advance(10)
    center.route(center.router.tick)  # wrap-up over
    await center.recorder.flush()

    record = await only_record(store, "c1")
    assert record.disposition == Disposition.ANSWERED == "answered"
    assert (record.caller, record.callee, record.site) == ("600111222", "100", "madrid")
    assert (record.queue, record.agent) == ("sales", "1002")
    assert (record.started, record.answered, record.ended) == (at(started), at(answered), at(ended))
    assert record.wait_seconds == pytest.approx(20)  # from enqueue to the second agent's answer
    assert record.talk_seconds == pytest.approx(95)
    assert record.ivr_path == ("welcome", "main_menu", "to_sales")

    entries = await log_of(store, "c1")
    assert steps(entries) == [
        ("ENTERQUEUE", None),
        ("OFFER", "1001"),
        ("RINGING", "1001"),
        ("RINGNOANSWER", "1001"),
        ("OFFER", "1002"),
        ("RINGING", "1002"),
        ("CONNECT", "1002"),
        ("COMPLETE", "1002"),
        ("WRAPUPEND", "1002"),
    ]
    assert all(entry.queue == "sales" for entry in entries)
    by_event = {entry.event: entry for entry in entries if entry.agent != "1001"}
    rona = entries[3]
    assert rona.data["reason"] == "no_answer"
    assert rona.data["rang_seconds"] == pytest.approx(15)
    assert rona.data["reservation_id"] == first
    assert entries[2].data["ring_timeout_seconds"] == pytest.approx(15)
    assert by_event["CONNECT"].data["waited_seconds"] == pytest.approx(20)
    assert by_event["CONNECT"].data["rang_seconds"] == pytest.approx(3)
    assert by_event["CONNECT"].data["within_sla"] is True
    assert by_event["COMPLETE"].data["talk_seconds"] == pytest.approx(95)
    assert by_event["COMPLETE"].data["ended_by"] == "caller"
    assert by_event["WRAPUPEND"].data["wrap_up_seconds"] == pytest.approx(10)
    assert by_event["WRAPUPEND"].data["next_state"] == "available"
    assert entries[0].data["caller"] == "600111222"
    assert entries[0].time == at(12 + started)
    assert center.recorder.live_calls == 0


async def test_the_router_end_may_come_before_the_line_end(center: Center, clock: Clock,
                                                           store: Store) -> None:
    """Whatever the order of the three ends, the CDR waits for all of them."""
    center.inbound("c2")
    center.ivr("c2", "welcome")
    center.enqueue("c2")
    reservation = center.offer()
    center.route(lambda: center.router.answered(reservation))
    clock.advance(30)
    center.route(lambda: center.router.call_ended("c2"))
    await center.recorder.flush()
    assert await store.call_records(call_id="c2") == []
    assert center.recorder.live_calls == 1

    clock.advance(0.5)
    center.publish(CallEnded("c2", "application", "callee_hangup", None, 30.5))
    await center.recorder.flush()
    assert await store.call_records(call_id="c2") == []  # the IVR's enqueue node still runs
    center.publish(IvrFinished("c2", FLOW, "enqueued", "to_sales"))
    await center.recorder.flush()
    record = await only_record(store, "c2")
    assert (record.disposition, record.agent, record.talk_seconds) == ("answered", "1001", 30.0)
    assert record.ended == at(clock.now - T0)
    [complete] = [e for e in await log_of(store, "c2") if e.event == QueueEvent.COMPLETE]
    assert complete.data["ended_by"] == "agent"


# ---------------------------------------------------------------------- abandon


async def test_caller_hangs_up_while_the_agent_rings(center: Center, clock: Clock,
                                                     store: Store) -> None:
    center.inbound("c3")
    center.ivr("c3", "welcome", "to_sales")
    clock.advance(5)
    center.enqueue("c3")
    reservation = center.offer()
    clock.advance(1)
    center.route(lambda: center.router.ringing(reservation))
    clock.advance(7)
    center.line_ends("c3")
    await center.recorder.flush()

    record = await only_record(store, "c3")
    assert record.disposition == "abandoned"
    assert (record.queue, record.agent, record.answered, record.talk_seconds) == ("sales", None, None, None)
    assert record.wait_seconds == pytest.approx(8)
    assert record.ivr_path == ("welcome", "to_sales")
    entries = await log_of(store, "c3")
    assert steps(entries) == [("ENTERQUEUE", None), ("OFFER", "1001"), ("RINGING", "1001"),
                              ("ABANDON", "1001")]
    assert entries[-1].data == {"waited_seconds": 8.0, "entered_position": 1}
    assert center.router.agent("1001").state is AgentState.AVAILABLE


async def test_caller_hangs_up_in_the_ivr(center: Center, clock: Clock, store: Store) -> None:
    center.inbound("c4")
    center.ivr("c4", "welcome", "main_menu")
    clock.advance(4)
    # The line ends first; the IVR task is cancelled and reports afterwards.
    center.publish(CallEnded("c4", "application", "caller_hangup", None, 4))
    await center.recorder.flush()
    assert center.recorder.live_calls == 1
    center.publish(IvrFinished("c4", FLOW, "abandoned", "main_menu"))
    await center.recorder.flush()

    record = await only_record(store, "c4")
    assert (record.disposition, record.queue, record.wait_seconds) == ("abandoned", None, None)
    assert record.answered == at(2)  # the IVR answered it (agents were logging in for 2 s)
    assert await log_of(store, "c4") == []


async def test_caller_who_hangs_up_during_the_greeting_completed_the_call(
        center: Center, clock: Clock, store: Store) -> None:
    center.inbound("c4g")
    center.ivr("c4g", "welcome", node_type="play")
    clock.advance(1)
    center.publish(CallEnded("c4g", "application", "caller_hangup", None, 1))
    center.publish(IvrFinished("c4g", FLOW, "abandoned", "welcome"))
    await center.recorder.flush()
    record = await only_record(store, "c4g")
    assert (record.disposition, record.queue) == ("completed", None)


# ---------------------------------------------------------------------- deflection


async def test_deflected_call(center: Center, clock: Clock, store: Store) -> None:
    center.inbound("c5")
    center.ivr("c5", "welcome", "faq_menu", "faq_opening_hours", "goodbye")
    center.publish(SelfServiceAnswered("c5", FLOW, "opening_hours", "en"))
    clock.advance(40)
    # A hang-up node ends the line, then the flow's walk returns and reports.
    center.publish(CallEnded("c5", "application", "application", None, 40))
    center.publish(CallDeflected("c5", FLOW, "opening_hours"),
                   IvrFinished("c5", FLOW, "deflected", "goodbye"))
    await center.recorder.flush()

    record = await only_record(store, "c5")
    assert record.disposition == "deflected"
    assert (record.queue, record.agent, record.wait_seconds, record.talk_seconds) == (None, None, None, None)
    assert record.ivr_path == ("welcome", "faq_menu", "faq_opening_hours", "goodbye")
    assert record.ended == at(42)
    assert await log_of(store, "c5") == []


async def test_ivr_path_from_the_ivr_log_when_its_node_events_were_missed(
        center: Center, clock: Clock, store: Store) -> None:
    ivr = IvrCallRecord("c6", "600999888", FLOW, at(0), "es")
    for node in ("welcome", "choose_language", "goodbye"):
        ivr.entered(node, "play", at(1))
    center.ivr_calls.add(ivr)
    center.publish(CallStarted("c6", "", "100", "application"), CallAnswered("c6", "application"),
                   IvrFinished("c6", FLOW, "hung_up", "goodbye"),
                   CallEnded("c6", "application", "application", None, 9))
    await center.recorder.flush()
    record = await only_record(store, "c6")
    assert record.ivr_path == ("welcome", "choose_language", "goodbye")
    assert (record.caller, record.disposition) == ("600999888", "completed")


# ---------------------------------------------------------------------- overflow, transfer, lines


async def test_overflow_into_another_queue_then_answered(center: Center, clock: Clock,
                                                         store: Store) -> None:
    center.inbound("c7")
    center.enqueue("c7", "support")  # nobody has the support skill
    assert center.route(center.router.dispatch) == []
    clock.advance(60)
    [reservation] = center.route(center.router.tick)  # overflow to sales, where 1001 is free
    center.route(lambda: center.router.answered(reservation.reservation_id))
    clock.advance(20)
    center.line_ends("c7")
    await center.recorder.flush()

    record = await only_record(store, "c7")
    assert (record.disposition, record.queue, record.agent) == ("answered", "sales", "1001")
    assert record.wait_seconds == pytest.approx(60)
    entries = await log_of(store, "c7")
    assert [(e.event, e.queue) for e in entries] == [
        ("ENTERQUEUE", "support"), ("OVERFLOW", "support"), ("ENTERQUEUE", "sales"),
        ("OFFER", "sales"), ("CONNECT", "sales"), ("COMPLETE", "sales"),
    ]
    assert entries[1].data == {"target": "sales", "moved": True, "waited_seconds": 60.0}
    assert entries[2].data["overflow_from"] == "support"


async def test_overflow_out_of_the_router(center: Center, clock: Clock, store: Store) -> None:
    center.inbound("c8")
    center.enqueue("c8", "billing")  # no agents, no overflow queue: the PBX must take it out
    clock.advance(60)
    center.route(center.router.tick)
    # The server ends the enqueue node, the flow ends, the application hangs up.
    center.publish(IvrFinished("c8", FLOW, "enqueued", "to_billing"))
    center.publish(CallEnded("c8", "application", "application", None, 60))
    await center.recorder.flush()
    record = await only_record(store, "c8")
    assert (record.disposition, record.queue, record.wait_seconds) == ("overflowed", "billing", 60.0)
    assert [e.event for e in await log_of(store, "c8")] == ["ENTERQUEUE", "OVERFLOW"]


async def test_ivr_transfer_to_an_extension(center: Center, clock: Clock, store: Store) -> None:
    center.inbound("c9")
    center.ivr("c9", "welcome", "to_reception")
    center.publish(TransferRequested("c9", FLOW, "1005"),
                   IvrFinished("c9", FLOW, "transferred", "to_reception"))
    clock.advance(25)
    center.publish(CallEnded("c9", "application", "caller_hangup", None, 25))
    await center.recorder.flush()
    assert (await only_record(store, "c9")).disposition == "transferred"
    [transfer] = await log_of(store, "c9")
    assert (transfer.event, transfer.data["extension"]) == ("TRANSFER", "1005")


async def test_agent_transfers_the_caller_to_another_queue(center: Center, clock: Clock,
                                                           store: Store) -> None:
    center.router.upsert_queue(QueueConfig("retention", {"sales": 1}, wrap_up_seconds=0))
    center.inbound("t1")
    center.enqueue("t1")
    clock.advance(5)
    first = center.offer()
    center.route(lambda: center.router.answered(first))  # 1001
    clock.advance(60)
    # The server's order for a REFER: the agent's part ends, the transfer, the new enqueue.
    center.route(lambda: center.router.call_ended("t1"))
    center.publish(CallTransferred("t1", "1001", "retention"))
    center.route(lambda: center.router.enqueue(RoutingRequest("t1", "retention", enqueued_at=T0 + 2)))
    clock.advance(2)
    second = center.offer()  # 1002: 1001 is wrapping up
    center.route(lambda: center.router.answered(second))
    clock.advance(40)
    center.line_ends("t1")
    await center.recorder.flush()

    record = await only_record(store, "t1")
    assert (record.disposition, record.queue, record.agent) == ("answered", "retention", "1002")
    assert record.talk_seconds == pytest.approx(100)  # both agents' parts
    assert record.wait_seconds == pytest.approx(5)  # to the first answer
    assert record.answered == at(7)
    entries = await log_of(store, "t1")
    assert [(e.event, e.queue, e.agent) for e in entries] == [
        ("ENTERQUEUE", "sales", None), ("OFFER", "sales", "1001"), ("CONNECT", "sales", "1001"),
        ("COMPLETE", "sales", "1001"), ("TRANSFER", "sales", "1001"),
        ("ENTERQUEUE", "retention", None), ("OFFER", "retention", "1002"),
        ("CONNECT", "retention", "1002"), ("COMPLETE", "retention", "1002"),
        ("WRAPUPEND", "retention", "1002"),
    ]
    assert entries[3].data["ended_by"] == "transfer"
    assert entries[3].data["talk_seconds"] == pytest.approx(60)
    assert entries[4].data == {"target": "retention", "by": "agent"}
    assert entries[-2].data["ended_by"] == "caller"


async def test_agent_transfer_to_an_account_is_the_disposition(center: Center, clock: Clock,
                                                               store: Store) -> None:
    center.router.upsert_queue(QueueConfig("sales", {"sales": 1}, wrap_up_seconds=0))
    center.inbound("t2")
    center.enqueue("t2")
    first = center.offer()
    center.route(lambda: center.router.answered(first))
    clock.advance(30)
    center.route(lambda: center.router.call_ended("t2"))
    center.publish(CallTransferred("t2", "1001", "1005"))  # an account: rung outside the router
    clock.advance(50)
    center.line_ends("t2")
    await center.recorder.flush()
    record = await only_record(store, "t2")
    assert (record.disposition, record.agent, record.talk_seconds) == ("transferred", "1001", 30.0)
    # No wrap-up: it ended in the same router step, yet is logged after the agent's COMPLETE.
    entries = await log_of(store, "t2")
    assert [e.event for e in entries] == ["ENTERQUEUE", "OFFER", "CONNECT", "COMPLETE",
                                          "WRAPUPEND", "TRANSFER"]
    assert entries[3].data["ended_by"] == "transfer"
    assert entries[4].data["wrap_up_seconds"] == 0


@pytest.mark.parametrize(
    ("answered", "cause", "status", "disposition"),
    [
        (True, "callee_hangup", None, "answered"),
        (False, "rejected", 486, "rejected"),
        (False, "cancelled", 487, "abandoned"),
        (False, "unreachable", 480, "failed"),
    ],
)
async def test_direct_calls_between_extensions(center: Center, clock: Clock, store: Store,
                                               answered: bool, cause: str, status: int | None,
                                               disposition: str) -> None:
    center.publish(CallStarted("d1", "1001", "1002", "bridge"))
    clock.advance(4)
    if answered:
        center.publish(CallAnswered("d1", "bridge"))
    clock.advance(50)
    center.publish(CallEnded("d1", "bridge", cause, status, 50.0 if answered else 54.0))
    await center.recorder.flush()
    record = await only_record(store, "d1")
    assert record.disposition == disposition
    assert (record.caller, record.callee, record.queue) == ("1001", "1002", None)
    assert record.answered == (at(6) if answered else None)
    assert record.talk_seconds == (50.0 if answered else None)


# ---------------------------------------------------------------------- ends that never come


async def test_close_writes_calls_whose_ends_never_came(center: Center, clock: Clock,
                                                        store: Store) -> None:
    center.inbound("live")  # still talking at shutdown
    center.inbound("lost")
    center.enqueue("lost")
    center.publish(CallEnded("lost", "application", "caller_hangup", None, 3))  # router never told
    await center.recorder.flush()
    assert center.recorder.live_calls == 2
    await center.recorder.close()
    assert (await only_record(store, "live")).disposition == "interrupted"
    lost = await only_record(store, "lost")
    assert (lost.disposition, lost.queue) == ("abandoned", "sales")


async def test_a_missing_router_end_is_given_up_after_the_linger(store: Store,
                                                                 clock: Clock) -> None:
    center = Center(store, clock, linger_seconds=0.01)
    center.recorder.start()
    try:
        center.inbound("c10")
        center.enqueue("c10")
        center.publish(CallEnded("c10", "application", "media_timeout", None, 3))
        await eventually(lambda: center.recorder.live_calls == 0)
        await center.recorder.flush()
        assert (await only_record(store, "c10")).disposition == "failed"
        # The router's late word opens no second record.
        center.route(lambda: center.router.abandon("c10"))
        await center.recorder.flush()
        assert len(await store.call_records(call_id="c10")) == 1
        assert [e.event for e in await log_of(store, "c10")] == ["ENTERQUEUE", "ABANDON"]
    finally:
        await center.recorder.close()


# ---------------------------------------------------------------------- writing


async def test_a_database_outage_is_retried_until_it_ends(store: Store, clock: Clock) -> None:
    center = Center(store, clock, retry_initial_seconds=0.01, retry_max_seconds=0.02)
    center.recorder.start()
    try:
        async with store.engine.begin() as connection:
            await connection.execute(sa.text("ALTER TABLE queue_log RENAME TO queue_log_away"))
        center.inbound("c11")
        center.enqueue("c11")
        await eventually(lambda: center.recorder.write_failures >= 2)
        async with store.engine.begin() as connection:
            await connection.execute(sa.text("ALTER TABLE queue_log_away RENAME TO queue_log"))
        center.line_ends("c11")
        await center.recorder.flush()
        assert [e.event for e in await log_of(store, "c11")] == ["ENTERQUEUE", "ABANDON"]
        assert (await only_record(store, "c11")).disposition == "abandoned"
        failures = sample(center.registry, "centralita_call_records_write_failures_total")
        assert failures is not None and failures >= 2
        assert center.recorder.dropped.total() == 0
    finally:
        await center.recorder.close()


async def test_a_full_write_queue_drops_the_oldest_and_counts_them(store: Store,
                                                                   clock: Clock) -> None:
    # Each call is two writes: noted in progress at its start, its record at its end.
    center = Center(store, clock, max_pending=6)  # writer not started: nothing drains
    for number in range(5):
        center.publish(CallStarted(f"q{number}", "1001", "1002", "bridge"),
                       CallEnded(f"q{number}", "bridge", "cancelled", 487, 1.0))
    assert center.recorder.pending_writes == 6
    assert center.recorder.dropped["overflow"] == 4
    assert sample(center.registry, "centralita_call_records_dropped_total",
                  kind="call_record", reason="overflow") == 2
    assert sample(center.registry, "centralita_call_records_dropped_total",
                  kind="live_call", reason="overflow") == 2
    assert sample(center.registry, "centralita_call_records_pending") == 6
    center.recorder.start()
    await center.recorder.close()
    stored = await store.call_records()
    assert [record.call_id for record in stored] == ["q2", "q3", "q4"]
    assert await store.live_calls() == []


async def test_flush_before_start_is_an_error(store: Store, clock: Clock) -> None:
    center = Center(store, clock)
    with pytest.raises(RuntimeError, match="start"):
        await center.recorder.flush()


async def test_many_calls_are_written_in_batches(store: Store, clock: Clock) -> None:
    center = Center(store, clock, batch_size=7)
    center.recorder.start()
    try:
        for number in range(40):
            center.publish(CallStarted(f"b{number}", "1001", "1002", "bridge"),
                           CallAnswered(f"b{number}", "bridge"),
                           CallEnded(f"b{number}", "bridge", "caller_hangup", None, 2.0))
        await center.recorder.flush()
        stored = await store.call_records(limit=100)
        assert sorted(record.call_id for record in stored) == sorted(f"b{n}" for n in range(40))
        assert {record.disposition for record in stored} == {"answered"}
    finally:
        await center.recorder.close()


def count_transactions(store: Store) -> list[object]:
    """Every transaction begun on the store's engine from now on (a SQLAlchemy event)."""
    begun: list[object] = []
    sa.event.listen(store.engine.sync_engine, "begin", begun.append)
    return begun


async def test_writes_put_within_the_gather_time_share_one_transaction(store: Store,
                                                                       clock: Clock) -> None:
    center = Center(store, clock, write_gather_seconds=0.5)
    center.recorder.start()
    begun = count_transactions(store)
    try:
        for number in range(3):  # each on its own turn of the loop, as calls arrive
            center.publish(CallStarted(f"g{number}", "1001", "1002", "bridge"))
            await asyncio.sleep(0.02)
        await eventually(lambda: len(begun) > 0)  # the gather time ran out, not a flush
        await center.recorder.flush()
        assert len(begun) == 1
        assert sorted(call.call_id for call in await store.live_calls(site="madrid")) == ["g0", "g1", "g2"]
    finally:
        await center.recorder.close()


async def test_flush_and_a_full_batch_do_not_wait_for_the_gather_time(store: Store,
                                                                      clock: Clock) -> None:
    center = Center(store, clock, write_gather_seconds=60, batch_size=4)
    center.recorder.start()
    try:
        async with asyncio.timeout(10):
            center.publish(CallStarted("f1", "1001", "1002", "bridge"))
            await center.recorder.flush()
            assert [call.call_id for call in await store.live_calls(site="madrid")] == ["f1"]
            for number in range(2, 6):  # a batch's worth: written without a flush
                center.publish(CallStarted(f"f{number}", "1001", "1002", "bridge"))
            await eventually(lambda: center.recorder.pending_writes == 0)
            await center.recorder.flush()
            assert len(await store.live_calls(site="madrid")) == 5
    finally:
        await center.recorder.close()


async def test_the_last_agent_goes_on_a_customer_record_with_the_calls_records(
        store: Store, clock: Clock) -> None:
    await store.create_customer(CustomerRecord("+34600000001", "Bob", CustomerTier.VIP, "es"))
    center = Center(store, clock, write_gather_seconds=0.5)
    center.recorder.start()
    begun = count_transactions(store)
    try:
        center.publish(CallStarted("l1", "+34600000001", "100", "application"))
        center.recorder.note_last_agent("+34600000001", "1001")
        center.recorder.note_last_agent("+34600000001", "1002")  # the later answer wins
        center.recorder.note_last_agent("+1", "1001")  # not a customer: nothing to update
        await center.recorder.flush()
        assert len(begun) == 1
        stored = await store.customer("+34600000001")
        assert stored is not None and stored.last_agent == "1002"
        assert await store.customer("+1") is None
        assert center.recorder.dropped.total() == 0
    finally:
        await center.recorder.close()


# ---------------------------------------------------------------------- live calls, crash trace


async def test_a_call_in_progress_shows_what_it_is_doing_and_is_noted_in_the_store(
        store: Store, clock: Clock) -> None:
    gathered: list[str] = []

    def details(call_id: str, ended: datetime) -> CallDetails:
        gathered.append(call_id)
        return CallDetails(call_id, ended, [{"chosen": "1002"}], {"outcome": "enqueued"},
                           {"agent": "1002"})

    center = Center(store, clock, details=details)
    center.recorder.start()
    try:
        def state() -> tuple[str, str | None, float | None]:
            view = center.recorder.live_call("c1")
            assert view is not None
            return view.state, view.agent, view.waited_seconds

        center.inbound("c1")
        center.ivr("c1", "welcome", "main_menu")
        assert state() == ("ivr", None, None)
        await center.recorder.flush()
        assert [call.call_id for call in await store.live_calls(site="madrid")] == ["c1"]

        center.enqueue("c1")
        clock.advance(7)
        assert state() == ("queued", None, 7.0)
        reservation = center.offer()
        assert state() == ("offering", "1001", 7.0)
        center.route(lambda: center.router.ringing(reservation))
        clock.advance(2)
        assert state() == ("agent_ringing", "1001", 9.0)
        center.route(lambda: center.router.answered(reservation))
        clock.advance(30)
        assert state() == ("talking", "1001", 9.0)
        [view] = center.recorder.live_call_views()
        assert (view.queue, view.ivr_path, view.duration_seconds) == (
            "sales", ("welcome", "main_menu"), 39.0)

        center.line_ends("c1")
        assert center.recorder.live_call("c1") is None
        assert center.recorder.live_call_views() == []
        await center.recorder.flush()
        assert await store.live_calls(site="madrid") == []
        assert gathered == ["c1"]
        stored = await store.call_details("c1")
        assert stored is not None and stored.context == {"agent": "1002"}
    finally:
        await center.recorder.close()


# ---------------------------------------------------------------------- callback calls


def try_ended(clock: Clock, call_id: str | None, outcome: str = "answered") -> CallbackTryEnded:
    return CallbackTryEnded("cb-1", "sales", "madrid", outcome, outcome == "answered", "", "completed",
                            True, 30.0, call_id, "600111222", "origin-1", at=clock.now)


def try_started(clock: Clock) -> CallbackTryStarted:
    return CallbackTryStarted("cb-1", "sales", "madrid", 1, 20.0, at=clock.now)


async def test_a_callback_call_in_progress_on_the_line_names_its_origin_and_request(
        center: Center, clock: Clock, store: Store) -> None:
    center.publish(try_started(clock), CallStarted("cb-call", "+34910000000", "600111222", "bridge"),
                   CallAnswered("cb-call", "bridge"))
    clock.advance(5)
    center.publish(try_ended(clock, "cb-call"))
    clock.advance(10)
    center.publish(CallEnded("cb-call", "bridge", "callee_hangup", None, 10.0))
    await center.recorder.flush()
    record = await only_record(store, "cb-call")
    assert (record.origin_call_id, record.callback_request_id, record.disposition) == (
        "origin-1", "cb-1", "answered")
    assert [(line.event, line.data["outcome"]) for line in await log_of(store, "cb-call")] == [
        ("CALLBACK", "answered")]


async def test_a_try_that_placed_no_call_writes_nothing(center: Center, clock: Clock,
                                                        store: Store) -> None:
    center.publish(try_started(clock), try_ended(clock, None, "trunk_failure"))
    await center.recorder.flush()
    assert await store.call_records() == [] and await store.queue_log() == []


async def test_a_callback_try_ending_with_its_call_gets_its_own_record(
        center: Center, clock: Clock, store: Store) -> None:
    started = datetime.fromtimestamp(clock.now, UTC)
    center.publish(try_started(clock))
    clock.advance(8)
    center.publish(try_ended(clock, "cb-call", "no_answer"))
    await center.recorder.flush()
    record = await only_record(store, "cb-call")
    assert (record.callee, record.queue, record.disposition, record.site, record.started,
            record.answered, record.ended, record.origin_call_id, record.callback_request_id) == (
        "600111222", "sales", "failed", "madrid", started, None, started + timedelta(seconds=8),
        "origin-1", "cb-1")
