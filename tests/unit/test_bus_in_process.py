"""The embedded site bus: two or three sites on the in-process broker, same behaviour as MQTT."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from pbx.bus import (
    AgentPresence,
    BusConnected,
    BusDisconnected,
    CallerContext,
    Forced,
    InProcessBroker,
    InProcessSiteBus,
    RemoteAgentChanged,
    ReservationCancel,
    ReservationDecision,
    ReservationOutcome,
    ReservationRequest,
    SiteDown,
    SiteUp,
    Topics,
)
from pbx.bus.in_process import topic_matches
from pbx.bus.mqtt import parse_url
from pbx.bus.site_bus import IgnoredMessages

SITES = ["madrid", "bogota", "lima"]
AGENTS = {"1001": "madrid", "2001": "bogota", "2002": "bogota", "3001": "lima"}
BEAT = 0.05


class Recorder(list[Any]):
    def __call__(self, event: object) -> None:
        self.append(event)

    def of(self, kind: type) -> list[Any]:
        return [event for event in self if isinstance(event, kind)]


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.005)


@asynccontextmanager
async def sites(broker: InProcessBroker, *names: str
                ) -> AsyncIterator[list[tuple[InProcessSiteBus, Recorder]]]:
    buses = []
    for name in names:
        recorder = Recorder()
        bus = InProcessSiteBus(broker, name, SITES, AGENTS, topics=Topics("test"), emit=recorder,
                               heartbeat_interval=BEAT, reconnect_delays=(0.01, 0.05))
        await bus.start()
        buses.append((bus, recorder))
    try:
        await eventually(lambda: all(bus.connected and bus.health.up_sites() >= set(names)
                                     for bus, _ in buses), "connected, all up")
        yield buses
    finally:
        for bus, _ in buses:
            await bus.close()


async def test_each_site_sees_the_others_agents_and_only_writes_its_own():
    broker = InProcessBroker()
    async with sites(broker, "madrid", "bogota") as [(madrid, madrid_events), (bogota, _)]:
        bogota.publish_agent("2001", AgentPresence.AVAILABLE, since=10.0)
        bogota.publish_agent("2002", AgentPresence.BREAK, since=11.0)
        madrid.publish_agent("1001", AgentPresence.ON_CALL, since=12.0)
        await eventually(lambda: len(madrid.remote_agents) == 2 and len(bogota.remote_agents) == 1,
                         "views filled")
        assert madrid.remote_agents["2002"].presence is AgentPresence.BREAK
        assert madrid.remote_agents["2002"].since == 11.0
        assert bogota.remote_agents["1001"].presence is AgentPresence.ON_CALL
        assert "1001" not in madrid.remote_agents

        with pytest.raises(ValueError, match="belongs to site 'bogota'"):
            madrid.publish_agent("2001", AgentPresence.OFFLINE)
        with pytest.raises(ValueError, match="belongs to site None"):
            madrid.publish_agent("9999", AgentPresence.OFFLINE)

        bogota.withdraw_agent("2002")
        await eventually(lambda: "2002" not in madrid.remote_agents, "withdrawn")
        assert madrid_events.of(RemoteAgentChanged)[-1] == RemoteAgentChanged(
            "bogota", "2002", None, None, at=madrid_events.of(RemoteAgentChanged)[-1].at)
        assert "test/v1/sites/bogota/agents/2002" not in broker.retained


async def test_a_site_started_later_reads_the_retained_state():
    broker = InProcessBroker()
    async with sites(broker, "bogota") as [(bogota, _)]:
        bogota.publish_agent("2001", AgentPresence.WRAP_UP)
        await asyncio.sleep(0)
        async with sites(broker, "madrid") as [(madrid, _)]:
            await eventually(lambda: "2001" in madrid.remote_agents, "retained agent read")
            assert madrid.remote_agents["2001"].presence is AgentPresence.WRAP_UP
            await eventually(lambda: madrid.health.is_up("bogota"), "bogota up")


async def test_a_reservation_carries_the_caller_and_only_the_owner_decides():
    broker = InProcessBroker()
    seen: list[ReservationRequest] = []

    async def decide(request: ReservationRequest) -> ReservationDecision:
        seen.append(request)
        await asyncio.sleep(0)
        return ReservationDecision("2001") if request.queue == "billing" else \
            ReservationDecision(None, "no agent for that queue")

    caller = CallerContext(("language", "menu", "billing"), "es", 7, 1_790_000_000.5)
    async with sites(broker, "madrid", "bogota") as [(madrid, _), (bogota, _)]:
        bogota.serve_reservations(decide)
        first = await madrid.reserve("bogota", "call-1", "billing", caller, 1.0,
                                     skills=("billing",))
        second = await madrid.reserve("bogota", "call-2", "sales", caller, 1.0)
    assert first.reserved and first.agent == "2001" and first.site == "bogota"
    assert second.outcome is ReservationOutcome.REFUSED
    assert second.reason == "no agent for that queue" and second.agent is None
    assert first.reservation_id != second.reservation_id
    assert seen[0].caller == caller and seen[0].skills == ("billing",)
    assert seen[0].from_site == "madrid" and seen[0].call_id == "call-1"


@pytest.mark.parametrize(("decide", "reason"), [
    (None, "this site takes no reservations"),
    (lambda request: 1 / 0, "the site failed to decide"),
    (lambda request: ReservationDecision("1001"), "the site failed to decide"),  # not its agent
])
async def test_a_site_that_cannot_decide_refuses(decide, reason):
    broker = InProcessBroker()
    async with sites(broker, "madrid", "bogota") as [(madrid, _), (bogota, _)]:
        if decide is not None:
            bogota.serve_reservations(decide)
        result = await madrid.reserve("bogota", "call-1", "billing", CallerContext(), 1.0)
    assert result.outcome is ReservationOutcome.REFUSED
    assert result.reason == reason


async def test_a_late_answer_is_a_timeout_and_the_owner_releases_the_agent():
    broker = InProcessBroker()
    released: list[ReservationCancel] = []

    async def slow(request: ReservationRequest) -> ReservationDecision:
        await asyncio.sleep(0.2)
        return ReservationDecision("2001")

    async with sites(broker, "madrid", "bogota") as [(madrid, _), (bogota, _)]:
        bogota.serve_reservations(slow, released.append)
        result = await madrid.reserve("bogota", "call-1", "billing", CallerContext(), 0.05)
        assert result.outcome is ReservationOutcome.TIMEOUT
        await eventually(lambda: len(released) >= 1, "released")
    assert {cancel.reservation_id for cancel in released} == {result.reservation_id}
    assert released[0].reason in {"timed out", "answered too late"}


async def test_asking_a_site_that_is_down_fails_at_once():
    broker = InProcessBroker()
    async with sites(broker, "madrid", "bogota") as [(madrid, _), _]:
        await eventually(lambda: madrid.health.is_up("bogota"), "bogota up")
        madrid.force_site("bogota", Forced.DOWN, "madrid:ops")
        forced = await madrid.reserve("bogota", "call-1", "billing", CallerContext(), 5.0)
        never_seen = await madrid.reserve("lima", "call-2", "billing", CallerContext(), 5.0)
    assert forced.outcome is never_seen.outcome is ReservationOutcome.UNREACHABLE
    assert (forced.reason, never_seen.reason) == ("site bogota is down", "site lima is down")


async def test_asking_itself_or_an_unknown_site_is_a_programming_error():
    broker = InProcessBroker()
    async with sites(broker, "madrid") as [(madrid, _)]:
        for site in ("madrid", "paris"):
            with pytest.raises(ValueError):
                await madrid.reserve(site, "call-1", "billing", CallerContext(), 1.0)
        with pytest.raises(ValueError, match="paris"):
            madrid.force_site("paris", Forced.DOWN, "ops")


async def test_a_crashed_site_is_down_by_its_last_will_and_a_closed_one_by_its_goodbye():
    broker = InProcessBroker()
    async with sites(broker, "madrid", "bogota", "lima") as buses:
        (madrid, events), (bogota, _), (lima, _) = buses
        await eventually(lambda: madrid.health.up_sites() == set(SITES), "all up")
        bogota.crash()
        await eventually(lambda: not madrid.health.is_up("bogota"), "bogota down", 0.1)
        await lima.close()
        await eventually(lambda: not madrid.health.is_up("lima"), "lima down", 0.1)
        reasons = {event.site: event.reason for event in events.of(SiteDown)}
        assert reasons == {"bogota": "offline: connection lost", "lima": "offline: shutdown"}


async def test_a_site_that_stops_beating_is_down_after_three_beats():
    broker = InProcessBroker()
    async with sites(broker, "madrid", "bogota") as [(madrid, events), (bogota, _)]:
        await eventually(lambda: madrid.health.is_up("bogota"), "bogota up")
        assert bogota._runner is not None
        # Hung: its connection stays open (no will), it neither reads nor sends.
        bogota._runner.cancel()
        bogota._attached = False
        await asyncio.sleep(0)
        hung_at = time.monotonic()
        await eventually(lambda: not madrid.health.is_up("bogota"), "bogota down", 1.0)
        assert time.monotonic() - hung_at >= 2 * BEAT
        assert events.of(SiteDown)[-1].reason == "heartbeat missed"


async def test_an_operator_override_reaches_every_site_and_survives_a_restart():
    broker = InProcessBroker()
    async with sites(broker, "madrid", "bogota") as [(madrid, _), (bogota, bogota_events)]:
        await eventually(lambda: bogota.health.is_up("madrid"), "madrid up")
        madrid.force_site("madrid", Forced.DOWN, "madrid:ana")
        await eventually(lambda: not bogota.health.is_up("madrid"), "forced down seen")
        assert bogota_events.of(SiteDown)[-1].reason == "forced down by madrid:ana"
        broker.stop()
        broker.start()
        await eventually(lambda: madrid.connected and bogota.connected, "reconnected")
        await asyncio.sleep(5 * BEAT)
        assert not bogota.health.is_up("madrid")  # republished by madrid after the restart
        madrid.force_site("madrid", None, "madrid:ana")
        await eventually(lambda: bogota.health.is_up("madrid"), "override cleared")


async def test_a_reconnecting_site_does_not_republish_an_override_since_superseded():
    broker = InProcessBroker()
    async with sites(broker, "madrid", "bogota", "lima") as buses:
        (madrid, _), (bogota, _), (lima, _) = buses
        madrid.force_site("bogota", Forced.DOWN, "madrid:ana")
        await eventually(lambda: lima.health.forced("bogota") is Forced.DOWN, "madrid's seen")
        lima.force_site("bogota", Forced.UP, "lima:luis")
        await eventually(lambda: madrid.health.forced("bogota") is Forced.UP, "lima's seen")
        madrid.crash()
        await madrid.start()
        await eventually(lambda: madrid.connected, "madrid reconnected")
        await asyncio.sleep(5 * BEAT)
        assert [bus.health.forced("bogota") for bus, _ in buses] == [Forced.UP] * 3
        assert b"lima:luis" in broker.retained["test/v1/sites/bogota/override"]


async def test_broker_down_keeps_the_views_and_resynchronises_on_return():
    broker = InProcessBroker()
    async with sites(broker, "madrid", "bogota") as [(madrid, events), (bogota, _)]:
        bogota.publish_agent("2001", AgentPresence.AVAILABLE)
        bogota.publish_agent("2002", AgentPresence.AVAILABLE)
        await eventually(lambda: len(madrid.remote_agents) == 2, "view filled")

        broker.stop()
        assert not madrid.connected and not bogota.connected
        assert events.of(BusDisconnected)[-1].reason == "broker stopped"
        bogota.publish_agent("2001", AgentPresence.ON_CALL)
        bogota.withdraw_agent("2002")
        assert len(madrid.remote_agents) == 2  # the last view is kept
        unreachable = await madrid.reserve("bogota", "call-1", "billing", CallerContext(), 1.0)
        assert unreachable.outcome is ReservationOutcome.UNREACHABLE
        await asyncio.sleep(0.1)  # a few failed reconnection attempts

        broker.start()
        await eventually(lambda: madrid.connected and bogota.connected, "reconnected")
        await eventually(lambda: set(madrid.remote_agents) == {"2001"}
                         and madrid.remote_agents["2001"].presence is AgentPresence.ON_CALL,
                         "view converged")
        assert [type(e) for e in events if isinstance(e, BusConnected | BusDisconnected)] == \
            [BusConnected, BusDisconnected, BusConnected]


async def test_a_waiting_reservation_ends_unreachable_when_the_bus_goes():
    broker = InProcessBroker()

    async def never(request: ReservationRequest) -> ReservationDecision:
        await asyncio.sleep(10)
        return ReservationDecision(None)

    async with sites(broker, "madrid", "bogota") as [(madrid, _), (bogota, _)]:
        bogota.serve_reservations(never)
        asking = asyncio.ensure_future(
            madrid.reserve("bogota", "call-1", "billing", CallerContext(), 5.0))
        await asyncio.sleep(0.01)
        broker.stop()
        result = await asyncio.wait_for(asking, 1.0)
    assert result.outcome is ReservationOutcome.UNREACHABLE
    assert "broker stopped" in result.reason


@pytest.mark.parametrize(("topic", "payload", "kind"), [
    ("test/v1/sites/bogota/agents/2001", b"nonsense", "malformed message"),
    ("test/v1/sites/bogota/agents/2001",
     b'{"schema":9,"site":"bogota","agent":"2001","presence":"offline","since":1}',
     "malformed message"),
    ("test/v1/sites/bogota/agents/1001",
     b'{"schema":1,"site":"bogota","agent":"1001","presence":"offline","since":1}',
     "refused message"),
    ("test/v1/sites/paris/agents/1001",
     b'{"schema":1,"site":"paris","agent":"1001","presence":"offline","since":1}',
     "unknown site"),
    ("test/v1/sites/bogota/heartbeat",
     b'{"schema":1,"site":"lima","sequence":1,"at":1,"interval":1}', "refused message"),
    ("test/v1/sites/madrid/reservations/request",
     b'{"schema":1,"reservation_id":"r","from_site":"paris","to_site":"madrid","call_id":"c",'
     b'"queue":"q","timeout":1}', "refused message"),
    ("test/v1/sites/madrid/reservations/response",
     b'{"schema":1,"reservation_id":"r","from_site":"bogota","to_site":"madrid",'
     b'"outcome":"refused"}', "refused message"),
    ("test/v1/sites/madrid/reservations/other", b"{}", "unknown topic"),
])
async def test_bad_messages_are_counted_and_change_nothing(topic, payload, kind):
    broker = InProcessBroker()
    async with sites(broker, "madrid", "bogota") as [(madrid, events), (bogota, _)]:
        bogota.publish_agent("2001", AgentPresence.AVAILABLE, since=1.0)
        await eventually(lambda: madrid.health.is_up("bogota") and "2001" in madrid.remote_agents,
                         "settled")
        before = (dict(madrid.remote_agents), madrid.health.up_sites(), len(events))
        broker.publish(topic, payload, retain=False)
        await eventually(lambda: madrid.ignored.counts[kind] == 1, f"{kind} counted")
        after = (dict(madrid.remote_agents), madrid.health.up_sites(),
                 len([e for e in events if not isinstance(e, SiteUp)]))
        assert after[:2] == before[:2]
        assert not [e for e in events[before[2]:] if not isinstance(e, SiteUp)]


async def test_a_retained_agent_no_longer_in_the_configuration_is_cleared():
    broker = InProcessBroker()
    stale = "test/v1/sites/madrid/agents/1999"
    broker.retained[stale] = (
        b'{"schema":1,"site":"madrid","agent":"1999","presence":"available","since":1}')
    async with sites(broker, "madrid"):
        await eventually(lambda: stale not in broker.retained, "stale agent cleared")


async def test_a_failing_event_subscriber_does_not_stop_the_bus():
    broker = InProcessBroker()

    def broken(event: object) -> None:
        raise RuntimeError("subscriber bug")

    madrid = InProcessSiteBus(broker, "madrid", SITES, AGENTS, topics=Topics("test"), emit=broken,
                              heartbeat_interval=BEAT)
    bogota = InProcessSiteBus(broker, "bogota", SITES, AGENTS, topics=Topics("test"),
                              heartbeat_interval=BEAT)
    await madrid.start()
    await bogota.start()
    try:
        bogota.publish_agent("2001", AgentPresence.AVAILABLE)
        await eventually(lambda: "2001" in madrid.remote_agents, "still working")
    finally:
        await madrid.close()
        await bogota.close()


@pytest.mark.parametrize(("pattern", "topic", "matches"), [
    ("a/+/c", "a/b/c", True), ("a/+/c", "a/b/d", False), ("a/#", "a/b/c", True),
    ("a/+", "a/b/c", False), ("a/b", "a/b", True), ("a/b/c", "a/b", False),
])
def test_in_process_topic_filters_match_like_mqtt(pattern, topic, matches):
    assert topic_matches(pattern, topic) is matches


def test_ignored_messages_are_logged_once_per_source_within_a_bound(caplog):
    ignored = IgnoredMessages()
    for _ in range(3):
        ignored.note("unknown site", "paris", "topic x")
    for n in range(IgnoredMessages.MAX_SOURCES + 50):
        ignored.note("refused message", f"topic-{n}", "claim")
    assert ignored.counts == {"unknown site": 3,
                              "refused message": IgnoredMessages.MAX_SOURCES + 50}
    messages = [record.getMessage() for record in caplog.records]
    assert sum("paris" in message for message in messages) == 1
    assert len(messages) == IgnoredMessages.MAX_SOURCES + 1  # then one "no longer logging"
    assert "no longer logging" in messages[-1]


@pytest.mark.parametrize(("url", "address"), [
    ("mqtt://127.0.0.1:1883", ("127.0.0.1", 1883)),
    ("mqtt://broker.example", ("broker.example", 1883)),
])
def test_the_bus_url_names_the_broker(url, address):
    assert parse_url(url) == address


@pytest.mark.parametrize("url", ["tcp://127.0.0.1:1883", "mqtt://", "127.0.0.1:1883"])
def test_a_bus_url_that_is_not_mqtt_is_refused(url):
    with pytest.raises(ValueError, match="mqtt://HOST:PORT"):
        parse_url(url)
