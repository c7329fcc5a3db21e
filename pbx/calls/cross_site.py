"""Calls that cross sites: a caller waiting here served by another site's agent.

Asking side (the site the call waits at): while a queued caller is in line, its queue's
``sites`` allows others and it has waited the queue's ``sites_after_seconds`` for this
site's agents (``Router.other_sites_after``), the sites that publish a matching free agent
(and are within their business hours) are asked
to reserve one (``OtherSites.ask``: over the site bus, the other site alone decides).
With a reservation the call leaves this site's line (``Router.offer_elsewhere``) and is
set up to that site's server: an INVITE from this B2BUA to the SIP address the site
publishes, for the reserved agent, carrying the reservation id and the caller's context
in headers (the same context a local agent's screen-pop shows: number, queue, priority,
language, the IVR's record of the call with its path). Its answer connects the caller (media relayed here, and there); a failure
puts the caller back in their place here, and the asking goes on.

Owning side (the agent's site): such an INVITE is accepted only from the address the
asking site publishes and only for a reservation that site holds for that very agent;
the agent's phones ring with the caller's context (the same screen-pop event as a local
offer, its ``routing`` the decision of this site's router, which chose the agent) and the router hears ringing, answer, failure and the end of the call, as for a
call of its own; the agent's ring timeout is the queue's, as for a local call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

from events import AgentOffered, CallEnded, EventBus
from events.drills import CallerMoved, DrainStarted
from pbx.calls.manager import SITE_RESERVATION_HEADER, CallLeg, CallManager, CallWork, Dial, SipCall
from pbx.calls.queueing import FAILURE_OF_STATUS, QueuedCaller, QueueService
from pbx.edge.transport import Address
from pbx.registration.registrar import Binding
from pbx.sip.address import NameAddress
from pbx.sip.uri import Uri
from pbx.site_link import HeldForSite
from router import CallStatus, Router, RouterError

log = logging.getLogger("pbx.calls.cross_site")

SITE_HEADER = "X-Centralita-Site"  # the asking site
CONTEXT_HEADER = "X-Centralita-Context"  # the caller's context, JSON
ASK_AGAIN_SECONDS = 0.5  # between rounds of asking while a caller waits
RESERVATION_WAIT_SECONDS = 2.5  # how long one site's answer is waited for (its owner holds 5 s)


class OtherSites(Protocol):
    """What this module needs of the site link (``pbx.site_link.SiteLink``)."""

    site: str

    draining: bool  # this site is drained for a drill: its waiting callers go elsewhere

    def asks_elsewhere(self, queue: str) -> bool: ...

    async def ask(self, call_id: str, queue: str, caller: dict[str, object],
                  timeout: float) -> tuple[str, str, str] | None: ...

    def give_back(self, site: str, reservation_id: str, reason: str) -> None: ...

    def sip_address_of(self, site: str) -> Address | None: ...

    def held_for(self, reservation_id: str) -> HeldForSite | None: ...


# The IVR's record of a call (``ivr.call_log.IvrCallLog.get``), or None when it had none.
IvrRecordOf = Callable[[str], dict[str, Any] | None]


class CrossSiteCalls:
    def __init__(self, router: Router, calls: CallManager, queues: QueueService,
                 sites: OtherSites, events: EventBus,
                 ivr_record_of: IvrRecordOf = lambda call_id: None) -> None:
        self.router = router
        self.ivr_record_of = ivr_record_of
        self.calls = calls
        self.queues = queues
        self.sites = sites
        self.events = events
        self._tasks: set[asyncio.Task[None]] = set()
        self._owned: dict[str, HeldForSite] = {}  # this site's SIP Call-ID -> reservation
        self._seeking: set[str] = set()  # callers waiting here for whom other sites are asked
        queues.on_waiting = self._waiting
        queues.foreign_calls = self._foreign_calls
        calls.site_call_handler = self._site_call
        events.subscribe(self._call_ended, CallEnded)
        events.subscribe(self._drained, DrainStarted)

    def resources(self) -> dict[str, int]:
        return {"cross_site_tasks": len(self._tasks), "cross_site_calls": len(self._owned)}

    # -- asking side -------------------------------------------------------------------

    def _waiting(self, queued: QueuedCaller) -> None:
        if queued.call_id in self._seeking or not self.sites.asks_elsewhere(queued.request.queue):
            return
        self._seeking.add(queued.call_id)
        task = asyncio.get_running_loop().create_task(self._seek(queued))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._seeking.discard(queued.call_id))

    def _drained(self, event: DrainStarted) -> None:
        """A drill drains this site: the callers already waiting here are offered to the
        other sites' agents too, whatever their queue's sites, at their place in line."""
        if event.site == self.sites.site:
            for queued in list(self.queues.queued.values()):
                if not self._over(queued):
                    self._waiting(queued)

    def _waiting_in(self, queued: QueuedCaller) -> str | None:
        """The queue the caller waits in now (an overflow moves it), or None."""
        if queued.finished.is_set():
            return None
        try:
            record = self.router.call(queued.call_id)
        except RouterError:
            return None
        return record.call.queue if record.status is CallStatus.WAITING else None

    def _still_waiting(self, queued: QueuedCaller) -> bool:
        return self._waiting_in(queued) is not None

    def _context(self, queued: QueuedCaller, queue: str) -> dict[str, object]:
        """What the other site's agent sees when the phone rings: a local screen-pop's
        context (``pbx.server``'s), plus the original enqueue time and the IVR's path."""
        request = queued.request
        ivr = self.ivr_record_of(queued.call_id)
        path = [step["node"] for step in ivr["path"]] if ivr is not None else []
        return {"caller": request.caller, "queue": queue, "priority": request.priority,
                "language": queued.language, "last_agent": request.last_agent, "ivr": ivr, "ivr_path": path,
                "enqueued_at": queued.enqueued_at or time.time()}

    def _over(self, queued: QueuedCaller) -> bool:
        """The caller left the queueing code (hung up, answered, moved on): stop asking.
        ``finished`` alone is not enough: a caller hanging up ends the queueing task without it."""
        return queued.finished.is_set() or self.queues.queued.get(queued.call_id) is not queued

    async def _seek(self, queued: QueuedCaller) -> None:
        while not self._over(queued):
            queue = self._waiting_in(queued)
            wait = ASK_AGAIN_SECONDS
            if queue is not None and self.sites.asks_elsewhere(queue):
                # Only once the caller has waited the queue's sites_after_seconds here
                # (a drained site's callers at once).
                left = 0 if self.sites.draining else self.router.other_sites_after(queued.call_id)
                if left == 0:
                    caller = self._context(queued, queue)
                    found = await self.sites.ask(queued.call_id, queue, caller,
                                                 RESERVATION_WAIT_SECONDS)
                    if found is not None:
                        site, agent, reservation_id = found
                        if await self._set_up(queued, site, agent, reservation_id, caller):
                            return
                elif left is not None:
                    wait = min(left, ASK_AGAIN_SECONDS)
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can lose a cancellation
                async with asyncio.timeout(wait):
                    await queued.finished.wait()
            except TimeoutError:
                pass

    async def _set_up(self, queued: QueuedCaller, site: str, agent: str, reservation_id: str,
                      caller: dict[str, object]) -> bool:
        """Call the other site's server for its reserved agent; True once answered."""
        address = self.sites.sip_address_of(site)
        if address is None or not self._still_waiting(queued):
            self.sites.give_back(site, reservation_id, "the call no longer waits"
                                 if address is not None else "no SIP address known")
            return False
        try:
            self.router.offer_elsewhere(queued.call_id, site, agent)
        except RouterError:
            self.sites.give_back(site, reservation_id, "the call no longer waits")
            return False
        outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def answered(leg: CallLeg) -> None:
            queued.dial = None
            if queued.finished.is_set() or outcome.done():
                self.calls.hang_up_leg(leg)
                return
            queued.agent_leg = leg
            self.queues.stop_callback_offer(queued)  # the caller is served: no offer plays on
            self.calls.connect_media(queued.handle.call, leg)
            self._step(lambda: self.router.elsewhere_answered(queued.call_id))
            if self.queues.on_agent_answered is not None:
                self.queues.on_agent_answered(queued, agent)
            log.info("call %s: answered by agent %s of site %s", queued.call_id, agent, site)
            if self.sites.draining:
                self.events.publish(CallerMoved(queued.call_id, self.sites.site, site, agent))
            outcome.set_result(True)

        def failed(status: int) -> None:
            queued.dial = None
            log.info("call %s: agent %s of site %s did not take it (%d)", queued.call_id, agent,
                     site, status)
            # Let the agent go there at once, whatever happened (a no-op once that site did).
            self.sites.give_back(site, reservation_id, f"the call was not taken ({status})")
            if not queued.finished.is_set():
                self._step(lambda: self.router.elsewhere_failed(queued.call_id))
            if not outcome.done():
                outcome.set_result(False)

        target = Binding(agent, NameAddress(Uri("sip", user=agent, host=address[0], port=address[1])),
                         math.inf, "", 0, address, "UDP", None)
        context = json.dumps(caller, separators=(",", ":"))
        headers = ((SITE_RESERVATION_HEADER, reservation_id), (SITE_HEADER, self.sites.site),
                   ("X-Centralita-Queue", queued.request.queue),
                   ("X-Centralita-Caller", queued.request.caller or "anonymous"),
                   (CONTEXT_HEADER, context))
        try:
            dial = await self.calls.dial(queued.handle.call, agent, on_answered=answered,
                                         on_failed=failed, extra_headers=headers, personal=False,
                                         targets=[target])
        except OSError as error:
            log.error("call %s: cannot call site %s: %s", queued.call_id, site, error)
            dial = None
        if dial is None:
            failed(503)
            return False
        if queued.finished.is_set():
            self.calls.cancel_dial(dial)
            return False
        queued.dial = dial
        return await outcome

    @staticmethod
    def _step(step: Callable[[], None]) -> None:
        try:
            step()
        except RouterError as error:
            log.warning("router refused a step: %s", error)

    # -- owning side ---------------------------------------------------------------------

    def _site_call(self, call: SipCall, leg: CallLeg, source: Address) -> CallWork | None:
        request = leg.invite
        held = self.sites.held_for(request.headers.get(SITE_RESERVATION_HEADER) or "")
        asking = request.headers.get(SITE_HEADER) or ""
        if held is None or held.site != asking or held.agent != call.callee:
            log.warning("call %s from %s: no reservation of site %r for agent %s; refused",
                        call.call_id, source, asking, call.callee)
            return None
        published = self.sites.sip_address_of(held.site)
        if published is None or published[0] != source[0]:
            # The host only: a server's requests leave from any of its ports.
            log.warning("call %s: reservation of site %s presented from %s, not from its "
                        "address %s; refused", call.call_id, held.site, source, published)
            return None
        try:
            context = json.loads(request.headers.get(CONTEXT_HEADER) or "{}")
        except ValueError:
            context = {}
        if not isinstance(context, dict):
            context = {}
        self._owned[call.call_id] = held
        rid = held.reservation_id
        answered_once: list[bool] = []

        def ringing(dial: Dial) -> None:
            self._step(lambda: self.router.ringing(rid))
            try:
                ring_timeout = self.router.queue(held.queue).ring_timeout_seconds
            except RouterError:
                ring_timeout = 15.0
            asyncio.get_running_loop().call_later(ring_timeout, self._ring_out, call, dial,
                                                  answered_once)
            self.events.publish(AgentOffered(call.call_id, held.agent, held.queue,
                                             str(context.get("caller") or call.caller),
                                             {**context, "queue": held.queue, "site": held.site,
                                              "routing": self._decision(held)}))

        def answered() -> bool:
            try:
                self.router.answered(rid)
            except RouterError:
                return False  # rang out meanwhile
            answered_once.append(True)
            return True

        def failed(status: int) -> None:
            reason = FAILURE_OF_STATUS.get(status, "error")
            self._step(lambda: self.router.reservation_failed(rid, reason))

        headers = (("X-Centralita-Queue", held.queue),
                   ("X-Centralita-Caller", str(context.get("caller") or "anonymous")),
                   (SITE_HEADER, held.site))
        return self.calls.bridge_reserved(call, held.agent, extra_headers=headers,
                                          on_ringing=ringing, on_answered=answered,
                                          on_failed=failed)

    def _decision(self, held: HeldForSite) -> dict[str, Any] | None:
        """This site's router's decision that chose the agent, as a local screen-pop has it."""
        try:
            decisions = self.router.explain(held.call_id)
        except RouterError:
            return None
        return decisions[-1].to_dict() if decisions else None

    def _ring_out(self, call: SipCall, dial: Dial, answered: list[bool]) -> None:
        if answered or call.ended or dial.finished:
            return
        held = self._owned.get(call.call_id)
        self.calls.cancel_dial(dial)
        if held is not None:
            self._step(lambda: self.router.reservation_failed(held.reservation_id, "no_answer"))
        self.calls.hang_up(call, "no_answer")

    def _foreign_calls(self, live_call_ids: frozenset[str]) -> set[str]:
        return {held.call_id for call_id, held in self._owned.items() if call_id in live_call_ids}

    def _call_ended(self, event: CallEnded) -> None:
        held = self._owned.pop(event.call_id, None)
        if held is None:
            return
        try:
            if not self.router.release_for_site(held.reservation_id):
                self.router.call_ended(held.call_id)
        except RouterError:
            pass  # already let go (rang out, failed)
