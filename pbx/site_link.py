"""This site's link to the other sites: the site bus wired to the router.

When the server is one site of several (``ServerConfig.multi_site``), it owns only its
site's agents: their live state, as the router changes it, is published on the bus
(one writer per agent); the other sites' agents are seen read only through the bus;
the sites' health (heartbeat, last will, operator override) is what the router is
told through ``set_site_health``. Topics and payloads: ``pbx/bus/README.md``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from events import AgentStateChanged, EventBus
from events.drills import AgentOwnerChanged, DrainAnnounced, DrainEnded, DrainStarted
from events.sites import (
    AgentPresence,
    BusConnected,
    BusDisconnected,
    ForeignReservation,
    SiteDown,
    SiteUp,
)
from pbx.bus import Forced, MqttSiteBus, Topics
from pbx.bus.codec import CallerContext, ReservationCancel, ReservationRequest, SiteDrainState
from pbx.bus.site_bus import ReservationDecision, ReservationResult
from pbx.configuration.server import ServerConfig
from router import (
    AgentProfile,
    AgentState,
    DuplicateCall,
    QueueConfig,
    Reservation,
    Router,
    RouterError,
    RoutingRequest,
    UnknownQueue,
)
from router.agent_book import serves

log = logging.getLogger("pbx.sites")

# The router's finer states as the bus's presence: ringing is still "reserved" for others.
PRESENCE = {
    AgentState.OFFLINE: AgentPresence.OFFLINE,
    AgentState.AVAILABLE: AgentPresence.AVAILABLE,
    AgentState.RESERVED: AgentPresence.RESERVED,
    AgentState.RINGING: AgentPresence.RESERVED,
    AgentState.ON_CALL: AgentPresence.ON_CALL,
    AgentState.WRAP_UP: AgentPresence.WRAP_UP,
    AgentState.BREAK: AgentPresence.BREAK,
}


@dataclass(frozen=True)
class HeldForSite:
    """A reservation this site's router made for another site's call."""

    site: str  # the asking site
    reservation_id: str  # the router's
    queue: str
    agent: str
    call_id: str  # the router's id of that call (the asking site's Call-ID)


class SiteLink:
    def __init__(self, config: ServerConfig, router: Router, events: EventBus) -> None:
        assert config.bus.url is not None, "a site of several needs bus.url (checked by the config)"
        self.site = config.site
        self.router = router
        self.events = events
        self.sites = tuple(sorted({record.name for record in config.contact_center.sites}))
        # This site's agents: its configured ones, less those another site took over,
        # plus those whose phones registered here while their site was down.
        self.own_agents = {agent for agent, site in config.agent_sites.items() if site == self.site}
        self.home_sites = dict(config.agent_sites)  # every agent's site in the configuration
        self.draining = False  # this site, for a drill: its waiting callers go elsewhere
        udp = next((a for a in config.sip.listen if a.transport == "udp"), None)
        self.bus = MqttSiteBus(config.bus.url, self.site, self.sites, config.agent_sites,
                               topics=Topics(config.bus.topic_prefix), emit=events.publish,
                               heartbeat_interval=config.bus.heartbeat_interval,
                               sip_address=None if udp is None else f"{udp.host}:{udp.port}")
        events.subscribe(self._agent_changed, AgentStateChanged)
        events.subscribe(self._site_changed, SiteUp, SiteDown)
        events.subscribe(self._connection_changed, BusConnected, BusDisconnected)
        events.subscribe(self._owner_changed, AgentOwnerChanged)
        events.subscribe(self._drain_changed, DrainStarted, DrainEnded)
        events.subscribe(self._drain_announced, DrainAnnounced)
        # The bus's reservation id -> the router's reservation, for the
        # other sites' reservations of our agents; bounded, the oldest forgotten first
        # (the router's own timer expires a reservation whatever happens to this map).
        self._held_for_others: OrderedDict[str, HeldForSite] = OrderedDict()
        self.bus.serve_reservations(self._decide, self._release)
        # Agent states held back while a reservation is answered (see _decide).
        self._held_back: list[AgentStateChanged] | None = None
        self._asking: dict[str, int] = {}  # site -> this site's requests to it under way

    async def start(self) -> None:
        """Publish every own agent's state and connect; the other sites start down (never
        heard from) until their heartbeat arrives. A broker that is down does not stop
        the server: this site serves its own agents and keeps retrying."""
        now = time.time()
        for snapshot in self.router.agents():
            if snapshot.extension in self.own_agents:
                self.bus.publish_agent(snapshot.extension, PRESENCE[snapshot.state], now)
        for site in self.sites:
            self.router.set_site_health(site, self.bus.health.is_up(site))
        log.info("site %s of %s; bus %s", self.site, ", ".join(self.sites), self.bus.url)
        await self.bus.start()

    async def wait_synced(self, timeout: float) -> bool:
        """Until the bus's retained messages (owner claims, drains) are read, so this site
        neither routes to an agent another site took over nor forgets its own drain."""
        synced = await self.bus.wait_synced(timeout)
        if not synced:
            log.warning("site %s: the bus's retained messages not read within %g s: starting "
                        "without them (owner claims and drains apply when they arrive)",
                        self.site, timeout)
        return synced

    async def close(self) -> None:
        await self.bus.close()

    def _drain_changed(self, event: DrainStarted | DrainEnded) -> None:
        if event.site != self.site:
            return
        self.draining = isinstance(event, DrainStarted)
        self.bus.publish_drain(SiteDrainState(self.site, event.at, event.by)
                               if isinstance(event, DrainStarted) else None)

    def _drain_announced(self, event: DrainAnnounced) -> None:
        if event.site != self.site:
            log.warning("site %s %s", event.site, f"is drained by {event.by}: no call of ours "
                        "goes there" if event.draining else "takes calls again")

    def drained(self, site: str) -> bool:
        """Whether ``site`` is drained for a drill (the bus's word; this site's own state)."""
        return self.draining if site == self.site else self.bus.drain_of(site) is not None

    def override(self, site: str, forced: str | None, by: str) -> bool:
        """An operator forces ``site`` "down" or "up" (None: back to its signal); every site
        hears it. Returns whether the site is up now in this site's view."""
        self.bus.force_site(site, None if forced is None else Forced(forced), f"{self.site}:{by}")
        return self.bus.health.is_up(site)

    def may_take_over(self, agent: str) -> bool:
        """Whether this site may register ``agent``'s phone though another site serves it:
        that site is down here (its agents move with the calls to a survivor)."""
        owner = self.bus.owner_of(agent)
        return owner is not None and (owner == self.site or not self.bus.health.is_up(owner))

    def registered_here(self, agent: str) -> None:
        """``agent``'s phone registered here: this site serves the agent from now on."""
        if self.bus.owner_of(agent) is None:
            return
        self.bus.phone_registered(agent, f"its phone registered at {self.site}")

    def _owner_changed(self, event: AgentOwnerChanged) -> None:
        gained = event.site == self.site
        if gained:
            self.own_agents.add(event.agent)
        else:
            self.own_agents.discard(event.agent)
        try:
            snapshot = self.router.agent(event.agent)
        except RouterError:
            return
        # The router chooses an agent only at a site that is up: the agent's site is now
        # the one serving it.
        self.router.upsert_agent(dataclasses.replace(snapshot.profile, site=event.site))
        if gained:
            self.bus.publish_agent(event.agent, PRESENCE[snapshot.state])
        elif event.previous == self.site:
            self.router.agent_reachable(event.agent, False)  # its phone is with the other site
        log.warning("agent %s is served by site %s now (was %s; version %d: %s)", event.agent,
                    event.site, event.previous, event.version, event.by)

    def remote_agent(self, extension: str) -> dict[str, Any] | None:
        """Another site's agent as its site publishes it: site, presence, since and whether
        that site is up here; None for this site's agents and agents not heard of."""
        state = self.bus.remote_agents.get(extension)
        if state is None:
            return None
        return {"site": state.site, "presence": state.presence.value, "since": state.since,
                "site_up": self.bus.health.is_up(state.site)}

    # Far more than can be live at once: a reservation lives seconds.
    HELD_FOR_OTHERS_KEPT = 10_000

    def _decide(self, request: ReservationRequest) -> ReservationDecision:
        """Another site asks for one of our agents: our router alone decides (one writer
        per agent), from the agents free here now."""
        decision = self._decision(request)
        self.events.publish(ForeignReservation(
            request.from_site, request.queue, "refused" if decision.agent is None else "reserved",
            decision.agent, decision.reason, at=time.time()))
        return decision

    def _decision(self, request: ReservationRequest) -> ReservationDecision:
        caller = request.caller
        if self._held_back is None:
            # The answer leaves before the agent's new state: on a broker without
            # TCP_NODELAY (Mosquitto's default) the second of two messages in a row to the
            # asker waits for its delayed ACK, about 40 ms; the asker waits only for the answer.
            self._held_back = []
            asyncio.get_running_loop().call_soon(self._publish_held_back)
        try:
            queue = self.router.queue(request.queue)
        except UnknownQueue:
            return ReservationDecision(None, f"no queue {request.queue!r} at site {self.site}")
        if self.draining:
            return ReservationDecision(None, f"site {self.site} is drained for a drill")
        # A drained site's waiting callers are offered to every other site's agents.
        if not queue.allows_site(self.site) and not self.drained(request.from_site):
            return ReservationDecision(None, f"queue {request.queue} does not allow site "
                                             f"{self.site}'s agents (its sites)")
        try:
            call = RoutingRequest(request.call_id, request.queue, priority=caller.priority,
                                  language=caller.language,
                                  enqueued_at=caller.enqueued_at or None)
            outcome = self.router.reserve_for_site(call, request.from_site, request.agent)
        except UnknownQueue:
            return ReservationDecision(None, f"no queue {request.queue!r} at site {self.site}")
        except DuplicateCall:
            return ReservationDecision(None, f"call {request.call_id} is already known here")
        except RouterError as error:
            return ReservationDecision(None, f"bad request: {error}")
        if not isinstance(outcome, Reservation):
            log.info("reservation %s from %s for %s refused: %s", request.reservation_id,
                     request.from_site, request.queue, outcome.note)
            return ReservationDecision(None, outcome.note or "no agent free")
        held = self._held_for_others
        held[request.reservation_id] = HeldForSite(request.from_site, outcome.reservation_id,
                                                   request.queue, outcome.agent, request.call_id)
        while len(held) > self.HELD_FOR_OTHERS_KEPT:
            held.popitem(last=False)
        log.info("reservation %s from %s for %s: agent %s reserved (%s)", request.reservation_id,
                 request.from_site, request.queue, outcome.agent, outcome.reservation_id)
        return ReservationDecision(outcome.agent)

    # -- asking the other sites ----------------------------------------------------------

    def sites_to_ask(self, queue: str, language: str | None = None) -> list[str]:
        """The other sites worth asking for an agent for a call of ``queue``: allowed by the
        queue's ``sites``, up, within their business hours (every site's are in the shared
        configuration), and with an agent available (as its site publishes it) who could
        take the call; most such agents first. Only the site asked decides."""
        free = self._free_elsewhere(queue, language)
        return sorted(free, key=lambda site: (-free[site], site))

    def _free_elsewhere(self, queue: str, language: str | None) -> dict[str, int]:
        """Site -> how many of its agents, as it publishes them, could take the call now."""
        config = self.router.queue(queue)
        if not config.sites and not self.draining:
            return {}
        free: dict[str, int] = {}
        for extension, state in self.bus.remote_agents.items():
            if (state.presence is AgentPresence.AVAILABLE
                    and (self.draining or config.allows_site(state.site))
                    and not self.drained(state.site)
                    and self.bus.health.is_up(state.site) and self.router.site_open(state.site)
                    and self._could_take(extension, config, language)):
                free[state.site] = free.get(state.site, 0) + 1
        return free

    def _could_take(self, extension: str, config: QueueConfig, language: str | None) -> bool:
        try:
            profile: AgentProfile = self.router.agent(extension).profile
        except RouterError:
            return False  # an agent this site's router does not know
        wanted = language if language is not None else config.language
        return serves(profile, config) and (wanted is None or wanted in profile.languages)

    # -- what the cross-site calls use (pbx.calls.cross_site.OtherSites) ------------------

    def asks_elsewhere(self, queue: str) -> bool:
        if self.draining:
            return True  # a drill: the callers waiting here go to the other sites' agents
        try:
            return bool(self.router.queue(queue).sites)
        except RouterError:
            return False

    async def ask(self, call_id: str, queue: str, caller: dict[str, Any],
                  timeout: float) -> tuple[str, str, str] | None:
        """(site, agent, reservation id) of a reservation made for the call, or None."""
        path = caller.get("ivr_path") or ()
        context = CallerContext(tuple(str(step) for step in path), caller.get("language"),
                                int(caller.get("priority") or 0),
                                float(caller.get("enqueued_at") or time.time()))
        result = await self.reserve_elsewhere(call_id, queue, context, timeout)
        if result is None or result.agent is None:
            return None
        return result.site, result.agent, result.reservation_id

    def give_back(self, site: str, reservation_id: str, reason: str) -> None:
        self.bus.cancel_reservation(site, reservation_id, reason)

    def sip_address_of(self, site: str) -> tuple[str, int] | None:
        text = self.bus.sip_address_of(site)
        if text is None:
            return None
        host, _, port = text.rpartition(":")
        try:
            return host, int(port)
        except ValueError:
            return None

    def held_for(self, reservation_id: str) -> HeldForSite | None:
        return self._held_for_others.get(reservation_id)

    async def reserve_elsewhere(self, call_id: str, queue: str, caller: CallerContext,
                                timeout: float) -> ReservationResult | None:
        """Ask the sites worth asking, one after another, to reserve an agent for a call
        waiting here; the first reservation made, or None (every site refused, timed out
        or was unreachable: the call keeps waiting here). The caller of this method owns
        the reservation: set the call up to that site, or ``cancel_reservation`` it.

        A site is asked by no more of this site's callers at once than it has agents free
        for them: a backlog here does not flood a site whose agents are busy anyway."""
        free = self._free_elsewhere(queue, caller.language)
        for site in sorted(free, key=lambda site: (-free[site], site)):
            if self._asking.get(site, 0) >= free[site]:
                continue
            self._asking[site] = self._asking.get(site, 0) + 1
            try:
                result = await self.bus.reserve(site, call_id, queue, caller, timeout)
            finally:
                self._asking[site] -= 1
            if result.reserved:
                return result
            log.info("call %s: site %s did not reserve an agent (%s: %s)", call_id, site,
                     result.outcome.value, result.reason)
        return None

    def _release(self, cancel: ReservationCancel) -> None:
        """The asking site gave the agent back; a second cancel finds nothing to do."""
        held = self._held_for_others.get(cancel.reservation_id)
        if held is None or held.site != cancel.from_site:
            return  # unknown, already released, or not the asker's to cancel
        del self._held_for_others[cancel.reservation_id]
        if self.router.release_for_site(held.reservation_id):
            log.info("reservation %s released by %s: %s", cancel.reservation_id,
                     cancel.from_site, cancel.reason)
            self.events.publish(ForeignReservation(cancel.from_site, held.queue, "released",
                                                   reason=cancel.reason, at=time.time()))

    def _agent_changed(self, event: AgentStateChanged) -> None:
        if event.agent not in self.own_agents:
            return
        if self._held_back is not None:
            self._held_back.append(event)
            return
        self.bus.publish_agent(event.agent, PRESENCE[AgentState(event.new)], event.at)

    def _publish_held_back(self) -> None:
        held_back, self._held_back = self._held_back or [], None
        for event in held_back:
            self.bus.publish_agent(event.agent, PRESENCE[AgentState(event.new)], event.at)

    def _site_changed(self, event: SiteUp | SiteDown) -> None:
        up = isinstance(event, SiteUp)
        log.log(logging.INFO if up else logging.WARNING,
                "site %s is %s: %s", event.site, "up" if up else "down", event.reason)
        self.router.set_site_health(event.site, up)

    def _connection_changed(self, event: BusConnected | BusDisconnected) -> None:
        if isinstance(event, BusConnected):
            log.info("bus connected to %s", self.bus.url)
        elif event.reason != "closed":  # not this server shutting down
            log.warning("bus disconnected from %s (%s): serving this site's agents only",
                        self.bus.url, event.reason)

    def health(self) -> dict[str, Any]:
        """What /healthz says about the sites."""
        health = self.bus.health

        def forced(site: str) -> str | None:
            override = health.forced(site)
            return None if override is None else override.value

        return {
            "site": self.site,
            "broker": self.bus.url,
            "connected": self.bus.connected,
            "sites": {site: {"up": health.is_up(site), "forced": forced(site),
                             "open": self.router.site_open(site), "drained": self.drained(site)}
                      for site in self.sites},
            "remote_agents": {agent: state.presence.value
                              for agent, state in sorted(self.bus.remote_agents.items())},
            "ignored_messages": dict(self.bus.ignored.counts),
        }
