"""The site bus's door, and the logic both of its implementations share.

:class:`SiteBus` is what the rest of the server uses. :class:`BusCore` holds all
behaviour (codec, views, health, reservations, resynchronisation) over one
transport primitive, ``_send(topic, payload, retain)``, and one input,
``_receive(topic, payload)``; the in-process and MQTT implementations only move
bytes and report connection changes.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

from events.drills import AgentOwnerChanged, DrainAnnounced
from events.sites import BusConnected, BusDisconnected, RemoteAgentChanged
from pbx.bus import codec
from pbx.bus.codec import (
    AgentOwnerClaim,
    AgentPresence,
    AgentState,
    BadMessage,
    CallerContext,
    Forced,
    Heartbeat,
    ReservationCancel,
    ReservationOutcome,
    ReservationRequest,
    ReservationResponse,
    SiteDrainState,
    SiteOverride,
    SiteState,
    SiteStatus,
)
from pbx.bus.health import SiteHealth
from pbx.bus.remote_agents import Refused, RemoteAgents
from pbx.bus.topics import TopicKind, Topics

log = logging.getLogger("pbx.bus")

HEARTBEAT_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class ReservationDecision:
    """The owning site's answer: an agent reserved, or None and why not."""

    agent: str | None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ReservationResult:
    """What the asking site gets back; anything but RESERVED means: try elsewhere."""

    reservation_id: str
    site: str  # the site asked
    outcome: ReservationOutcome
    agent: str | None = None
    reason: str = ""

    @property
    def reserved(self) -> bool:
        return self.outcome is ReservationOutcome.RESERVED


Decide = Callable[[ReservationRequest], ReservationDecision | Awaitable[ReservationDecision]]
Release = Callable[[ReservationCancel], None]
Emit = Callable[[object], None]


class SiteBus(Protocol):
    """The door to the other sites."""

    site: str

    @property
    def connected(self) -> bool: ...

    @property
    def remote_agents(self) -> Mapping[str, AgentState]: ...

    @property
    def health(self) -> SiteHealth: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def publish_agent(self, agent: str, presence: AgentPresence,
                      since: float | None = None) -> None: ...

    def owner_of(self, agent: str) -> str | None: ...

    def claim_agent(self, agent: str, by: str) -> AgentOwnerClaim: ...

    def phone_registered(self, agent: str, by: str) -> AgentOwnerClaim | None: ...

    def drain_of(self, site: str) -> SiteDrainState | None: ...

    def publish_drain(self, state: SiteDrainState | None) -> None: ...

    async def wait_synced(self, timeout: float) -> bool: ...

    def withdraw_agent(self, agent: str) -> None: ...

    def force_site(self, site: str, forced: Forced | None, by: str) -> None: ...

    def serve_reservations(self, decide: Decide, release: Release | None = None) -> None: ...

    async def reserve(self, to_site: str, call_id: str, queue: str, caller: CallerContext,
                      timeout: float, agent: str | None = None,
                      skills: tuple[str, ...] = ()) -> ReservationResult: ...

    def cancel_reservation(self, to_site: str, reservation_id: str, reason: str) -> None: ...


class IgnoredMessages:
    """Counts ignored messages by reason; logs each (reason, source) once, not per message."""

    # Sources are topic names anyone on the broker can invent: remember a bounded number.
    MAX_SOURCES = 1024

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._logged: set[tuple[str, str]] = set()

    def note(self, kind: str, source: str, detail: str) -> None:
        self.counts[kind] += 1
        if (kind, source) in self._logged or len(self._logged) > self.MAX_SOURCES:
            return
        self._logged.add((kind, source))
        if len(self._logged) > self.MAX_SOURCES:
            log.warning("bus: ignored messages from over %d sources; no longer logging them",
                        self.MAX_SOURCES)
            return
        log.warning("bus: ignored %s from %s: %s (further ones not logged)", kind, source,
                    detail)


