"""Site health from the bus's liveness signals: pure, clocks are arguments.

A site is up when its retained status says online and a heartbeat (or that status)
arrived within ``missed_beats`` heartbeat intervals, unless an operator forced it
down; a site forced up is up whatever the signal says. The site running this view
is up unless forced down. A site never heard of is down.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from events.sites import SiteDown, SiteUp
from pbx.bus.codec import Forced, SiteState

MISSED_BEATS = 3


@dataclass(slots=True)
class _Signal:
    state: SiteState | None = None
    last_seen: float | None = None  # monotonic seconds of the last status or heartbeat
    interval: float = 1.0
    reason: str = ""
    forced: Forced | None = None
    forced_by: str = ""
    up: bool = False


class SiteHealth:
    def __init__(self, own_site: str, sites: Collection[str],
                 missed_beats: int = MISSED_BEATS) -> None:
        if own_site not in sites:
            raise ValueError(f"site {own_site!r} is not one of the sites {sorted(sites)}")
        self.own_site = own_site
        self.missed_beats = missed_beats
        self._signals = {site: _Signal() for site in sites}

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(self._signals)

    def knows(self, site: str) -> bool:
        return site in self._signals

    def is_up(self, site: str) -> bool:
        signal = self._signals.get(site)
        return signal is not None and signal.up

    def up_sites(self) -> frozenset[str]:
        return frozenset(site for site, signal in self._signals.items() if signal.up)

    def forced(self, site: str) -> Forced | None:
        return self._signals[site].forced

    def status(self, site: str, state: SiteState, interval: float, reason: str,
               now: float) -> None:
        signal = self._signals[site]
        signal.state, signal.interval, signal.reason = state, interval, reason
        if state is SiteState.ONLINE:
            signal.last_seen = now

    def heartbeat(self, site: str, interval: float, now: float) -> None:
        signal = self._signals[site]
        # A heartbeat proves the site is connected even if its status was lost.
        signal.state, signal.interval, signal.last_seen = SiteState.ONLINE, interval, now

    def force(self, site: str, forced: Forced | None, by: str) -> None:
        signal = self._signals[site]
        signal.forced, signal.forced_by = forced, by

    def evaluate(self, now: float, wall: float) -> list[SiteUp | SiteDown]:
        """Recompute every site; the events of those that changed."""
        changes: list[SiteUp | SiteDown] = []
        for site, signal in self._signals.items():
            up, reason = self._judge(site, signal, now)
            if up != signal.up:
                signal.up = up
                changes.append(SiteUp(site, reason, at=wall) if up else SiteDown(site, reason, at=wall))
        return changes

    def _judge(self, site: str, signal: _Signal, now: float) -> tuple[bool, str]:
        if signal.forced is Forced.DOWN:
            return False, f"forced down by {signal.forced_by}"
        if signal.forced is Forced.UP:
            return True, f"forced up by {signal.forced_by}"
        if site == self.own_site:
            return True, "this site"
        if signal.state is None:
            return False, "never heard from"
        if signal.state is SiteState.OFFLINE:
            return False, f"offline: {signal.reason}" if signal.reason else "offline"
        assert signal.last_seen is not None
        if now - signal.last_seen > self.missed_beats * signal.interval:
            return False, "heartbeat missed"
        return True, "heartbeat"
