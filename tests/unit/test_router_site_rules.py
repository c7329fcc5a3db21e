"""Which sites' agents a call may reach, and when: overflow to other sites after a queue's
``sites_after_seconds``, and follow-the-sun (a site's agents are offered no call outside
its business hours, read in its own time zone, across DST changes). Clocks injected."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from events import Event, SiteOpeningChanged
from ivr.hours import BusinessHours, OpeningInterval
from router import (
    AgentProfile,
    AgentState,
    Decision,
    QueueConfig,
    Reservation,
    Router,
    RoutingRequest,
)
from router.errors import InvalidConfig


class Clocks:
    """The router's monotonic clock and the wall clock, moved together."""

    def __init__(self, wall: datetime) -> None:
        self.monotonic = 1000.0
        self.wall = wall.timestamp()

    def advance(self, seconds: float) -> None:
        self.monotonic += seconds
        self.wall += seconds

    def router(self, events: list[Event] | None = None, **kwargs: object) -> Router:
        return Router(
            lambda: self.monotonic,
            wall_clock=lambda: self.wall,
            publish=None if events is None else events.append,
            **kwargs,
        )


def _utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)  # type: ignore[misc]


# -- overflow to other sites after N seconds --------------------------------------------


def test_a_caller_is_offered_to_other_sites_only_after_the_queues_wait() -> None:
    clocks = Clocks(_utc(2026, 12, 3, 12, 0))
    router = clocks.router()
    router.upsert_queue(QueueConfig("billing", sites=("bogota",), sites_after_seconds=30))
    router.enqueue(RoutingRequest("c1", "billing"))
    assert router.other_sites_after("c1") == pytest.approx(30)
    clocks.advance(29.5)
    assert router.other_sites_after("c1") == pytest.approx(0.5)
    clocks.advance(0.5)
    assert router.other_sites_after("c1") == 0
    clocks.advance(100)
    assert router.other_sites_after("c1") == 0


def test_the_wait_counts_from_the_original_enqueue_time() -> None:
    clocks = Clocks(_utc(2026, 12, 3, 12, 0))
    router = clocks.router()
    router.upsert_queue(QueueConfig("billing", sites=("any",), sites_after_seconds=30))
    # Transferred after 20 s of waiting elsewhere: 10 s left.
    router.enqueue(RoutingRequest("c1", "billing", enqueued_at=clocks.wall - 20))
    assert router.other_sites_after("c1") == pytest.approx(10)


def test_zero_seconds_asks_other_sites_at_once_and_no_sites_never() -> None:
    clocks = Clocks(_utc(2026, 12, 3, 12, 0))
    router = clocks.router()
    router.upsert_queue(QueueConfig("billing", sites=("bogota",)))
    router.upsert_queue(QueueConfig("support"))
    router.enqueue(RoutingRequest("c1", "billing"))
    router.enqueue(RoutingRequest("c2", "support"))
    assert router.other_sites_after("c1") == 0
    assert router.other_sites_after("c2") is None  # this site's agents only
    assert router.other_sites_after("unknown") is None


def test_a_call_no_longer_waiting_is_not_offered_elsewhere() -> None:
    clocks = Clocks(_utc(2026, 12, 3, 12, 0))
    router = clocks.router()
    router.upsert_queue(QueueConfig("billing", sites=("bogota",), sites_after_seconds=5))
    router.upsert_agent(AgentProfile("1001", "Ana", "madrid", {}, frozenset({"en"})))
    router.enqueue(RoutingRequest("c1", "billing"))
    clocks.advance(10)
    router.login("1001")
    router.dispatch()  # no hook: the caller dispatches
    assert router.call("c1").status.value == "offered"
    assert router.other_sites_after("c1") is None


def test_sites_after_seconds_must_not_be_negative() -> None:
    with pytest.raises(InvalidConfig, match="sites_after_seconds must be >= 0"):
        QueueConfig("billing", sites=("bogota",), sites_after_seconds=-1)
    assert (
        QueueConfig.from_dict(
            QueueConfig("q", sites_after_seconds=30).to_dict()
        ).sites_after_seconds
        == 30
    )


# -- follow-the-sun: business hours per site --------------------------------------------