class BusCore:
    """Everything a site bus does, over an abstract transport (see module docstring)."""

    def __init__(self, site: str, sites: Collection[str], agent_sites: Mapping[str, str], *,
                 topics: Topics | None = None, emit: Emit | None = None,
                 heartbeat_interval: float = HEARTBEAT_INTERVAL,
                 sip_address: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.site = site
        self.sip_address = sip_address
        self._sip_addresses: dict[str, str] = {}  # other sites' own word, from their status
        self.topics = topics or Topics()
        self._emit_to = emit
        self.heartbeat_interval = heartbeat_interval
        self._clock = clock
        self._wall = wall_clock
        self._health = SiteHealth(site, set(sites))
        self._agent_sites = dict(agent_sites)
        self._remote = RemoteAgents(site, agent_sites)
        self.ignored = IgnoredMessages()
        self._connected = False
        self._own_agents: dict[str, AgentState] = {}
        self._claims: dict[str, dict[str, AgentOwnerClaim]] = {}  # agent -> site -> its claim
        self._overrides: dict[str, SiteOverride | None] = {}  # set by this site's operator
        self._drains: dict[str, SiteDrainState] = {}  # every site's drain, as the bus says
        # This site's own drain, once set here: republished on every connection.
        self._own_drain: tuple[SiteDrainState | None] | None = None
        self._synced = asyncio.Event()
        # This site's agents whose phones registered here before the retained claims were
        # read: a claim read later is older than that registration (a take-back).
        self._registered_before_sync: set[str] = set()
        self._pending: dict[str, tuple[str, asyncio.Future[ReservationResponse]]] = {}
        self._decide: Decide | None = None
        self._release: Release | None = None
        self._heartbeat_sequence = 0
        self._next_heartbeat = 0.0
        self._resyncing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- what the transport provides ------------------------------------------

    def _send(self, topic: str, payload: bytes, retain: bool) -> None:
        raise NotImplementedError

    # -- the door ---------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def remote_agents(self) -> Mapping[str, AgentState]:
        return self._remote

    @property
    def health(self) -> SiteHealth:
        return self._health

    def sip_address_of(self, site: str) -> str | None:
        """Where ``site`` takes calls from its sister sites (HOST:PORT, UDP), as it says."""
        return self._sip_addresses.get(site)

    def publish_agent(self, agent: str, presence: AgentPresence,
                      since: float | None = None) -> None:
        """Publish (retained) the live state of one of this site's agents."""
        owner = self._agent_sites.get(agent)
        if owner != self.site:
            raise ValueError(f"agent {agent!r} belongs to site {owner!r}, not {self.site!r}")
        state = AgentState(self.site, agent, presence, self._wall() if since is None else since)
        self._own_agents[agent] = state
        if self._connected:
            self._send(self.topics.agent(self.site, agent), codec.encode_agent_state(state), True)

    def owner_of(self, agent: str) -> str | None:
        """The site serving ``agent`` now (its configured site until another claims it)."""
        return self._agent_sites.get(agent)

    def claim_agent(self, agent: str, by: str) -> AgentOwnerClaim:
        """This site serves ``agent`` from now on (its phone registered here): a claim one
        version above every claim known, applied here at once and published (retained)."""
        if agent not in self._agent_sites:
            raise ValueError(f"unknown agent {agent!r}")
        version = max((claim.version for claim in self._claims.get(agent, {}).values()),
                      default=0) + 1
        claim = AgentOwnerClaim(self.site, agent, version, by, self._wall())
        self._apply_claim(claim)
        if self._connected:
            self._send(self.topics.agent_owner(self.site, agent), codec.encode_owner_claim(claim), True)
        return claim

    def phone_registered(self, agent: str, by: str) -> AgentOwnerClaim | None:
        """``agent``'s phone registered here: claim it when another site owns it. Before the
        retained claims are read, a claim read later must not take it away: the phone came
        here after it (a take-back), so this site claims above it then."""
        if self._agent_sites.get(agent) != self.site:
            return self.claim_agent(agent, by)
        if not self._synced.is_set():
            self._registered_before_sync.add(agent)
        return None

    def _apply_claim(self, claim: AgentOwnerClaim) -> None:
        claims = self._claims.setdefault(claim.agent, {})
        known = claims.get(claim.site)
        if known is not None and known.version >= claim.version:
            return  # our own echo, or older than what we have
        claims[claim.site] = claim
        winner = min(claims.values(), key=lambda c: (-c.version, c.site))
        previous = self._agent_sites.get(claim.agent)
        if winner.site == previous:
            return
        if previous == self.site and claim.agent in self._registered_before_sync:
            self._registered_before_sync.discard(claim.agent)
            log.warning("agent %s: site %s's claim (version %d) is older than its phone's "
                        "registration here: claimed back", claim.agent, winner.site,
                        winner.version)
            self.claim_agent(claim.agent, f"its phone registered at {self.site} before "
                                          "the claims were read")
            return
        self._agent_sites[claim.agent] = winner.site
        dropped, taken = self._remote.set_owner(claim.agent, winner.site)
        if dropped is not None:
            self._emit(RemoteAgentChanged(dropped.site, claim.agent, None, None, at=self._wall()))
        if taken is not None:
            self._emit(RemoteAgentChanged(taken.site, claim.agent, taken.presence, taken.since,
                                          at=self._wall()))
        if previous == self.site:
            self._own_agents.pop(claim.agent, None)  # the new owner publishes its state now
        self._emit(AgentOwnerChanged(claim.agent, winner.site, previous, winner.version,
                                     winner.by, at=self._wall()))

    def drain_of(self, site: str) -> SiteDrainState | None:
        """``site``'s drain as the bus says it (this site's own as set here), or None."""
        return self._drains.get(site)

    def publish_drain(self, state: SiteDrainState | None) -> None:
        """This site is drained (``state``) or takes calls again (None): retained, so a
        restart of this site finds it and the other sites know it."""
        self._own_drain = (state,)
        if state is None:
            self._drains.pop(self.site, None)
        else:
            self._drains[self.site] = state
        if self._connected:
            self._send_drain(state)

    def _send_drain(self, state: SiteDrainState | None) -> None:
        self._send(self.topics.site(self.site, TopicKind.DRAIN),
                   b"" if state is None else codec.encode_drain(state), True)

    @property
    def synced(self) -> bool:
        """Whether the retained messages (claims, drains) of the first connection are read."""
        return self._synced.is_set()

    async def wait_synced(self, timeout: float) -> bool:
        """Until the retained messages are read (this site's first heartbeat came back,
        after them); False when ``timeout`` passed first (broker down or slow)."""
        try:
            async with asyncio.timeout(timeout):
                await self._synced.wait()
        except TimeoutError:
            return False
        return True

    def withdraw_agent(self, agent: str) -> None:
        """Remove one of this site's agents from the bus (an empty retained message)."""
        if self._own_agents.pop(agent, None) is not None and self._connected:
            self._send(self.topics.agent(self.site, agent), b"", True)

    def force_site(self, site: str, forced: Forced | None, by: str) -> None:
        """An operator forces ``site`` down or up (None: back to the signal); published."""
        if not self._health.knows(site):
            raise ValueError(f"unknown site {site!r}")
        override = None if forced is None else SiteOverride(site, forced, by, self._wall())
        self._overrides[site] = override
        self._apply_override(site, override)
        if self._connected:
            self._send_override(site, override)
            if override is None:
                del self._overrides[site]  # a clear, once sent, has nothing to republish

    def serve_reservations(self, decide: Decide, release: Release | None = None) -> None:
        """This site's router decides requests with ``decide``; ``release`` undoes a
        reservation the asking site gave up on (timed out, answered too late, call
        abandoned). ``release`` may come twice for one reservation: make it idempotent."""
        self._decide, self._release = decide, release

    async def reserve(self, to_site: str, call_id: str, queue: str, caller: CallerContext,
                      timeout: float, agent: str | None = None,
                      skills: tuple[str, ...] = ()) -> ReservationResult:
        """Ask ``to_site`` to reserve an agent for a call; it alone decides."""
        if not self._health.knows(to_site) or to_site == self.site:
            raise ValueError(f"cannot ask site {to_site!r} from {self.site!r}")
        reservation_id = str(uuid.uuid4())
        if not self._connected:
            return ReservationResult(reservation_id, to_site, ReservationOutcome.UNREACHABLE,
                                     reason="not connected to the bus")
        if not self._health.is_up(to_site):
            # Waiting out a timeout on a site known to be down only delays the caller.
            return ReservationResult(reservation_id, to_site, ReservationOutcome.UNREACHABLE,
                                     reason=f"site {to_site} is down")
        request = ReservationRequest(reservation_id, self.site, to_site, call_id, queue, timeout,
                                     caller, agent, tuple(skills))
        answer: asyncio.Future[ReservationResponse] = asyncio.get_running_loop().create_future()
        self._pending[reservation_id] = (to_site, answer)
        self._send(self.topics.site(to_site, TopicKind.RESERVATION_REQUEST),
                   codec.encode_request(request), False)
        try:
            response = await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            # It may still reserve after we stop waiting: tell it to let go.
            self._send_cancel(to_site, reservation_id, "timed out")
            return ReservationResult(reservation_id, to_site, ReservationOutcome.TIMEOUT,
                                     reason=f"no answer within {timeout:g} s")
        except ConnectionError as error:
            return ReservationResult(reservation_id, to_site, ReservationOutcome.UNREACHABLE,
                                     reason=f"bus disconnected while waiting: {error}")
        finally:
            self._pending.pop(reservation_id, None)
        return ReservationResult(reservation_id, to_site, response.outcome, response.agent,
                                 response.reason)

    def cancel_reservation(self, to_site: str, reservation_id: str, reason: str) -> None:
        """Give back an agent ``to_site`` reserved for us (the caller hung up, the call
        could not be set up); ``to_site`` releases it."""
        self._send_cancel(to_site, reservation_id, reason)

    # -- connection changes (called by the transport) ------------------------------

    def _on_connected(self) -> None:
        self._connected = True
        self._emit(BusConnected(self.site, at=self._wall()))
        # The broker may have lost everything (restarted without persistence), and we
        # missed what changed meanwhile: republish ours, and re-read theirs.
        self._send_status(SiteState.ONLINE, "")
        for agent, state in self._own_agents.items():
            self._send(self.topics.agent(self.site, agent), codec.encode_agent_state(state), True)
        for claims in self._claims.values():
            if (claim := claims.get(self.site)) is not None:
                self._send(self.topics.agent_owner(self.site, claim.agent),
                           codec.encode_owner_claim(claim), True)
        for site, override in list(self._overrides.items()):
            self._send_override(site, override)
            if override is None:
                del self._overrides[site]
        if self._own_drain is not None:
            self._send_drain(self._own_drain[0])
        self._remote.begin_resync()
        self._resyncing = set(self._health.sites) - {self.site}
        self._next_heartbeat = self._clock()
        self.tick()

    def _on_disconnected(self, reason: str) -> None:
        if not self._connected:
            return
        self._connected = False
        for _, answer in self._pending.values():
            if not answer.done():
                answer.set_exception(ConnectionError(reason))
        self._emit(BusDisconnected(self.site, reason, at=self._wall()))

    def offline_status(self, reason: str) -> tuple[str, bytes]:
        """The retained status this site leaves behind: its last will, or a clean goodbye."""
        status = SiteStatus(self.site, SiteState.OFFLINE, self._wall(), self.heartbeat_interval,
                            reason)
        return self.topics.site(self.site, TopicKind.STATUS), codec.encode_site_status(status)

    def tick(self) -> None:
        """Send the heartbeat when due and re-judge site health; call often (4 per beat)."""
        now = self._clock()
        if self._connected and now >= self._next_heartbeat:
            self._heartbeat_sequence += 1
            beat = Heartbeat(self.site, self._heartbeat_sequence, self._wall(),
                             self.heartbeat_interval)
            self._send(self.topics.site(self.site, TopicKind.HEARTBEAT),
                       codec.encode_heartbeat(beat), False)
            self._next_heartbeat = now + self.heartbeat_interval
        for event in self._health.evaluate(now, self._wall()):
            self._emit(event)

    async def run_ticks(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(self.heartbeat_interval / 4)

    # -- incoming ---------------------------------------------------------------

    def _receive(self, topic: str, payload: bytes, retained: bool = False) -> None:
        parsed = self.topics.parse(topic)
        if parsed is None:
            self.ignored.note("unknown topic", topic, "not in the v1 layout")
            return
        site = parsed.site
        if not self._health.knows(site):
            self.ignored.note("unknown site", site, f"topic {topic}")
            return
        try:
            if parsed.kind is TopicKind.AGENT:
                assert parsed.agent is not None
                self._receive_agent(site, parsed.agent, payload, retained)
            elif parsed.kind is TopicKind.AGENT_OWNER:
                assert parsed.agent is not None
                self._receive_claim(site, parsed.agent, payload)
            elif parsed.kind is TopicKind.STATUS:
                self._receive_status(site, payload)
            elif parsed.kind is TopicKind.HEARTBEAT:
                self._receive_heartbeat(site, payload)
            elif parsed.kind is TopicKind.OVERRIDE:
                self._receive_override(site, payload)
            elif parsed.kind is TopicKind.DRAIN:
                self._receive_drain(site, payload)
            elif parsed.kind is TopicKind.RESERVATION_REQUEST:
                self._receive_request(site, payload)
            elif parsed.kind is TopicKind.RESERVATION_RESPONSE:
                self._receive_response(site, payload)
            elif parsed.kind is TopicKind.RESERVATION_CANCEL:
                self._receive_cancel(site, payload)
        except BadMessage as error:
            self.ignored.note("malformed message", topic, str(error))
        except Refused as error:
            self.ignored.note("refused message", topic, str(error))
        except Exception:
            # A bug here must not cost the connection (and every other site's messages).
            log.exception("bus: handling a message on %s failed", topic)
            self.ignored.counts["handling failed"] += 1

    def _receive_agent(self, site: str, agent: str, payload: bytes, retained: bool) -> None:
        if site == self.site:
            # Our own message, echoed. A retained one for an agent no longer ours (removed
            # from the configuration while we were down) is cleared so it does not linger.
            if (retained and payload and self._connected
                    and self._agent_sites.get(agent) != self.site):
                self._send(self.topics.agent(self.site, agent), b"", True)
            return
        state = codec.decode_agent_state(payload) if payload else None
        if self._remote.apply(site, agent, state):
            self._emit(RemoteAgentChanged(site, agent, state.presence if state else None,
                                          state.since if state else None, at=self._wall()))

    def _receive_claim(self, site: str, agent: str, payload: bytes) -> None:
        if not payload:
            return
        claim = codec.decode_owner_claim(payload)
        if (claim.site, claim.agent) != (site, agent):
            raise Refused(f"owner claim names {claim.site}/{claim.agent}, topic {site}/{agent}")
        if agent not in self._agent_sites:
            raise Refused(f"site {site!r} claims unknown agent {agent!r}")
        self._apply_claim(claim)

    def _receive_status(self, site: str, payload: bytes) -> None:
        if site == self.site or not payload:
            return
        status = codec.decode_site_status(payload)
        self._check_names(status.site, site)
        if status.sip_address is not None:
            self._sip_addresses[site] = status.sip_address
        self._health.status(site, status.state, status.heartbeat_interval, status.reason,
                            self._clock())
        self.tick()

    def _receive_drain(self, site: str, payload: bytes) -> None:
        state = codec.decode_drain(payload) if payload else None
        if state is not None:
            self._check_names(state.site, site)
        if site == self.site and self._own_drain is not None:
            return  # set here since this process started: our own echo
        if state == self._drains.get(site):
            return
        if state is None:
            self._drains.pop(site, None)
        else:
            self._drains[site] = state
        self._emit(DrainAnnounced(site, state is not None, state.since if state else None,
                                  state.by if state else None, at=self._wall()))

    def _receive_heartbeat(self, site: str, payload: bytes) -> None:
        if site == self.site:
            # Published after subscribing: the retained messages came before it.
            self._synced.set()
            self._registered_before_sync.clear()
            return
        beat = codec.decode_heartbeat(payload)
        self._check_names(beat.site, site)
        self._health.heartbeat(site, beat.interval, self._clock())
        if site in self._resyncing:
            # Heartbeats are live: its retained agents arrived before this one did.
            self._resyncing.discard(site)
            for agent in self._remote.end_resync(site):
                self._emit(RemoteAgentChanged(site, agent, None, None, at=self._wall()))
        self.tick()

    def _receive_override(self, site: str, payload: bytes) -> None:
        override = codec.decode_override(payload) if payload else None
        if override is not None:
            self._check_names(override.site, site)
        if site in self._overrides and self._overrides[site] != override:
            # Another operator's word is newer than ours: ours is no longer to republish.
            del self._overrides[site]
        self._apply_override(site, override)

    def _apply_override(self, site: str, override: SiteOverride | None) -> None:
        current = self._health.forced(site)
        forced = override.forced if override else None
        if forced is not current:
            self._health.force(site, forced, override.by if override else "")
            self.tick()

    def _receive_request(self, site: str, payload: bytes) -> None:
        request = codec.decode_request(payload)
        self._check_names(request.to_site, site)
        if not self._health.knows(request.from_site) or request.from_site == self.site:
            raise Refused(f"reservation request from site {request.from_site!r}")
        task = asyncio.get_running_loop().create_task(self._answer(request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, request: ReservationRequest) -> None:
        decision = ReservationDecision(None, "this site takes no reservations")
        if self._decide is not None:
            try:
                outcome = self._decide(request)
                decision = await outcome if inspect.isawaitable(outcome) else outcome
            except Exception:
                log.exception("bus: deciding reservation %s failed", request.reservation_id)
                decision = ReservationDecision(None, "the site failed to decide")
        if decision.agent is not None and self._agent_sites.get(decision.agent) != self.site:
            log.error("bus: reservation %s decided on agent %r of another site; refused",
                      request.reservation_id, decision.agent)
            decision = ReservationDecision(None, "the site failed to decide")
        outcome_kind = (ReservationOutcome.RESERVED if decision.agent is not None
                        else ReservationOutcome.REFUSED)
        response = ReservationResponse(request.reservation_id, self.site, request.from_site,
                                       outcome_kind, decision.agent, decision.reason)
        if self._connected:
            self._send(self.topics.site(request.from_site, TopicKind.RESERVATION_RESPONSE),
                       codec.encode_response(response), False)
        elif response.agent is not None:
            # The answer cannot leave: the asker will time out, so let the agent go now.
            self._release_reservation(ReservationCancel(request.reservation_id,
                                                        request.from_site, self.site,
                                                        "bus disconnected before the answer"))

    def _receive_response(self, site: str, payload: bytes) -> None:
        response = codec.decode_response(payload)
        self._check_names(response.to_site, site)
        pending = self._pending.get(response.reservation_id)
        if pending is None or pending[0] != response.from_site or pending[1].done():
            if pending is None and response.outcome is ReservationOutcome.RESERVED \
                    and self._health.knows(response.from_site):
                # Answered after we gave up: the cancel we sent may have crossed it.
                self._send_cancel(response.from_site, response.reservation_id,
                                  "answered too late")
            raise Refused(f"response {response.reservation_id} from {response.from_site!r} "
                          "matches no waiting request")
        pending[1].set_result(response)

    def _receive_cancel(self, site: str, payload: bytes) -> None:
        cancel = codec.decode_cancel(payload)
        self._check_names(cancel.to_site, site)
        self._release_reservation(cancel)

    def _release_reservation(self, cancel: ReservationCancel) -> None:
        if self._release is None:
            return
        try:
            self._release(cancel)
        except Exception:
            log.exception("bus: releasing reservation %s failed", cancel.reservation_id)

    # -- helpers --------------------------------------------------------------------

    @staticmethod
    def _check_names(named: str, topic_site: str) -> None:
        if named != topic_site:
            raise Refused(f"payload names site {named!r} on site {topic_site!r}'s topic")

    def _send_status(self, state: SiteState, reason: str) -> None:
        status = SiteStatus(self.site, state, self._wall(), self.heartbeat_interval, reason,
                            self.sip_address)
        self._send(self.topics.site(self.site, TopicKind.STATUS),
                   codec.encode_site_status(status), True)

    def _send_override(self, site: str, override: SiteOverride | None) -> None:
        payload = b"" if override is None else codec.encode_override(override)
        self._send(self.topics.site(site, TopicKind.OVERRIDE), payload, True)

    def _send_cancel(self, to_site: str, reservation_id: str, reason: str) -> None:
        if self._connected:
            cancel = ReservationCancel(reservation_id, self.site, to_site, reason)
            self._send(self.topics.site(to_site, TopicKind.RESERVATION_CANCEL),
                       codec.encode_cancel(cancel), False)

    def _emit(self, event: object) -> None:
        if self._emit_to is None:
            return
        try:
            self._emit_to(event)
        except Exception:
            log.exception("bus: event subscriber failed on %s", type(event).__name__)
