"""The composition root: builds every part of the server from its configuration and runs it."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import time
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from callbacks import CallbackDesk
from events import (
    AgentOffered,
    CallEnded,
    EventBus,
    RegistrationChanged,
    SipAuthenticationFailed,
    SipSourceBlocked,
)
from events.callbacks import CallbackEnded
from events.drills import AgentOwnerChanged
from events.sites import SiteDown
from ivr.call_log import IvrCallLog
from ivr.engine import CustomerProfile
from ivr.metrics import IvrMetrics
from monitoring.callbacks import CallbackMetrics
from monitoring.contact_center import ContactCenterMetrics
from monitoring.drills import DrillMetrics
from monitoring.metrics import TelephonyMetrics
from monitoring.object_census import cycle_census, keep_cycles, object_census
from monitoring.protection import ProtectionMetrics
from monitoring.sites import SiteMetrics
from pbx.agent_desk.app import AgentDesk, SignInLimits, create_agent_desk
from pbx.api import create_api
from pbx.api.schemas import RemoteAgentView
from pbx.api.sites import SITE_DRAIN
from pbx.calls.applications import ApplicationDirectory, unknown_flow_references
from pbx.calls.callback_connection import CallbackConnector
from pbx.calls.callback_service import CallbackService
from pbx.calls.cross_site import CrossSiteCalls
from pbx.calls.ivr_application import DeskCallbacks
from pbx.calls.manager import CallManager, counted_host
from pbx.calls.outbound import TrunkDialer
from pbx.calls.queueing import IvrTransfers, QueuedCaller, QueueService
from pbx.calls.screen_pop import ScreenPop
from pbx.configuration.models import opening_hours
from pbx.configuration.server import HttpSettings, ServerConfig
from pbx.drill.agents import DrillAgents
from pbx.drill.drain import RETRY_AFTER_SECONDS, SiteDrain
from pbx.edge.endpoint import ALLOW, SipEndpoint, new_tag
from pbx.edge.protection import SourceGuard
from pbx.edge.tls import server_context
from pbx.edge.transport import Address, Transports
from pbx.http import create_http_app
from pbx.media.engine import EmbeddedMediaEngine, MediaEngine
from pbx.media.ports import PortAllocator
from pbx.media.prompt import PromptLibrary
from pbx.media.rtpengine import RtpengineMediaEngine, WebRtcMediaBridge
from pbx.records import CallRecorder
from pbx.records.interruptions import KeptPlaces, SurvivorAdoption, record_interrupted_calls
from pbx.registration.durable import DurableRegistrations
from pbx.registration.registrar import Binding, Registrar
from pbx.sip.digest import DigestAuthenticator
from pbx.sip.message import Headers, Request, Response, make_response
from pbx.sip.transaction import TimerConfig, TransactionKey
from pbx.site_link import SiteLink
from pbx.store import CallDetails, ConstraintViolation, Store
from pbx.store.callbacks import SqlCallbackStore
from router import Reservation, Router, RouterError, UnknownAgent, UnknownCall

log = logging.getLogger("pbx.server")

HOUSEKEEPING_INTERVAL = 1.0
ROUTER_TICK_INTERVAL = 0.25  # longest sleep between timer runs (they run when due; see _tick_router)
LOOP_LAG_PROBE_INTERVAL = 0.1
RECONCILE_EVERY = 10  # housekeeping rounds between router/dialog reconciliations
PRUNE_SOURCES_EVERY = 10  # housekeeping rounds between forgetting idle sources
# Young (generation-1) collector passes between two full passes; Python's default is 10. Calls
# are freed by reference counting, so a full pass finds next to nothing, yet it walks every
# live object (hundreds per call in progress, plus lingering transactions): 100-340 ms at
# 60-120 calls/s here, every 2-3 s, long enough for agents' SIPp to give up on a leg.
FULL_COLLECTION_EVERY = 1000
SEED_ATTEMPTS = 3
# How long a site of several waits at start for the bus's retained owner claims and drains.
BUS_SYNC_SECONDS = 3.0


def utc_now() -> datetime:
    return datetime.now(UTC)


class UnsafeHttpListen(ValueError):
    """The API would be reachable beyond this machine without a token."""


def check_http_exposure(http: HttpSettings) -> None:
    """Refuse an API without a token on anything but loopback; warn about it on loopback."""
    if http.api_token:
        return
    try:
        loopback = ipaddress.ip_address(http.host).is_loopback
    except ValueError:
        loopback = http.host == "localhost"
    if not loopback:
        raise UnsafeHttpListen(
            f"HTTP listens on {http.host}:{http.port}, beyond loopback, and http.api_token is "
            "not set: anyone who reaches it could read agents' and customers' data and change "
            "the contact center. Set http.api_token, or listen on 127.0.0.1")
    log.warning("the HTTP API has no token (http.api_token is not set): it is open to every "
                "program on this machine and listens on loopback %s:%d only; set a token "
                "before exposing it", http.host, http.port)


class Server:
    def __init__(self, config: ServerConfig, *, var_dir: Path) -> None:
        self.config = config
        self.var_dir = var_dir
        self.events = EventBus()
        self.metrics = TelephonyMetrics()
        self.metrics.subscribe(self.events)
        self.ivr_metrics = IvrMetrics(self.metrics.registry)
        self.ivr_metrics.subscribe(self.events)
        history = config.history
        self.ivr_calls = IvrCallLog(history.ivr_calls, history.max_age_seconds)
        # The IVR's record of a queued caller is read again when an agent's phone rings:
        # it ages out from the end of the call, not of the IVR.
        self.events.subscribe(lambda event: self.ivr_calls.call_ended(event.call_id), CallEnded)
        sip = config.sip
        self.guard = SourceGuard(sip.protection)
        self.guard.block_listeners.append(lambda source, reason: self.events.publish(SipSourceBlocked(reason)))
        self.protection_metrics = ProtectionMetrics(self.metrics.registry)
        self.protection_metrics.subscribe(self.events)
        self.transports = Transports(self._receive, trace=sip.trace, limits=sip.streams,
                                     is_trusted=self.guard.is_trusted, events=self.events)
        self.endpoint = SipEndpoint(self.transports, self.events,
                                    timers=TimerConfig(t1=sip.t1, t2=sip.t2, t4=sip.t4),
                                    user_agent=sip.user_agent, guard=self.guard)
        self.transports.on_stream_error = self.endpoint.reject_unparsable
        self.transports.on_connection_closed = self._connection_closed
        self.authenticator = DigestAuthenticator(sip.realm, os.urandom(32), sip.nonce_lifetime,
                                                 sip.digest_algorithms)
        # One site of several registers only its own agents' phones: another site's agent
        # is that site's to serve (its phone is refused here like an unknown account).
        self._registrar_accounts = {user: account for user, account in config.accounts.items()
                                    if config.is_local_agent(user)}
        self.registrar = Registrar(self._registrar_accounts, self.authenticator, sip)
        self.registrar.listeners.append(self._registration_changed)
        self.registrar.auth_failure_listeners.append(self._auth_failed)
        self.endpoint.blocked_behind_front_door = self._blocked_behind_front_door
        self.ports = PortAllocator(config.media.host, config.media.port_min, config.media.port_max)
        self.embedded_media = EmbeddedMediaEngine(self.ports)
        # media.engine: rtpengine carries bridged talk; prompts and DTMF stay embedded.
        self.rtpengine: RtpengineMediaEngine | None = None
        if config.media.engine == "rtpengine":
            assert config.media.rtpengine is not None  # the configuration requires it
            # Asked often enough that silence is judged on fresh figures (rtpengine's are
            # whole seconds).
            self.rtpengine = RtpengineMediaEngine(
                config.media.rtpengine, self.embedded_media,
                heard_poll_interval=min(5.0, config.media.rtp_timeout / 3))
        self.media: MediaEngine = self.rtpengine or self.embedded_media
        if self.rtpengine is not None:
            # Browsers' WebRTC media is bridged to plain RTP by rtpengine (SIP over WebSocket).
            self.transports.webrtc = WebRtcMediaBridge(self.rtpengine)
        self.prompts = PromptLibrary()
        self.applications = ApplicationDirectory(self.prompts, self.events, self.ivr_calls,
                                                 self._lookup_customer)
        self.calls = CallManager(config, self.endpoint, self.registrar, self.events, self.media,
                                 self.applications)
        # Outbound calls (callbacks through a trunk) have no inbound leg: their dialogs are
        # looked up here before the call manager's.
        self.outbound = TrunkDialer(self.endpoint, self.media, config.media, config.callbacks)
        if self.rtpengine is not None:
            self.rtpengine.on_lost = self.calls.media_lost
        self._calls_bye = self.endpoint.handlers["BYE"]
        self.endpoint.handlers["BYE"] = self._on_bye
        self._calls_invite = self.endpoint.handlers["INVITE"]
        self.endpoint.handlers["INVITE"] = self._on_invite
        self.endpoint.handlers["OPTIONS"] = self._on_options
        self.endpoint.handlers["REGISTER"] = self._on_register
        # Timers on the monotonic clock (a wall-clock step moves none); records in wall time.
        self.router = Router(time.monotonic, wall_clock=time.time,
                             rona_return_seconds=config.routing.rona_return_seconds,
                             decision_calls_kept=history.routing_calls,
                             decisions_per_call=history.routing_decisions_per_call,
                             decisions_max_age_seconds=history.max_age_seconds,
                             publish=self.events.publish,
                             on_reservation=lambda reservation: self.queues.offer(reservation))
        self.site_link = SiteLink(config, self.router, self.events) if config.multi_site else None
        if config.bus.url is not None and self.site_link is None:
            log.warning("bus.url is set, but this server is the whole contact center (site %s, "
                        "no agent of another site): the bus is not used", config.site)
        if self.site_link is not None:
            SiteMetrics(self.metrics.registry, config.site, self.site_link.sites).subscribe(self.events)
            DrillMetrics(self.metrics.registry, config.site).subscribe(self.events)
        self.store: Store | None = None
        self.recorder: CallRecorder | None = None
        self.durable_registrations: DurableRegistrations | None = None
        self.callback_desk: CallbackDesk | None = None
        self.survivor: SurvivorAdoption | None = None
        # A drill drains this site (one of several): new calls go to the other sites.
        self.drill_agents = (DrillAgents(self.site_link, self.router, self.registrar,
                                         self._registrar_accounts, config.accounts,
                                         lambda: self.durable_registrations, self.endpoint.now)
                             if self.site_link is not None else None)
        if self.drill_agents is not None:
            self.events.subscribe(self.drill_agents.owner_changed, AgentOwnerChanged)
        self.drain = (SiteDrain(config.site, self.events,
                                lambda: self.recorder.live_calls if self.recorder else 0,
                                lambda: self.callback_service, self.drill_agents)
                      if self.site_link is not None else None)
        self.contact_center_metrics = ContactCenterMetrics(
            self.metrics.registry, self.router,
            sla_thresholds=[queue.sla_seconds for queue in config.contact_center.queues])
        self.contact_center_metrics.subscribe(self.events)
        self.callback_metrics = CallbackMetrics(self.metrics.registry)
        self.callback_metrics.subscribe(self.events)
        self.callback_service: CallbackService | None = None
        self.queues = QueueService(self.router, self.calls, self.prompts, self.events,
                                   on_agent_ringing=self._agent_ringing,
                                   on_agent_answered=self._agent_answered)
        self.applications.enqueue = self.queues
        # Callback requests wait in the router's lines; their turn connects agent and customer.
        self.callback_connector = CallbackConnector(self.router, self.calls, self.media, self.prompts,
                                                    self.outbound, config.callbacks, self.events)
        self.queues.callbacks = self.callback_connector
        self.applications.transfer = IvrTransfers(self.queues)
        # Callers waiting here served by other sites' agents, and the reverse.
        self.cross_site = (CrossSiteCalls(self.router, self.calls, self.queues, self.site_link,
                                          self.events, self._ivr_record)
                           if self.site_link is not None else None)
        # The desk exists once the store is open (start): until then nothing is booked.
        callback_gateway = DeskCallbacks(self.router, lambda: self.callback_desk)
        self.applications.callbacks = callback_gateway
        callback_rules = config.callbacks.callbacks
        self.queues.offer_callbacks(
            callback_gateway, callback_rules.offer_digit,
            {queue: rules.offer_after_wait for queue, rules in callback_rules.queues.items()
             if rules.offer_after_wait is not None})
        self.screen_pop = ScreenPop(self.events, webhook_url=config.routing.screen_pop_url,
                                    capacity=history.screen_pops,
                                    max_age_seconds=history.max_age_seconds)
        protection = config.sip.protection
        self.agent_desk = AgentDesk(self.router, self.registrar.password_of, self.events,
                                    self._sip_websocket,
                                    SignInLimits(protection.auth_failures, protection.auth_window,
                                                 protection.block_seconds)
                                    if protection.enabled else SignInLimits(failures=2**62),
                                    webrtc_media=self.rtpengine is not None)
        self.applications.features = self.queues.apply_feature
        self._http_runner: web.AppRunner | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._router_ticker: asyncio.Task[None] | None = None
        self._lag_watch: asyncio.Task[None] | None = None
        self._collector_thresholds: tuple[int, int, int] | None = None
        self._background: set[asyncio.Task[None]] = set()

    def _connection_closed(self, transport: str, source: Address) -> None:
        """A browser's WebSocket closed: its registration goes with it (RFC 7118 §5), so no
        call is offered to a page that is gone."""
        removed = self.registrar.connection_closed(transport, source, self.endpoint.now())
        if removed:
            log.info("%d registration(s) over the %s connection from %s:%d dropped with it",
                     removed, transport, *source)

    def _sip_websocket(self) -> tuple[str, int] | None:
        """Where the agent page's phone connects: the WSS listener, or else the WS one."""
        for name in ("WSS", "WS"):
            local = self.transports.local.get(name)
            if local is not None:
                return name.lower(), local.port
        return None

    def _receive(self, data: bytes, source: Address, transport: str) -> None:
        self.endpoint.receive(data, source, transport)

    async def start(self) -> None:
        check_http_exposure(self.config.http)
        self.var_dir.mkdir(parents=True, exist_ok=True)
        if self.rtpengine is not None:
            # Not answering yet is no reason to stay down: calls get 503 until it does.
            await self.rtpengine.start()
            if not self.rtpengine.available:
                log.error("rtpengine at %s:%d does not answer (%s): calls get 503 until it does",
                          *self.rtpengine.address, self.rtpengine.unavailable_reason)
        flows = self.applications.prepare(list(self.config.extensions.values()))
        for problem in unknown_flow_references(flows, self.config):
            log.warning("%s (unless created through the API)", problem)
        for flow in flows.values():
            self.ivr_metrics.declare_flow(flow)
        self.store = await Store.open(self.config.store_url)
        # Calls a crash left in progress: recorded as interrupted before any new call starts
        # (a server that is the whole contact center notes its calls without a site).
        for own_site in (self.config.site, None):
            await record_interrupted_calls(self.store, own_site)
        # Their waiting callers' places, given back when they call again in time.
        kept_places = KeptPlaces(self.store, self.config.routing.interrupted_caller_keeps_place_seconds)
        await kept_places.forget_expired()
        await kept_places.load()
        if self.config.multi_site:
            self.events.subscribe(kept_places.site_down, SiteDown)
        self.queues.kept_place = kept_places.place_of
        history = self.config.history
        # One site of several names itself in every record of the shared database.
        self.recorder = CallRecorder(self.store, self.events, self.ivr_calls,
                                     site=self.config.site if self.config.multi_site else None,
                                     clock=time.time,
                                     registry=self.metrics.registry, details=self._call_details,
                                     finished_ids_kept=history.finished_call_ids,
                                     finished_ids_max_age_seconds=history.max_age_seconds)
        self.recorder.start()
        center = self.config.contact_center
        await self._seed_store()
        await self.store.load_into(self.router)
        # Follow-the-sun: each site's agents take calls within its business hours only.
        for record in await self.store.sites():
            self.router.set_site_hours(record.name, opening_hours(record))
        # Agents become reachable when their softphone registers, not before.
        for snapshot in self.router.agents():
            self.router.agent_reachable(snapshot.profile.extension, False)
        # ... or when their registration, kept from before a restart, is still valid.
        self.durable_registrations = DurableRegistrations(self.store, self.registrar, self.endpoint.now)
        await self.durable_registrations.restore()
        self.durable_registrations.start()
        if self.site_link is not None:
            # Another site's last will: its calls in progress are recorded here.
            self.survivor = SurvivorAdoption(self.store, self.config.site, self.events,
                                             self.site_link.bus.health.is_up)
            await self.site_link.start()
            # Owner claims and this site's drain first: no call to an agent taken over.
            await self.site_link.wait_synced(BUS_SYNC_SECONDS)
        listen = self.config.sip.listen
        tls = None
        if any(address.transport in ("tls", "wss") for address in listen):
            tls = server_context(self.config.sip.tls, self.var_dir,
                                 [a.host for a in listen if a.transport in ("tls", "wss")])
        for address in listen:
            await self.transports.listen(address.transport, address.host, address.port, tls)
        app = create_http_app(self._render_metrics, self._health,
                              object_census if self.config.http.object_census else None,
                              cycle_census if self.config.http.cycle_census else None)
        callbacks = self.config.callbacks
        self.callback_desk = CallbackDesk(
            SqlCallbackStore(self.store.engine), site=self.config.site, clock=utc_now,
            lease=timedelta(seconds=callbacks.callbacks.lease_seconds),
            policies={queue.name: callbacks.callbacks.for_queue(queue.name).policy()
                      for queue in center.queues},
            publish=self.events.publish)
        api = create_api(self.store, self.router, self.config.http.api_token,
                         self.ivr_calls, self.screen_pop, self.recorder,
                         self.callback_desk, callbacks,
                         self.site_link.override if self.site_link else None,
                         self._remote_agent if self.site_link else None)
        if self.drain is not None:
            api[SITE_DRAIN] = self.drain
        app.add_subapp("/api/v1", api)
        app.add_subapp("/agent", create_agent_desk(self.agent_desk, self.store))
        hours = {name: rules.business_hours.hours()
                 for name, rules in callbacks.callbacks.queues.items() if rules.business_hours}
        self.callback_service = CallbackService(
            self.callback_desk, self.callback_connector, line=self.callback_connector,
            queues=lambda: [queue.name for queue in self.router.queues()],
            poll_seconds=callbacks.callbacks.poll_seconds,
            concurrent_tries=callbacks.callbacks.concurrent_tries,
            is_open=lambda queue, now: queue not in hours or hours[queue].is_open(now),
            publish=self.events.publish)
        self.callback_connector.take_turn = self.callback_service.take_turn
        await self.callback_service.start()
        self.events.subscribe(self._callback_ended, CallbackEnded)
        self._http_runner = web.AppRunner(app, access_log=None)
        await self._http_runner.setup()
        site = web.TCPSite(self._http_runner, self.config.http.host, self.config.http.port)
        await site.start()
        log.info("HTTP on http://%s:%d (/healthz, /metrics)", self.config.http.host, self.config.http.port)
        loop = asyncio.get_running_loop()
        self._housekeeping = loop.create_task(self._housekeep())
        self._router_ticker = loop.create_task(self._tick_router())
        self._lag_watch = loop.create_task(self._watch_loop_lag())
        # Everything loaded so far (prompts, flows, config, the ORM's metadata) lives as
        # long as the process: keep it out of the collector's full passes, which
        # otherwise stall the loop for hundreds of milliseconds under load.
        gc.collect()
        gc.freeze()
        self._collector_thresholds = gc.get_threshold()
        gc.set_threshold(self._collector_thresholds[0], self._collector_thresholds[1],
                         FULL_COLLECTION_EVERY)
        if self.config.http.cycle_census:
            keep_cycles()
        self.metrics.collector.install()
        log.info("Centralita ready: %d accounts, extensions %s", len(self.config.accounts),
                 ", ".join(sorted(self.config.extensions)) or "none")

    async def _seed_store(self) -> None:
        """The configured records into the store. Sites sharing one database seed it from
        the same file: one that started at the same instant may insert a record first, and
        the seed, idempotent, is run again over what that one committed."""
        assert self.store is not None
        center = self.config.contact_center
        for attempt in range(SEED_ATTEMPTS):
            try:
                await self.store.seed([a.profile for a in center.agents], center.queues,
                                      center.sites, center.customers)
                return
            except ConstraintViolation as error:
                if attempt + 1 == SEED_ATTEMPTS:
                    raise
                log.info("another site seeded the store at the same time (%s): seeding again", error)

    async def stop(self) -> None:
        log.info("shutting down: ending %d call(s) in progress", len(self.calls.calls))
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        if self._router_ticker is not None:
            self._router_ticker.cancel()
        if self._lag_watch is not None:
            self._lag_watch.cancel()
        if self.callback_service is not None:
            await self.callback_service.stop()
        await self.callback_connector.close()
        self.outbound.close_all()
        self.calls.close_all()
        # Let the BYEs and final responses leave before the sockets close.
        await asyncio.sleep(0.05)
        await self.endpoint.close()
        await self.transports.close()
        if self.rtpengine is not None:
            await self.rtpengine.stop()
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        await self.agent_desk.close()
        await self.screen_pop.close()
        if self._background:  # last-agent writes still under way
            await asyncio.gather(*self._background, return_exceptions=True)
        if self.site_link is not None:
            await self.site_link.close()  # the other sites see this one go at once
        if self.survivor is not None:
            await self.survivor.close()
        if self.recorder is not None:
            log.info("shutting down: writing %d call record(s) and %d pending write(s)",
                     self.recorder.live_calls, self.recorder.pending_writes)
            await self.recorder.close()
        if self.durable_registrations is not None:
            await self.durable_registrations.close()
        if self.store is not None:
            log.info("shutting down: closing the store")
            await self.store.close()
        self.metrics.collector.uninstall()
        if self._collector_thresholds is not None:
            gc.set_threshold(*self._collector_thresholds)
        log.info("Centralita stopped")

    async def _housekeep(self) -> None:
        loop = asyncio.get_running_loop()
        rounds = 0
        next_qualify = loop.time() + self.config.sip.qualify_interval
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            rounds += 1
            try:
                now = loop.time()
                self.registrar.expire(now)
                if self.config.sip.qualify_interval and now >= next_qualify:
                    next_qualify = now + self.config.sip.qualify_interval
                    for binding in self.registrar.all_bindings(now):
                        self._qualify(binding)
                self.calls.reconcile(now, full=rounds % RECONCILE_EVERY == 0)
                self._forget_old_history()
                if rounds % PRUNE_SOURCES_EVERY == 0:
                    self.guard.prune(now)
                if gc.get_count()[2] and not self.calls.calls:
                    # No call for a pass to delay: the full pass that comes rarely on its own
                    # (FULL_COLLECTION_EVERY) runs now and frees what error paths left in cycles.
                    gc.collect()
            except Exception:
                log.exception("housekeeping failed")

    def _forget_old_history(self) -> None:
        """Finished calls' details past ``history.max_age_seconds`` leave memory."""
        self.router.forget_old_decisions()
        self.ivr_calls.prune()
        self.screen_pop.prune()
        if self.recorder is not None:
            self.recorder.forget_old_finished()

    def history_sizes(self) -> dict[str, int]:
        """How many calls each in-memory holder has details of."""
        return {
            "routing_decisions": self.router.decisions_kept,
            "ivr_calls": len(self.ivr_calls),
            "screen_pops": len(self.screen_pop),
            "finished_call_ids": self.recorder.finished_ids if self.recorder is not None else 0,
            "recorder_live_calls": self.recorder.live_calls if self.recorder is not None else 0,
        }

    async def _watch_loop_lag(self) -> None:
        """Measure how late the loop wakes up: a stall beyond T1 makes us retransmit
        requests whose answers are already waiting in the socket."""
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + LOOP_LAG_PROBE_INTERVAL
            await asyncio.sleep(LOOP_LAG_PROBE_INTERVAL)
            lag = max(0.0, loop.time() - expected)
            self.metrics.loop_lag.observe(lag)
            if lag > self.config.sip.t1 / 2:
                log.warning("event loop stalled for %.0f ms", lag * 1000)

    async def _tick_router(self) -> None:
        while True:
            due = self.router.next_due()
            delay = ROUTER_TICK_INTERVAL if due is None else due - time.monotonic()
            # Until the next timer; at most the interval, for timers a command adds meanwhile.
            await asyncio.sleep(min(max(delay, 0.0), ROUTER_TICK_INTERVAL))
            try:
                self.queues.run_timers()
            except Exception:
                log.exception("router tick failed")

    async def _lookup_customer(self, number: str) -> CustomerProfile | None:
        if self.store is None:
            return None
        record = await self.store.customer(number)
        if record is None:
            return None
        return CustomerProfile(record.number, record.tier.value, record.language, record.last_agent,
                               record.name, record.preferred_agent)

    def _agent_answered(self, queued: QueuedCaller, agent: str) -> None:
        """First-responder ownership: the customer's last agent is stored, so it outlives a
        restart and reaches the router with the customer's next call. A customer who reached
        an agent needs no callback any more: their pending requests are cancelled."""
        caller = queued.request.caller
        if self.store is None or not caller:
            return
        if self.recorder is not None and queued.request.known_customer is not False:
            # A caller found unknown has no record; a known one's is updated with the call's
            # records, in the writer's next transaction.
            self.recorder.note_last_agent(caller, agent)
        if self.callback_desk is not None and self.callback_desk.may_have_active_requests(caller):
            self._in_background(self._cancel_callbacks_of(caller, queued.call_id))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _cancel_callbacks_of(self, caller: str, call_id: str) -> None:
        if self.callback_desk is None:
            return
        try:
            cancelled = await self.callback_desk.cancel_for_customer(
                caller, reason=f"the customer reached an agent (call {call_id})")
        except Exception:
            log.exception("cannot cancel the callbacks of %s", caller)
            return
        for request in cancelled:
            log.info("callback %s for %s in %s cancelled: the customer reached an agent on call %s",
                     request.id, request.number, request.queue, call_id)

    def _call_details(self, call_id: str, ended: datetime) -> CallDetails | None:
        """A finished call's routing, IVR path and context, as the store keeps them."""
        try:
            routing: list[dict[str, Any]] | None = [
                decision.to_dict() for decision in self.router.explain(call_id)] or None
        except UnknownCall:
            routing = None
        ivr = self.ivr_calls.get(call_id) if call_id in self.ivr_calls else None
        try:
            context: dict[str, Any] | None = self.screen_pop.context(call_id)
        except KeyError:
            context = None
        if routing is None and ivr is None and context is None:
            return None
        return CallDetails(call_id, ended, routing, ivr, context)

    def _remote_agent(self, extension: str) -> RemoteAgentView | None:
        assert self.site_link is not None
        found = self.site_link.remote_agent(extension)
        return None if found is None else RemoteAgentView(**found)

    def _ivr_record(self, call_id: str) -> dict[str, Any] | None:
        try:
            return self.ivr_calls.get(call_id)
        except KeyError:
            return None

    def _agent_ringing(self, queued: QueuedCaller, reservation: Reservation) -> None:
        """Screen-pop: everything the agent should see when the phone rings."""
        ivr = self._ivr_record(queued.call_id)
        context: dict[str, object] = {
            "caller": queued.request.caller,
            "queue": reservation.queue,
            "priority": queued.request.priority,
            "language": queued.language,
            "last_agent": queued.request.last_agent,  # who served this customer last, if known
            "ivr": ivr,
            "routing": reservation.decision.to_dict() if reservation.decision else None,
        }
        self.events.publish(AgentOffered(queued.call_id, reservation.agent, reservation.queue,
                                         queued.request.caller, context))

    def _qualify(self, binding: Binding) -> None:
        """OPTIONS to a registered phone: any answer means alive, a timeout means gone."""
        host, port = self.endpoint.local_address(binding.transport)
        headers = Headers()
        headers.add("Via", self.endpoint.via(binding.transport))
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<sip:centralita@{host}:{port}>;tag={new_tag()}")
        headers.add("To", f"<{binding.contact.uri}>")
        headers.add("Call-ID", f"{new_tag()}{new_tag()}@centralita")
        headers.add("CSeq", "1 OPTIONS")
        for route in binding.path:
            headers.add("Route", route)
        request = Request("OPTIONS", binding.contact.uri, headers)

        def answered(response: Response | None) -> None:
            self.registrar.set_answering(binding, response is not None, self.endpoint.now())

        self.endpoint.send_request(request, binding.source, binding.transport, answered)

    # -- simple methods --------------------------------------------------------------
    def _on_options(self, key: TransactionKey, request: Request, source: Address, transport: str) -> None:
        if self._drained(key, request):
            return
        response = make_response(request, 200, to_tag=None if request.to.tag else "options")
        response.add_header("Allow", ALLOW)
        response.add_header("Accept", "application/sdp")
        self.endpoint.respond(key, response)

    def _callback_ended(self, event: CallbackEnded) -> None:
        if self.callback_service is not None and self.callback_service.call_off(event.request_id):
            log.info("callback %s %s during its try: the call is called off", event.request_id,
                     event.state)

    def _drained(self, key: TransactionKey, request: Request) -> bool:
        """A drained site answers new requests 503: the front door's probe takes it out of the
        rotation and a call that still comes fails over to the next site."""
        if self.drain is None or not self.drain.draining or request.to.tag:
            return False
        response = make_response(request, 503, to_tag="drained")
        response.add_header("Retry-After", str(RETRY_AFTER_SECONDS))
        self.endpoint.respond(key, response)
        return True

    def _on_invite(self, key: TransactionKey, request: Request, source: Address, transport: str) -> None:
        if not self._drained(key, request):
            self._calls_invite(key, request, source, transport)

    def _on_bye(self, key: TransactionKey, request: Request, source: Address, transport: str) -> None:
        if not self.outbound.on_bye(key, request, source, transport):
            self._calls_bye(key, request, source, transport)

    def _on_register(self, key: TransactionKey, request: Request, source: Address, transport: str) -> None:
        now = self.endpoint.now()
        user = request.to.uri.user_unescaped if request.to.uri.is_sip else None
        link = self.site_link
        if self._moved_by_drill(user):
            # A drill moved this agent: the front door tries the next site, which serves it.
            response = make_response(request, 503, to_tag="drained")
            response.add_header("Retry-After", str(RETRY_AFTER_SECONDS))
            self.endpoint.respond(key, response)
            return
        if (link is not None and user is not None and user not in self._registrar_accounts
                and user in self.config.accounts and link.may_take_over(user)):
            # Another site's agent whose site is down here: agents move with the calls.
            self._registrar_accounts[user] = self.config.accounts[user]
        response = self.registrar.handle_register(request, source, transport, now)
        self.endpoint.respond(key, response)
        if (link is not None and user is not None and response.status == 200
                and self.registrar.bindings(user, now)):
            link.registered_here(user)

    def _moved_by_drill(self, user: str | None) -> bool:
        link, agents = self.site_link, self.drill_agents
        if user is None or link is None or agents is None or not link.draining:
            return False
        return agents.is_released(user) or link.bus.owner_of(user) not in (None, self.config.site)

    def _auth_failed(self, source: Address, user: str | None, request: Request, reason: str) -> None:
        self.events.publish(SipAuthenticationFailed(request.method))
        # Behind a front door the failures are the caller's, not the front door's: blocking
        # the front door would lock out every caller behind it.
        caller = counted_host(request, source, self.config.sip)
        self.guard.auth_failed(source if caller == source[0] else (caller, 0), user, request.call_id,
                               reason, self.endpoint.now())

    def _blocked_behind_front_door(self, request: Request, source: Address) -> bool:
        if not self.config.sip.is_front_door(source):
            return False
        caller = counted_host(request, source, self.config.sip)
        return caller != source[0] and self.guard.is_blocked(caller, self.endpoint.now())

    def _registration_changed(self, user: str, registered: bool) -> None:
        try:
            self.router.agent_reachable(user, registered)
            if registered and self.config.routing.auto_login:
                self.router.login(user)
        except UnknownAgent:
            pass  # an account that is not an agent
        except RouterError as exc:
            log.info("agent %s: %s", user, exc)
        bindings = len(self.registrar.bindings(user, self.endpoint.now()))
        self.events.publish(RegistrationChanged(user, registered, bindings))

    # -- HTTP ----------------------------------------------------------------------
    async def _render_metrics(self) -> bytes:
        def sample() -> None:
            self.contact_center_metrics.sample()
            media = self.media.resources()
            self.metrics.sample_gauges(
                transactions=len(self.endpoint.transactions),
                dialogs=self.calls.active_dialogs,
                contacts=len(self.registrar),
                accounts=len(self.registrar.registered_users()),
                rtp_sessions=media["rtp_sessions"],
                rtp_ports=media["rtp_ports_in_use"],
                call_tasks=len(self.calls.tasks),
            )
            self.protection_metrics.sample(blocked_sources=self.guard.blocked_sources(self.endpoint.now()),
                                           connections=self.transports.connection_counts())
            self.metrics.sample_history(self.history_sizes())
        return await self.metrics.render(sample)

    def _health(self) -> dict[str, Any]:
        return {
            "sip": [str(a) for a in self.config.sip.listen],
            "calls": len(self.calls.calls),
            "registered_contacts": len(self.registrar),
            # One site of several: the bus connection, the sites' health, other sites' agents.
            "bus": self.site_link.health() if self.site_link is not None else None,
            # What calls hold (ports, sockets, tasks, dialogs, router entries): all zero when idle.
            "resources": {**self.calls.resources(), **self.queues.resources(),
                          **(self.cross_site.resources() if self.cross_site else {}),
                          "outbound_calls": len(self.outbound.calls),
                          **self.callback_connector.resources(),
                          "callback_tries": len(self.callback_service.dialing)
                          if self.callback_service is not None else 0,
                          "sip_requests_awaiting_answers": self.endpoint.requests_awaiting_answers,
                          "sip_transactions": len(self.endpoint.transactions)},
        }