MADRID = ZoneInfo("Europe/Madrid")
BOGOTA = ZoneInfo("America/Bogota")
WEEKDAYS_9_TO_18 = {day: (OpeningInterval(time(9), time(18)),) for day in range(5)}


def _center(clocks: Clocks, events: list[Event]) -> Router:
    router = clocks.router(events)
    router.upsert_queue(QueueConfig("billing", skills={"billing": 1}, sites=("any",)))
    for extension, site in (("1001", "madrid"), ("2001", "bogota")):
        router.upsert_agent(
            AgentProfile(extension, extension, site, {"billing": 5}, frozenset({"es"}))
        )
        router.login(extension)
    return router


def _free(router: Router) -> set[str]:
    """Who the router would offer a call now (and releases at once)."""
    reservations = [
        router.reserve_for_site(RoutingRequest(f"probe{index}", "billing"), "lima")
        for index in range(2)
    ]
    made = [outcome for outcome in reservations if isinstance(outcome, Reservation)]
    for reservation in made:
        router.release_for_site(reservation.reservation_id)
    return {reservation.agent for reservation in made}


def _tick_to(router: Router, clocks: Clocks, wall: datetime) -> None:
    """Run the router's timers as the server does, until the wall clock reads ``wall``."""
    while clocks.wall < wall.timestamp():
        due = router.next_due()
        step = wall.timestamp() - clocks.wall
        if due is not None:
            step = min(step, max(due - clocks.monotonic, 0.0))
        clocks.advance(step)
        router.tick()


def test_a_closed_sites_agents_are_offered_nothing_until_it_opens_at_the_minute() -> None:
    # Thursday 2026-12-03, 07:58 in Madrid (UTC+1).
    clocks, events = Clocks(datetime(2026, 12, 3, 7, 58, tzinfo=MADRID)), []
    router = _center(clocks, events)
    router.set_site_hours(
        "madrid", BusinessHours(MADRID, {3: (OpeningInterval(time(8), time(20)),)})
    )
    assert not router.site_open("madrid") and router.site_open("bogota")
    assert router.site_opening() == {"madrid": False}
    assert _free(router) == {"2001"}
    snapshot = router.agent("1001")
    assert (
        snapshot.state is AgentState.AVAILABLE and not snapshot.site_open and snapshot.site_healthy
    )
    # The router asks for a tick no later than the next minute's turn.
    assert router.next_due() is not None and router.next_due() - clocks.monotonic <= 60
    _tick_to(router, clocks, datetime(2026, 12, 3, 7, 59, 59, tzinfo=MADRID))
    assert not router.site_open("madrid")
    _tick_to(router, clocks, datetime(2026, 12, 3, 8, 0, tzinfo=MADRID))
    assert router.site_open("madrid")
    assert _free(router) == {"1001", "2001"}
    opened = [e for e in events if isinstance(e, SiteOpeningChanged)]
    assert [(e.site, e.open) for e in opened] == [("madrid", False), ("madrid", True)]
    assert opened[-1].at == pytest.approx(datetime(2026, 12, 3, 8, 0, tzinfo=MADRID).timestamp())
    # ... and closes at 20:00 sharp (the end is exclusive).
    _tick_to(router, clocks, datetime(2026, 12, 3, 19, 59, tzinfo=MADRID))
    assert router.site_open("madrid")
    _tick_to(router, clocks, datetime(2026, 12, 3, 20, 0, tzinfo=MADRID))
    assert not router.site_open("madrid")


def test_a_waiting_caller_is_offered_the_agent_whose_site_opens() -> None:
    clocks, events = Clocks(datetime(2026, 12, 3, 8, 59, 30, tzinfo=BOGOTA)), []
    offered: list[Reservation] = []
    router = Router(
        lambda: clocks.monotonic,
        wall_clock=lambda: clocks.wall,
        publish=events.append,
        on_reservation=offered.append,
    )
    router.upsert_queue(QueueConfig("billing"))
    router.upsert_agent(AgentProfile("2001", "Fernando", "bogota", {}, frozenset({"es"})))
    router.login("2001")
    router.set_site_hours("bogota", BusinessHours(BOGOTA, WEEKDAYS_9_TO_18))
    router.enqueue(RoutingRequest("c1", "billing"))
    assert offered == []
    decision = router.explain("c1")[-1]
    assert isinstance(decision, Decision) and decision.chosen is None
    _tick_to(router, clocks, datetime(2026, 12, 3, 9, 0, tzinfo=BOGOTA))
    assert [r.agent for r in offered] == ["2001"]


