"""Site health from heartbeats, last wills and operator overrides (pure, clock as argument)."""

from __future__ import annotations

import pytest

from events.sites import SiteDown, SiteUp
from pbx.bus.codec import Forced, SiteState
from pbx.bus.health import SiteHealth


def changes(health: SiteHealth, now: float) -> list[tuple[str, str, str]]:
    return [(type(e).__name__, e.site, e.reason) for e in health.evaluate(now, wall=1000 + now)]


def test_this_site_is_up_and_the_others_down_until_heard_from():
    health = SiteHealth("madrid", ["madrid", "bogota"])
    assert changes(health, 0) == [("SiteUp", "madrid", "this site")]
    assert health.up_sites() == {"madrid"}
    assert changes(health, 100) == []


def test_a_site_is_up_while_it_beats_and_down_after_three_missed_beats():
    health = SiteHealth("madrid", ["madrid", "bogota"])
    health.evaluate(0, 0)
    health.status("bogota", SiteState.ONLINE, 1.0, "", now=1.0)
    assert changes(health, 1.0) == [("SiteUp", "bogota", "heartbeat")]
    for beat in (2.0, 3.0, 4.0):
        health.heartbeat("bogota", 1.0, now=beat)
        assert changes(health, beat + 0.9) == []
    assert changes(health, 7.0) == []  # exactly three intervals: still up
    assert changes(health, 7.01) == [("SiteDown", "bogota", "heartbeat missed")]
    health.heartbeat("bogota", 1.0, now=8.0)
    assert changes(health, 8.0) == [("SiteUp", "bogota", "heartbeat")]


def test_the_last_will_puts_a_site_down_at_once():
    health = SiteHealth("madrid", ["madrid", "bogota"])
    health.status("bogota", SiteState.ONLINE, 1.0, "", now=0.0)
    health.evaluate(0.0, 0.0)
    health.status("bogota", SiteState.OFFLINE, 1.0, "connection lost", now=0.1)
    assert changes(health, 0.1) == [("SiteDown", "bogota", "offline: connection lost")]


def test_an_operator_override_beats_the_signal_until_cleared():
    health = SiteHealth("madrid", ["madrid", "bogota", "lima"])
    health.status("bogota", SiteState.ONLINE, 1.0, "", now=0.0)
    health.evaluate(0.0, 0.0)
    health.force("bogota", Forced.DOWN, "ops")
    health.force("lima", Forced.UP, "ops")
    health.force("madrid", Forced.DOWN, "ops")
    assert sorted(changes(health, 0.5)) == [
        ("SiteDown", "bogota", "forced down by ops"), ("SiteDown", "madrid", "forced down by ops"),
        ("SiteUp", "lima", "forced up by ops")]
    health.heartbeat("bogota", 1.0, now=0.6)
    assert changes(health, 0.6) == []
    health.force("bogota", None, "")
    health.force("madrid", None, "")
    assert sorted(changes(health, 0.7)) == [("SiteUp", "bogota", "heartbeat"),
                                            ("SiteUp", "madrid", "this site")]


def test_events_carry_their_wall_time():
    health = SiteHealth("madrid", ["madrid"])
    [event] = health.evaluate(5.0, wall=1_790_000_000.0)
    assert event == SiteUp("madrid", "this site", at=1_790_000_000.0)
    health.force("madrid", Forced.DOWN, "ops")
    assert health.evaluate(6.0, 1_790_000_001.0) == [
        SiteDown("madrid", "forced down by ops", at=1_790_000_001.0)]


def test_this_site_must_be_one_of_the_sites():
    with pytest.raises(ValueError, match="lima"):
        SiteHealth("lima", ["madrid", "bogota"])
