"""Call-detail records and the queue log, built from the event stream and written in the background.

``CallRecorder`` subscribes to the telephony (``events.calls``), IVR (``events.ivr``) and
router (``events.routing``) events on one bus. Per live call it keeps what the CDR needs;
every queue step (entered, offered, ringing, ring-no-answer, connected, abandoned,
overflowed, transferred, completed, wrap-up ended) becomes a queue-log line at once.

A call's three event families arrive in no fixed order (the IVR task may finish after
the SIP BYE, the router hears of a hang-up after the PBX), so the CDR is written when
the line has ended *and* the IVR and the router have let go of the call, or
``linger_seconds`` after the line ended, whichever comes first.

Crash trace: a call is noted in the store (``live_calls``) when it starts, again when it
enters a queue and when an agent answers, and the note goes with its CDR, in the same
transaction; notes a crash left behind become ``interrupted`` CDRs at the next start
(``Store.close_interrupted_calls``). With the CDR go the call's routing decisions, IVR path
and screen-pop context (``details``), which the API serves for finished calls. The live
view of each call in progress (``live_call``, ``live_call_views``) is what
``/api/v1/calls/live`` shows. Each call's start and end are logged at INFO.

Writes never block call logic: handlers put records on an ``asyncio.Queue`` that one
background task drains in batches. A database outage is logged and retried with
backoff; while it lasts the queue is bounded and the oldest writes are dropped (and
counted) rather than memory growing without limit.

Times (epoch seconds): router events are placed by their ``at``, the router's wall clock,
which must be ``clock`` too (the server builds ``Router(time.monotonic, wall_clock=time.time)``). Telephony and IVR
events are placed by ``clock`` when they arrive: they are published synchronously, so that
is their ``at``, and a test's clock stays in charge of every time in the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import sqlalchemy.exc as sa_exc
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge as PromGauge

from events import EventBus
from events import calls as line_events
from events import ivr as ivr_events
from events import routing as router_events
from events.recent_calls import RecentCalls
from ivr.call_log import IvrCallLog
from pbx.store import (
    CallDetails,
    CallRecord,
    ConstraintViolation,
    LiveCallRecord,
    QueueLogEntry,
    Store,
)
from router import AgentState

log = logging.getLogger("pbx.records")

Clock = Callable[[], float]
# IVR node types that only speak to the caller or look things up (a greeting, opening hours):
# leaving during them is not abandoning anything.
_ANNOUNCEMENT_NODES = frozenset({"play", "lookup_caller", "business_hours", "hangup"})


class Disposition(enum.StrEnum):
    """How a call ended, as the CDR says it."""

    ANSWERED = "answered"  # an agent (queued calls) or the dialled extension answered
    ABANDONED = "abandoned"  # the caller hung up first: in the IVR, in line or while it rang
    DROPPED = "dropped"  # the server ended it while it waited (media timeout, dialog gone, shutdown)
    DEFLECTED = "deflected"  # ended after a self-service answer, never reaching a queue
    OVERFLOWED = "overflowed"  # taken out of the router at max wait (to an extension, voicemail)
    TRANSFERRED = "transferred"  # the IVR or an agent sent it on, and no agent answered after
    COMPLETED = "completed"  # the IVR flow or application ended it (closed hours, goodbye)
    REJECTED = "rejected"  # the callee refused (busy, decline)
    FAILED = "failed"  # unreachable, error, no ACK, the queue never took it
    INTERRUPTED = "interrupted"  # still live when the recorder closed


class LiveState(enum.StrEnum):
    """What a call in progress is doing."""

    RINGING = "ringing"  # the server has not answered yet (a direct call ringing the callee)
    IVR = "ivr"  # in the IVR: greeting, menus, self-service
    ANSWERED = "answered"  # answered by an application other than the IVR
    QUEUED = "queued"  # waiting in a queue
    OFFERING = "offering"  # an agent is being reserved, the phone does not ring yet
    AGENT_RINGING = "agent_ringing"
    TALKING = "talking"  # bridged to an agent or to the dialled account
    ENDING = "ending"  # hung up; its record is written once the IVR and router let go


@dataclass(frozen=True)
class LiveCallView:
    call_id: str
    caller: str
    callee: str
    kind: str | None
    state: str
    started: datetime
    answered: datetime | None
    queue: str | None
    agent: str | None  # the agent talking, or whose phone is ringing
    waited_seconds: float | None  # in line so far (queued calls)
    duration_seconds: float  # since the call arrived
    ivr_path: tuple[str, ...]


class QueueEvent(enum.StrEnum):
    """The ``event`` column of the queue log (Asterisk ``queue_log`` style verbs)."""

    ENTERQUEUE = "ENTERQUEUE"
    OFFER = "OFFER"
    RINGING = "RINGING"
    RINGNOANSWER = "RINGNOANSWER"  # the agent's phone rang out (or was not answered)
    OFFERFAILED = "OFFERFAILED"  # busy, declined, error, or the reservation was never confirmed
    CONNECT = "CONNECT"
    ABANDON = "ABANDON"
    DROP = "DROP"  # the server ended the call while it waited (data: reason)
    ANNOUNCE = "ANNOUNCE"  # position / estimated wait played to the caller
    OVERFLOW = "OVERFLOW"
    EXPAND = "EXPAND"
    TRANSFER = "TRANSFER"
    COMPLETE = "COMPLETE"
    WRAPUPEND = "WRAPUPEND"


# Telephony end causes (pbx.calls.manager) that mean the caller gave up.
_CALLER_CAUSES = frozenset({"caller_hangup", "cancelled"})
_ENDED_BY = {"caller_hangup": "caller", "callee_hangup": "agent", "transfer": "transfer"}

# Errors that will not go away by retrying: the write is dropped (and counted), not retried.
_PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    ConstraintViolation,
    sa_exc.IntegrityError,
    sa_exc.DataError,
    ValueError,
    TypeError,
)

_Write = CallRecord | QueueLogEntry | LiveCallRecord | CallDetails

# What the API shows of a finished call beside its record (routing, IVR, context),
# gathered by the server when the record is written; None when there is nothing.
DetailsSource = Callable[[str, datetime], CallDetails | None]


_WRITE_KINDS: dict[type, str] = {CallRecord: "call_record", QueueLogEntry: "queue_log",
                                  LiveCallRecord: "live_call", CallDetails: "call_details"}


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


@dataclass
class _Offer:
    agent: str
    queue: str
    offered_at: float
    ringing_at: float | None = None


@dataclass
class _LiveCall:
    call_id: str
    first_seen: float
    caller: str = ""
    callee: str = ""
    kind: str | None = None
    started: float | None = None  # CallStarted
    line_answered: float | None = None  # pbx CallAnswered (IVR or callee picked up)
    ended: float | None = None  # pbx CallEnded
    cause: str | None = None
    line_duration: float | None = None
    ivr_seen: bool = False
    ivr_active: bool = False
    ivr_outcome: str | None = None
    ivr_nodes: list[str] = field(default_factory=list)
    asked_caller: bool = False  # the IVR went past announcements: asked for input or queued
    deflected: bool = False
    transferred_to: str | None = None
    requested_queue: str | None = None
    queue: str | None = None  # where it is (or was last) waiting
    entered_position: int | None = None
    in_router: bool = False
    router_outcome: Disposition | None = None
    queued_at: float | None = None  # when it (last) entered a queue
    agent: str | None = None
    agent_answered: float | None = None
    wait_seconds: float | None = None
    talk_seconds: float | None = None
    offers: dict[str, _Offer] = field(default_factory=dict)
    complete: router_events.QueueCallEnded | None = None  # logged once the hang-up cause is known
    after_complete: list[QueueLogEntry] = field(default_factory=list)  # e.g. its WRAPUPEND
    linger: asyncio.TimerHandle | None = None


class CallRecorder:
    """Writes one CDR per call and the queue log from the bus; see the module docstring.

    ``start()`` inside the running loop starts the writer; ``await flush()`` waits until
    everything recorded so far is stored; ``await close()`` writes every live call (those
    still in progress as ``interrupted``), drains the queue and stops the writer.
    """

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        ivr_calls: IvrCallLog | None = None,
        site: str | None = None,
        clock: Clock = time.time,
        *,
        registry: CollectorRegistry | None = None,
        details: DetailsSource | None = None,
        max_pending: int = 10_000,
        batch_size: int = 200,
        linger_seconds: float = 5.0,
        max_live_calls: int = 10_000,
        finished_ids_kept: int = 10_000,
        finished_ids_max_age_seconds: float = 300.0,
        retry_initial_seconds: float = 0.5,
        retry_max_seconds: float = 30.0,
    ) -> None:
        if max_pending < 1 or batch_size < 1 or max_live_calls < 1:
            raise ValueError("max_pending, batch_size and max_live_calls must be at least 1")
        self._store = store
        self._ivr_calls = ivr_calls
        self._details = details
        self._site = site
        self._clock = clock
        self._batch_size = batch_size
        self._linger = linger_seconds
        self._max_live = max_live_calls
        self._retry_initial = retry_initial_seconds
        self._retry_max = retry_max_seconds
        self._queue: asyncio.Queue[_Write] = asyncio.Queue(max_pending)
        self._live: dict[str, _LiveCall] = {}
        # Recently written calls: late events for them must not open a second CDR.
        self._finished: RecentCalls[None] = RecentCalls(finished_ids_kept, finished_ids_max_age_seconds)
        self._wrapping: dict[str, tuple[str, str, float]] = {}  # agent -> call, queue, since
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.dropped: Counter[str] = Counter()  # "overflow" / "rejected" -> writes lost
        self.write_failures = 0
        self._dropped_metric: PromCounter | None = None
        self._failures_metric: PromCounter | None = None
        if registry is not None:
            self._dropped_metric = PromCounter(
                "centralita_call_records_dropped",
                "CDR and queue-log writes lost: the write queue overflowed or the database refused them",
                ["kind", "reason"], registry=registry)
            self._failures_metric = PromCounter(
                "centralita_call_records_write_failures",
                "Failed CDR/queue-log write attempts (retried with backoff)", registry=registry)
            pending = PromGauge("centralita_call_records_pending",
                                "CDR and queue-log writes waiting for the database", registry=registry)
            pending.set_function(lambda: self._queue.qsize())
        self._subscribe(bus)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the background writer; call from inside the running event loop."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._drain(), name="call-recorder")

    async def flush(self) -> None:
        """Wait until every record queued so far is stored (or dropped)."""
        if self._task is None:
            raise RuntimeError("CallRecorder.start() was not called")
        await self._queue.join()

    async def close(self, timeout: float = 10.0) -> None:
        """Write every live call, then give the writer ``timeout`` seconds to store the rest."""
        self._closed = True
        for live in list(self._live.values()):
            self._finalize(live)
        if self._task is None:
            if not self._queue.empty():
                log.error("call recorder closed unstarted: %d writes not stored", self._queue.qsize())
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            log.error("call recorder closed with %d writes not stored", self._queue.qsize())
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    @property
    def live_calls(self) -> int:
        return len(self._live)

    def live_call(self, call_id: str) -> LiveCallView | None:
        """What a call in progress is doing now; None once its record is written."""
        live = self._live.get(call_id)
        return None if live is None else self._view_of(live, self._clock())

    def live_call_views(self) -> list[LiveCallView]:
        """Every call in progress (not those ended and waiting to be written), oldest first."""
        now = self._clock()
        return [self._view_of(live, now) for live in list(self._live.values()) if live.ended is None]

    def _view_of(self, live: _LiveCall, now: float) -> LiveCallView:
        started = live.started if live.started is not None else live.first_seen
        ringing = next((o for o in live.offers.values() if o.ringing_at is not None), None)
        offered = ringing or next(iter(live.offers.values()), None)
        agent = live.agent
        waited: float | None = None
        if live.ended is not None:
            state = LiveState.ENDING
        elif offered is not None:
            state = LiveState.AGENT_RINGING if ringing is not None else LiveState.OFFERING
            agent = offered.agent
        elif live.in_router and live.router_outcome is Disposition.ANSWERED:
            state = LiveState.TALKING
        elif live.in_router:
            state = LiveState.QUEUED
        elif live.ivr_active:
            state = LiveState.IVR
        elif live.line_answered is not None:
            state = LiveState.TALKING if live.kind == "bridge" else LiveState.ANSWERED
        else:
            state = LiveState.RINGING
        if live.agent_answered is not None:
            waited = live.wait_seconds
        elif live.queued_at is not None:
            waited = max(0.0, now - live.queued_at)
        answered = live.agent_answered if live.queue is not None else live.line_answered
        return LiveCallView(
            call_id=live.call_id, caller=live.caller, callee=live.callee, kind=live.kind,
            state=state.value, started=_utc(started),
            answered=None if answered is None else _utc(answered),
            queue=live.queue or live.requested_queue, agent=agent,
            waited_seconds=_rounded(waited), duration_seconds=round(max(0.0, now - started), 3),
            ivr_path=tuple(live.ivr_nodes))

    @property
    def finished_ids(self) -> int:
        """How many written calls are remembered to ignore their late events."""
        return len(self._finished)

    def forget_old_finished(self) -> int:
        """Forget written calls past the age limit; returns how many went."""
        return self._finished.prune()

    @property
    def pending_writes(self) -> int:
        return self._queue.qsize()

    # ------------------------------------------------------------------ subscriptions

    def _subscribe(self, bus: EventBus) -> None:
        handlers: list[tuple[Callable[[Any], None], type]] = [
            (self._on_line_started, line_events.CallStarted),
            (self._on_line_answered, line_events.CallAnswered),
            (self._on_line_ended, line_events.CallEnded),
            (self._on_agent_transfer, line_events.CallTransferred),
            (self._on_ivr_started, ivr_events.IvrStarted),
            (self._on_ivr_node, ivr_events.IvrNodeEntered),
            (self._on_deflected, ivr_events.CallDeflected),
            (self._on_enqueue_requested, ivr_events.EnqueueRequested),
            (self._on_transfer_requested, ivr_events.TransferRequested),
            (self._on_ivr_finished, ivr_events.IvrFinished),
            (self._on_queued, router_events.CallQueued),
            (self._on_reserved, router_events.AgentReserved),
            (self._on_ringing, router_events.AgentRinging),
            (self._on_reservation_expired, router_events.ReservationExpired),
            (self._on_reservation_failed, router_events.ReservationFailed),
            (self._on_answered, router_events.QueueCallAnswered),
            (self._on_abandoned, router_events.CallAbandoned),
            (self._on_dropped, router_events.CallDropped),
            (self._on_announced, line_events.AnnouncementPlayed),
            (self._on_ended, router_events.QueueCallEnded),
            (self._on_overflowed, router_events.CallOverflowed),
            (self._on_expanded, router_events.CallExpanded),
            (self._on_agent_state, router_events.AgentStateChanged),
        ]
        for handler, event_type in handlers:
            bus.subscribe(handler, event_type)

    # ------------------------------------------------------------------ telephony

    def _on_line_started(self, event: line_events.CallStarted) -> None:
        now = self._clock()
        live = self._call(event.call_id, now)
        if live is None:
            return
        live.caller, live.callee, live.kind = event.caller, event.callee, event.kind
        live.started = now
        log.info("call %s started: %s -> %s (%s)", event.call_id, event.caller, event.callee,
                 event.kind)
        self._note_in_progress(live)

    def _on_line_answered(self, event: line_events.CallAnswered) -> None:
        live = self._call(event.call_id, self._clock())
        if live is not None and live.line_answered is None:
            live.line_answered = self._clock()

    def _on_line_ended(self, event: line_events.CallEnded) -> None:
        live = self._call(event.call_id, self._clock())
        if live is None:
            return
        live.ended = self._clock()
        live.cause = event.cause
        live.line_duration = event.duration
        live.kind = live.kind or event.kind
        self._settle(live)

    def _on_agent_transfer(self, event: line_events.CallTransferred) -> None:
        # The server ends the agent's part in the router first, then re-queues or dials.
        live = self._call(event.call_id, self._clock())
        queue = None
        if live is not None:
            queue = live.queue
            self._flush_complete(live, "transfer")
            live.transferred_to = event.target
            live.router_outcome = Disposition.TRANSFERRED
        self._log(self._clock(), event.call_id, QueueEvent.TRANSFER, queue=queue, agent=event.agent,
                  data={"target": event.target, "by": "agent"})

    # ------------------------------------------------------------------ IVR

    def _on_ivr_started(self, event: ivr_events.IvrStarted) -> None:
        live = self._call(event.call_id, self._clock())
        if live is not None:
            live.ivr_seen = live.ivr_active = True
            live.caller = live.caller or event.caller

    def _on_ivr_node(self, event: ivr_events.IvrNodeEntered) -> None:
        live = self._call(event.call_id, self._clock())
        if live is not None:
            live.ivr_nodes.append(event.node)
            if event.node_type not in _ANNOUNCEMENT_NODES:
                live.asked_caller = True

    def _on_deflected(self, event: ivr_events.CallDeflected) -> None:
        live = self._call(event.call_id, self._clock())
        if live is not None:
            live.deflected = True

    def _on_enqueue_requested(self, event: ivr_events.EnqueueRequested) -> None:
        live = self._call(event.call_id, self._clock())
        if live is not None:
            live.requested_queue = event.queue

    def _on_transfer_requested(self, event: ivr_events.TransferRequested) -> None:
        live = self._call(event.call_id, self._clock())
        if live is not None:
            live.transferred_to = event.extension
        self._log(self._clock(), event.call_id, QueueEvent.TRANSFER,
                  data={"extension": event.extension, "by": "ivr", "flow": event.flow})

    def _on_ivr_finished(self, event: ivr_events.IvrFinished) -> None:
        live = self._call(event.call_id, self._clock())
        if live is None:
            return
        live.ivr_seen = True
        live.ivr_active = False
        live.ivr_outcome = event.outcome
        self._settle(live)

    # ------------------------------------------------------------------ router

    def _on_queued(self, event: router_events.CallQueued) -> None:
        live = self._call(event.call_id, event.at)
        if live is not None:
            self._flush_complete(live, None)  # queued again after an agent's part ended
            live.queue = event.queue
            live.in_router = True
            live.entered_position = event.position
            live.queued_at = event.at
            self._note_in_progress(live)
        self._log(event.at, event.call_id, QueueEvent.ENTERQUEUE, queue=event.queue,
                  data={"position": event.position, "priority": event.priority,
                        "caller": live.caller if live else None})

    def _on_reserved(self, event: router_events.AgentReserved) -> None:
        live = self._call(event.call_id, event.at)
        if live is not None:
            live.offers[event.reservation_id] = _Offer(event.agent, event.queue, event.at)
        self._log(event.at, event.call_id, QueueEvent.OFFER, queue=event.queue, agent=event.agent,
                  data={"reservation_id": event.reservation_id})

    def _on_ringing(self, event: router_events.AgentRinging) -> None:
        live = self._call(event.call_id, event.at)
        offer = live.offers.get(event.reservation_id) if live is not None else None
        if offer is not None:
            offer.ringing_at = event.at
        self._log(event.at, event.call_id, QueueEvent.RINGING, queue=self._queue_of(live, offer),
                  agent=event.agent,
                  data={"reservation_id": event.reservation_id,
                        "ring_timeout_seconds": _rounded(event.expires_at - event.at)})

    def _on_reservation_expired(self, event: router_events.ReservationExpired) -> None:
        reason = "ring_timeout" if event.was_ringing else "reservation_timeout"
        self._offer_failed(event.at, event.call_id, event.reservation_id, event.agent, reason)

    def _on_reservation_failed(self, event: router_events.ReservationFailed) -> None:
        self._offer_failed(event.at, event.call_id, event.reservation_id, event.agent, event.reason)

    def _offer_failed(self, at: float, call_id: str, reservation_id: str, agent: str,
                      reason: str) -> None:
        live = self._call(call_id, at)
        offer = live.offers.pop(reservation_id, None) if live is not None else None
        rang = None if offer is None or offer.ringing_at is None else at - offer.ringing_at
        rang_out = reason in ("no_answer", "ring_timeout") and (offer is None or offer.ringing_at is not None)
        self._log(at, call_id, QueueEvent.RINGNOANSWER if rang_out else QueueEvent.OFFERFAILED,
                  queue=self._queue_of(live, offer), agent=agent,
                  data={"reservation_id": reservation_id, "reason": reason,
                        "rang_seconds": _rounded(rang),
                        "offered_seconds": None if offer is None else _rounded(at - offer.offered_at)})

    def _on_answered(self, event: router_events.QueueCallAnswered) -> None:
        live = self._call(event.call_id, event.at)
        rang = None
        if live is not None:
            offer = next((o for o in live.offers.values() if o.agent == event.agent), None)
            if offer is not None and offer.ringing_at is not None:
                rang = event.at - offer.ringing_at
            live.offers.clear()
            live.queue = event.queue
            live.agent = event.agent  # the last agent to answer (after a transfer, the second)
            if live.agent_answered is None:
                # The CDR's wait is the time to the first answer; after a transfer the router
                # counts from the original enqueue time again, talk included.
                live.agent_answered = event.at
                live.wait_seconds = event.waited_seconds
            live.router_outcome = Disposition.ANSWERED
            self._note_in_progress(live)
        self._log(event.at, event.call_id, QueueEvent.CONNECT, queue=event.queue, agent=event.agent,
                  data={"waited_seconds": _rounded(event.waited_seconds),
                        "within_sla": event.within_sla, "rang_seconds": _rounded(rang)})

    def _on_abandoned(self, event: router_events.CallAbandoned) -> None:
        live = self._call(event.call_id, event.at)
        ringing_agent = None
        if live is not None:
            # An abandon during an offer: the agent whose phone was ringing, for the log.
            ringing_agent = next((o.agent for o in live.offers.values()), None)
            live.offers.clear()
            live.queue = event.queue
            if live.agent_answered is None:
                live.wait_seconds = event.waited_seconds
            live.router_outcome = Disposition.ABANDONED
            live.in_router = False
        self._log(event.at, event.call_id, QueueEvent.ABANDON, queue=event.queue,
                  agent=ringing_agent,
                  data={"waited_seconds": _rounded(event.waited_seconds),
                        "entered_position": live.entered_position if live else None})
        if live is not None:
            self._settle(live)

    def _on_dropped(self, event: router_events.CallDropped) -> None:
        live = self._call(event.call_id, event.at)
        if live is not None:
            live.offers.clear()
            live.queue = event.queue
            live.wait_seconds = event.waited_seconds
            live.router_outcome = Disposition.DROPPED
            live.in_router = False
        self._log(event.at, event.call_id, QueueEvent.DROP, queue=event.queue,
                  data={"waited_seconds": _rounded(event.waited_seconds), "reason": event.reason})
        if live is not None:
            self._settle(live)

    def _on_announced(self, event: line_events.AnnouncementPlayed) -> None:
        self._log(self._clock(), event.call_id, QueueEvent.ANNOUNCE, queue=event.queue,
                  data={"kind": event.kind, "position": event.position,
                        "ewt_seconds": _rounded(event.ewt_seconds),
                        "announced_minutes": event.announced_minutes})

    def _on_ended(self, event: router_events.QueueCallEnded) -> None:
        self._wrapping[event.agent] = (event.call_id, event.queue, event.at)
        live = self._call(event.call_id, event.at)
        if live is None:
            self._log_complete(event, None, None)
            return
        self._flush_complete(live, None)
        # Talk time adds up over every agent who had the caller (transfers).
        live.talk_seconds = (live.talk_seconds or 0.0) + event.talk_seconds
        live.in_router = False
        live.complete = event
        if live.ended is not None:  # the usual order: who hung up is known already
            self._flush_complete(live, live.cause)
        self._settle(live)

    def _on_overflowed(self, event: router_events.CallOverflowed) -> None:
        live = self._call(event.call_id, event.at)
        self._log(event.at, event.call_id, QueueEvent.OVERFLOW, queue=event.queue,
                  data={"target": event.target, "moved": event.moved,
                        "waited_seconds": _rounded(event.waited_seconds)})
        if event.moved and event.target is not None:
            # The router files the call in the target queue without a CallQueued of its own.
            if live is not None:
                live.queue = event.target
            self._log(event.at, event.call_id, QueueEvent.ENTERQUEUE, queue=event.target,
                      data={"overflow_from": event.queue,
                            "caller": live.caller if live else None})
            return
        if live is not None:
            if live.agent_answered is None:
                live.wait_seconds = event.waited_seconds
            live.router_outcome = Disposition.OVERFLOWED
            live.in_router = False
            self._settle(live)

    def _on_expanded(self, event: router_events.CallExpanded) -> None:
        self._log(event.at, event.call_id, QueueEvent.EXPAND, queue=event.queue,
                  data={"rings_active": event.rings_active})

    def _on_agent_state(self, event: router_events.AgentStateChanged) -> None:
        if event.old != AgentState.WRAP_UP:
            return
        wrapping = self._wrapping.pop(event.agent, None)
        if wrapping is None:
            return
        call_id, queue, since = wrapping
        entry = self._entry(event.at, call_id, QueueEvent.WRAPUPEND, queue=queue, agent=event.agent,
                            data={"wrap_up_seconds": _rounded(event.at - since),
                                  "next_state": str(event.new), "reason": event.reason})
        live = self._live.get(call_id)
        if live is not None and live.complete is not None:
            live.after_complete.append(entry)  # keep the log in order: COMPLETE comes first
        else:
            self._put(entry)

    # ------------------------------------------------------------------ per-call state

    def _call(self, call_id: str, now: float) -> _LiveCall | None:
        """The live record of ``call_id``, opened on its first event; None once written."""
        live = self._live.get(call_id)
        if live is not None:
            return live
        if call_id in self._finished or self._closed:
            return None
        if len(self._live) >= self._max_live:
            # Lost hang-ups must not grow memory forever: write the oldest call as it stands.
            oldest = next(iter(self._live.values()))
            log.warning("call recorder: %d live calls, writing the oldest (%s) early",
                        len(self._live), oldest.call_id)
            self._finalize(oldest)
        live = _LiveCall(call_id, now)
        self._live[call_id] = live
        return live

    @staticmethod
    def _queue_of(live: _LiveCall | None, offer: _Offer | None) -> str | None:
        if offer is not None:
            return offer.queue
        return live.queue if live is not None else None

    def _note_in_progress(self, live: _LiveCall) -> None:
        """Write where the call stands, so a crash leaves it recorded as interrupted."""
        if live.started is None:
            return  # not a call of this server's line (events of an unknown call)
        self._put(LiveCallRecord(
            live.call_id, live.caller, live.callee, _utc(live.started), live.kind, self._site,
            live.queue, live.agent,
            None if live.agent_answered is None else _utc(live.agent_answered)))

    def _settle(self, live: _LiveCall) -> None:
        """Write the CDR when nothing more is expected; else wait a while after the hang-up."""
        line_over = live.ended is not None or (live.started is None and not live.ivr_seen)
        if line_over and not live.ivr_active and not live.in_router:
            self._finalize(live)
            return
        if live.ended is None or live.linger is not None:
            return
        loop = self._loop
        if loop is None:
            self._finalize(live)  # no writer loop to wait on: write what we know
            return
        live.linger = loop.call_later(self._linger, self._linger_over, live.call_id)

    def _linger_over(self, call_id: str) -> None:
        live = self._live.get(call_id)
        if live is not None:
            log.info("call %s: writing its CDR without %s", call_id,
                     "the IVR's end" if live.ivr_active else "the router's end")
            live.linger = None
            self._finalize(live)

    def _finalize(self, live: _LiveCall) -> None:
        if live.linger is not None:
            live.linger.cancel()
            live.linger = None
        self._live.pop(live.call_id, None)
        self._finished.put(live.call_id, None, finished=True)
        self._flush_complete(live, live.cause)
        record = self._record_of(live)
        if log.isEnabledFor(logging.INFO):
            duration = live.line_duration
            log.info("call %s ended: %s -> %s %s%s%s%s", live.call_id, record.caller or "?",
                     record.callee or "?", record.disposition,
                     "" if live.cause is None else f" ({live.cause})",
                     "" if duration is None else f" after {duration:.1f} s",
                     "" if record.agent is None else f", agent {record.agent}")
        self._put(record)
        if self._details is not None:
            try:
                details = self._details(live.call_id, record.ended or _utc(self._clock()))
            except Exception:
                log.exception("call %s: gathering its routing/IVR/context failed", live.call_id)
                details = None
            if details is not None:
                self._put(details)

    def _flush_complete(self, live: _LiveCall, cause: str | None) -> None:
        if live.complete is not None:
            self._log_complete(live.complete, cause, live.wait_seconds)
            live.complete = None
            for entry in live.after_complete:
                self._put(entry)
            live.after_complete.clear()

    def _log_complete(self, event: router_events.QueueCallEnded, cause: str | None,
                      waited: float | None) -> None:
        self._log(event.at, event.call_id, QueueEvent.COMPLETE, queue=event.queue, agent=event.agent,
                  data={"talk_seconds": _rounded(event.talk_seconds),
                        "waited_seconds": _rounded(waited),
                        "ended_by": _ENDED_BY.get(cause or "", cause)})

    def _record_of(self, live: _LiveCall) -> CallRecord:
        disposition = self._disposition(live)
        # For a call that went to a queue "answered" means an agent answered, not the IVR.
        if live.queue is not None or live.requested_queue is not None:
            answered = live.agent_answered
            talk = live.talk_seconds
        else:
            answered = live.line_answered
            talk = live.line_duration if live.kind == "bridge" and answered is not None else None
        nodes = tuple(live.ivr_nodes)
        caller = live.caller
        if self._ivr_calls is not None and live.call_id in self._ivr_calls and (not nodes or not caller):
            ivr = self._ivr_calls.record(live.call_id)
            nodes = nodes or tuple(ivr.nodes)
            caller = caller or ivr.caller
        started = live.started if live.started is not None else live.first_seen
        return CallRecord(
            call_id=live.call_id,
            caller=caller,
            callee=live.callee,
            started=_utc(started),
            answered=None if answered is None else _utc(answered),
            ended=None if live.ended is None else _utc(live.ended),
            queue=live.queue or live.requested_queue,
            agent=live.agent,
            disposition=disposition.value,
            ivr_path=nodes,
            wait_seconds=_rounded(live.wait_seconds),
            talk_seconds=_rounded(talk),
            site=self._site,
        )

    @staticmethod
    def _disposition(live: _LiveCall) -> Disposition:
        if live.router_outcome is not None:
            return live.router_outcome
        caller_gave_up = live.cause in _CALLER_CAUSES
        if live.in_router:  # the router never said how it ended
            if live.ended is None:
                return Disposition.INTERRUPTED
            return Disposition.ABANDONED if caller_gave_up else Disposition.FAILED
        if live.deflected:
            return Disposition.DEFLECTED
        if live.transferred_to is not None:
            return Disposition.TRANSFERRED
        outcome = live.ivr_outcome
        if outcome == "abandoned":
            # Hanging up during the greeting, before being asked anything, is not giving up
            # on service: the caller heard what the extension had to say.
            return Disposition.ABANDONED if live.asked_caller else Disposition.COMPLETED
        if outcome == "hung_up":
            return Disposition.COMPLETED
        if outcome == "error":
            return Disposition.FAILED
        if outcome == "enqueued" or live.requested_queue is not None:
            # The IVR handed the call over but the router never took it.
            return Disposition.ABANDONED if caller_gave_up else Disposition.FAILED
        if live.ended is None:
            return Disposition.INTERRUPTED
        if live.line_answered is not None:
            return Disposition.ANSWERED if live.kind == "bridge" else Disposition.COMPLETED
        if live.cause == "rejected":
            return Disposition.REJECTED
        if caller_gave_up:
            return Disposition.ABANDONED
        return Disposition.FAILED

    # ------------------------------------------------------------------ writing

    def _log(self, at: float, call_id: str, event: QueueEvent, *, queue: str | None = None,
             agent: str | None = None, data: dict[str, Any] | None = None) -> None:
        self._put(self._entry(at, call_id, event, queue=queue, agent=agent, data=data))

    @staticmethod
    def _entry(at: float, call_id: str, event: QueueEvent, *, queue: str | None = None,
               agent: str | None = None, data: dict[str, Any] | None = None) -> QueueLogEntry:
        return QueueLogEntry(_utc(at), call_id, event.value, queue, agent, data or {})

    def _put(self, item: _Write) -> None:
        if self._queue.full():
            lost = self._queue.get_nowait()
            self._queue.task_done()
            self._count_drop(lost, "overflow")
        self._queue.put_nowait(item)

    def _count_drop(self, item: _Write, reason: str, count: int = 1) -> None:
        self.dropped[reason] += count
        if self._dropped_metric is not None:
            kind = _WRITE_KINDS[type(item)]
            self._dropped_metric.labels(kind, reason).inc(count)
        if reason == "overflow" and self.dropped[reason] & (self.dropped[reason] - 1) == 0:
            # Logged at 1, 2, 4, 8, ... drops so an outage does not flood the log.
            log.error("call recorder: write queue full, %d writes dropped so far",
                      self.dropped[reason])

    async def _drain(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[_Write]) -> None:
        entries = [item for item in batch if isinstance(item, QueueLogEntry)]
        records = [item for item in batch if isinstance(item, CallRecord)]
        started = [item for item in batch if isinstance(item, LiveCallRecord)]
        details = [item for item in batch if isinstance(item, CallDetails)]
        if await self._persist(partial(self._store.append_history, records, entries,
                                       started=started, details=details)):
            return
        # The batch was refused: write item by item, so one bad line loses only itself.
        for call in started:
            if not await self._persist(partial(self._store.append_history, (), (), started=[call])):
                self._count_drop(call, "rejected")
        for entry in entries:
            if not await self._persist(partial(self._store.append_history, (), [entry])):
                self._count_drop(entry, "rejected")
        for record in records:
            if not await self._persist(partial(self._store.append_history, [record], ())):
                self._count_drop(record, "rejected")
        for detail in details:
            if not await self._persist(partial(self._store.append_history, (), (), details=[detail])):
                self._count_drop(detail, "rejected")

    async def _persist(self, write: Callable[[], Awaitable[object]]) -> bool:
        """Run ``write`` until it succeeds (True) or is refused for good (False)."""
        delay = self._retry_initial
        while True:
            try:
                await write()
                return True
            except _PERMANENT_ERRORS:
                log.exception("call recorder: the database refused a write; dropping it")
                return False
            except Exception as error:
                self.write_failures += 1
                if self._failures_metric is not None:
                    self._failures_metric.inc()
                log.warning("call recorder: write failed (%s), retrying in %.1f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