def test_hours_follow_the_sites_own_zone_across_the_dst_change() -> None:
    # Europe/Madrid moves from UTC+1 to UTC+2 at 01:00 UTC on Sunday 2026-03-29.
    hours = BusinessHours(
        MADRID, {6: (OpeningInterval(time(3), time(4)),), 0: (OpeningInterval(time(9), time(18)),)}
    )
    clocks, events = Clocks(_utc(2026, 3, 29, 0, 30)), []
    router = _center(clocks, events)
    router.set_site_hours("madrid", hours)
    # 03:00 local on that Sunday is 01:00 UTC (02:00-03:00 local does not exist).
    _tick_to(router, clocks, _utc(2026, 3, 29, 0, 59))
    assert not router.site_open("madrid")
    _tick_to(router, clocks, _utc(2026, 3, 29, 1, 0))
    assert router.site_open("madrid")
    _tick_to(router, clocks, _utc(2026, 3, 29, 1, 59))
    assert router.site_open("madrid")
    _tick_to(router, clocks, _utc(2026, 3, 29, 2, 0))  # 04:00 summer time
    assert not router.site_open("madrid")
    # Monday 09:00 summer time is 07:00 UTC, not 08:00.
    _tick_to(router, clocks, _utc(2026, 3, 30, 6, 59))
    assert not router.site_open("madrid")
    _tick_to(router, clocks, _utc(2026, 3, 30, 7, 0))
    assert router.site_open("madrid")


def test_autumn_dst_change_the_repeated_hour_is_open_both_times() -> None:
    # Europe/Madrid goes back from UTC+2 to UTC+1 at 01:00 UTC on Sunday 2026-10-25:
    # 02:00-03:00 local happens twice.
    hours = BusinessHours(MADRID, {6: (OpeningInterval(time(2), time(3)),)})
    clocks, events = Clocks(_utc(2026, 10, 24, 23, 58)), []
    router = _center(clocks, events)
    router.set_site_hours("madrid", hours)
    _tick_to(router, clocks, _utc(2026, 10, 24, 23, 59))
    assert not router.site_open("madrid")  # 01:59 summer time
    _tick_to(router, clocks, _utc(2026, 10, 25, 0, 0))  # 02:00 summer time
    assert router.site_open("madrid")
    _tick_to(router, clocks, _utc(2026, 10, 25, 1, 30))  # 02:30 winter time: the second pass
    assert router.site_open("madrid")
    _tick_to(router, clocks, _utc(2026, 10, 25, 2, 0))  # 03:00 winter time
    assert not router.site_open("madrid")


def test_a_holiday_closes_the_site_and_removing_the_hours_opens_it() -> None:
    clocks, events = Clocks(datetime(2026, 12, 25, 10, 0, tzinfo=MADRID)), []
    router = _center(clocks, events)
    router.set_site_hours(
        "madrid",
        BusinessHours(
            MADRID,
            {3: (OpeningInterval(time(9), None),), 4: (OpeningInterval(time(9), None),)},
            frozenset({date(2026, 12, 25)}),
        ),
    )
    assert not router.site_open("madrid")
    router.set_site_hours("madrid", None)
    assert router.site_open("madrid") and router.site_opening() == {}
    assert _free(router) == {"1001", "2001"}


def test_a_closed_site_is_not_staffed_for_the_estimates() -> None:
    clocks, events = Clocks(datetime(2026, 12, 3, 22, 0, tzinfo=MADRID)), []
    router = _center(clocks, events)
    assert router.queue_stats("billing").agents_staffed == 2
    router.set_site_hours("madrid", BusinessHours(MADRID, WEEKDAYS_9_TO_18))
    assert router.queue_stats("billing").agents_staffed == 1
    assert router.queue_stats("billing").agents_available == 1
