"""The call recorder: joins each call's telephony, IVR and router events into its record.

``CallRecorder`` subscribes to the telephony (``events.calls``), IVR (``events.ivr``) and
router (``events.routing``) events on one bus. Per live call it keeps what the CDR needs
(``call_state``); every queue step becomes a queue-log line at once (``queue_log``).

A call's three event families arrive in no fixed order (the IVR task may finish after
the SIP BYE, the router hears of a hang-up after the PBX), so the CDR is written when
the line has ended *and* the IVR and the router have let go of the call, or
``linger_seconds`` after the line ended, whichever comes first.

Crash trace: a call is noted in the store (``live_calls``) when it starts, again when it
enters a queue (with its priority and original enqueue time) and when an agent answers, and
the note goes with its CDR, in the same transaction; notes a crash left behind become
``interrupted`` CDRs (``interruptions``). With the CDR go the call's routing decisions, IVR path
and screen-pop context (``details``), which the API serves for finished calls. The live
view of each call in progress (``live_call``, ``live_call_views``) is what
``/api/v1/calls/live`` shows. Each call's start and end are logged at INFO.

Writes never block call logic: they go to the background writer (``writer``), which
gathers them for ``write_gather_seconds`` (0.2 s) into one transaction, so a crash loses
at most that much of the trace more than the database itself would.

Times (epoch seconds): router events are placed by their ``at``, the router's wall clock,
which must be ``clock`` too (the server builds ``Router(time.monotonic, wall_clock=time.time)``). Telephony and IVR
events are placed by ``clock`` when they arrive: they are published synchronously, so that
is their ``at``, and a test's clock stays in charge of every time in the record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry

from events import EventBus
from events import callbacks as callback_events
from events import calls as line_events
from events import ivr as ivr_events
from events import routing as router_events
from events.recent_calls import RecentCalls
from ivr.call_log import IvrCallLog
from pbx.records import queue_log
from pbx.records.call_record import call_record_of, callback_call_record
from pbx.records.call_state import CallInProgress, LiveCallView, Offer, live_view
from pbx.records.dispositions import Disposition
from pbx.records.times import utc
from pbx.records.writer import RecordWriter, Write
from pbx.store import CallDetails, LastAgent, LiveCallRecord, Store
from router import AgentState

log = logging.getLogger("pbx.records")

Clock = Callable[[], float]
# IVR node types that only speak to the caller or look things up (a greeting, opening hours):
# leaving during them is not abandoning anything.
_ANNOUNCEMENT_NODES = frozenset({"play", "lookup_caller", "business_hours", "hangup"})

# What the API shows of a finished call beside its record (routing, IVR, context),
# gathered by the server when the record is written; None when there is nothing.
DetailsSource = Callable[[str, datetime], CallDetails | None]


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
        write_gather_seconds: float = 0.2,
        linger_seconds: float = 5.0,
        max_live_calls: int = 10_000,
        finished_ids_kept: int = 10_000,
        finished_ids_max_age_seconds: float = 300.0,
        retry_initial_seconds: float = 0.5,
        retry_max_seconds: float = 30.0,
    ) -> None:
        if max_pending < 1 or batch_size < 1 or max_live_calls < 1:
            raise ValueError("max_pending, batch_size and max_live_calls must be at least 1")
        self._ivr_calls = ivr_calls
        self._details = details
        self._site = site
        self._clock = clock
        self._linger = linger_seconds
        self._max_live = max_live_calls
        self._writer = RecordWriter(store, registry=registry, max_pending=max_pending,
                                    batch_size=batch_size, gather_seconds=write_gather_seconds,
                                    retry_initial_seconds=retry_initial_seconds,
                                    retry_max_seconds=retry_max_seconds)
        self._live: dict[str, CallInProgress] = {}
        # Recently written calls: late events for them must not open a second CDR.
        self._finished: RecentCalls[None] = RecentCalls(finished_ids_kept, finished_ids_max_age_seconds)
        self._wrapping: dict[str, tuple[str, str, float]] = {}  # agent -> call, queue, since
        self._callback_tries: dict[str, float] = {}  # request id -> when its try started
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._subscribe(bus)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the background writer; call from inside the running event loop."""
        if self._writer.started:
            return
        self._loop = asyncio.get_running_loop()
        self._writer.start()

    async def flush(self) -> None:
        """Wait until every record queued so far is stored (or dropped)."""
        if not self._writer.started:
            raise RuntimeError("CallRecorder.start() was not called")
        await self._writer.flush()

    async def close(self, timeout: float = 10.0) -> None:
        """Write every live call, then give the writer ``timeout`` seconds to store the rest."""
        self._closed = True
        for live in list(self._live.values()):
            self._finalize(live)
        await self._writer.close(timeout)

    @property
    def dropped(self) -> Counter[str]:
        """Writes lost, by reason: ``overflow`` (queue full) or ``rejected`` (by the database)."""
        return self._writer.dropped

    @property
    def write_failures(self) -> int:
        """Failed write attempts (each retried)."""
        return self._writer.write_failures

    @property
    def live_calls(self) -> int:
        return len(self._live)

    def live_call(self, call_id: str) -> LiveCallView | None:
        """What a call in progress is doing now; None once its record is written."""
        live = self._live.get(call_id)
        return None if live is None else live_view(live, self._clock())

    def live_call_views(self) -> list[LiveCallView]:
        """Every call in progress (not those ended and waiting to be written), oldest first."""
        now = self._clock()
        return [live_view(live, now) for live in list(self._live.values()) if live.ended is None]

    @property
    def finished_ids(self) -> int:
        """How many written calls are remembered to ignore their late events."""
        return len(self._finished)

    def forget_old_finished(self) -> int:
        """Forget written calls past the age limit; returns how many went."""
        return self._finished.prune()

    @property
    def pending_writes(self) -> int:
        return self._writer.pending

    def note_last_agent(self, number: str, agent: str) -> None:
        """Store ``agent`` as who last served ``number`` (if a customer), with the next batch."""
        self._put(LastAgent(number, agent))

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
            (self._on_callback_try_started, callback_events.CallbackTryStarted),
            (self._on_callback_try_ended, callback_events.CallbackTryEnded),
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
        self._put(queue_log.transferred_by_agent(self._clock(), event, queue))

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
        self._put(queue_log.transferred_by_ivr(self._clock(), event))

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
            live.enqueued_at = event.enqueued_at
            live.priority = event.priority
            self._note_in_progress(live)
        self._put(queue_log.entered(event, live.caller if live else None))

    def _on_reserved(self, event: router_events.AgentReserved) -> None:
        live = self._call(event.call_id, event.at)
        if live is not None:
            live.offers[event.reservation_id] = Offer(event.agent, event.queue, event.at)
        self._put(queue_log.offered(event))

    def _on_ringing(self, event: router_events.AgentRinging) -> None:
        live = self._call(event.call_id, event.at)
        offer = live.offers.get(event.reservation_id) if live is not None else None
        if offer is not None:
            offer.ringing_at = event.at
        self._put(queue_log.ringing(event, self._queue_of(live, offer)))

    def _on_reservation_expired(self, event: router_events.ReservationExpired) -> None:
        reason = "ring_timeout" if event.was_ringing else "reservation_timeout"
        self._offer_failed(event.at, event.call_id, event.reservation_id, event.agent, reason)

    def _on_reservation_failed(self, event: router_events.ReservationFailed) -> None:
        self._offer_failed(event.at, event.call_id, event.reservation_id, event.agent, event.reason)

    def _offer_failed(self, at: float, call_id: str, reservation_id: str, agent: str,
                      reason: str) -> None:
        live = self._call(call_id, at)
        offer = live.offers.pop(reservation_id, None) if live is not None else None
        self._put(queue_log.offer_failed(at, call_id, reservation_id, agent, reason,
                                         self._queue_of(live, offer), offer))

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
        self._put(queue_log.connected(event, rang))

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
        self._put(queue_log.abandoned(event, ringing_agent, live.entered_position if live else None))
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
        self._put(queue_log.dropped(event))
        if live is not None:
            self._settle(live)

    def _on_announced(self, event: line_events.AnnouncementPlayed) -> None:
        self._put(queue_log.announced(self._clock(), event))

    def _on_ended(self, event: router_events.QueueCallEnded) -> None:
        self._wrapping[event.agent] = (event.call_id, event.queue, event.at)
        live = self._call(event.call_id, event.at)
        if live is None:
            self._put(queue_log.completed(event, None, None))
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
        self._put(queue_log.overflowed(event))
        if event.moved and event.target is not None:
            # The router files the call in the target queue without a CallQueued of its own.
            if live is not None:
                live.queue = event.target
            self._put(queue_log.entered_by_overflow(event, live.caller if live else None))
            return
        if live is not None:
            if live.agent_answered is None:
                live.wait_seconds = event.waited_seconds
            live.router_outcome = Disposition.OVERFLOWED
            live.in_router = False
            self._settle(live)

    def _on_expanded(self, event: router_events.CallExpanded) -> None:
        self._put(queue_log.expanded(event))

    def _on_agent_state(self, event: router_events.AgentStateChanged) -> None:
        if event.old != AgentState.WRAP_UP:
            return
        wrapping = self._wrapping.pop(event.agent, None)
        if wrapping is None:
            return
        call_id, queue, since = wrapping
        entry = queue_log.wrap_up_ended(event, call_id, queue, since)
        live = self._live.get(call_id)
        if live is not None and live.complete is not None:
            live.after_complete.append(entry)  # keep the log in order: COMPLETE comes first
        else:
            self._put(entry)

    # ------------------------------------------------------------------ callbacks

    def _on_callback_try_started(self, event: callback_events.CallbackTryStarted) -> None:
        if len(self._callback_tries) >= self._max_live:  # tries called off never end
            del self._callback_tries[next(iter(self._callback_tries))]
        self._callback_tries[event.request_id] = event.at

    def _on_callback_try_ended(self, event: callback_events.CallbackTryEnded) -> None:
        """The call to the customer gets a record naming the call and the request it came from."""
        started = self._callback_tries.pop(event.request_id, event.at)
        if event.call_id is None:
            return  # no call was placed
        self._put(queue_log.callback_try_ended(event))
        live = self._live.get(event.call_id)
        if live is not None:  # the call is in progress on this server's line: its record says it
            live.origin_call_id = event.origin_call_id
            live.callback_request_id = event.request_id
            return
        if event.call_id in self._finished or self._closed:
            return
        self._finished.put(event.call_id, None, finished=True)
        record = callback_call_record(event, started, self._site)
        log.info("call %s ended: callback %s to %s %s (%s), from call %s", event.call_id,
                 event.request_id, event.number or "?", record.disposition, event.outcome,
                 event.origin_call_id or "-")
        self._put(record)

    # ------------------------------------------------------------------ per-call state

    def _call(self, call_id: str, now: float) -> CallInProgress | None:
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
        live = CallInProgress(call_id, now)
        self._live[call_id] = live
        return live

    @staticmethod
    def _queue_of(live: CallInProgress | None, offer: Offer | None) -> str | None:
        if offer is not None:
            return offer.queue
        return live.queue if live is not None else None

    def _note_in_progress(self, live: CallInProgress) -> None:
        """Write where the call stands, so a crash leaves it recorded as interrupted."""
        if live.started is None:
            return  # not a call of this server's line (events of an unknown call)
        self._put(LiveCallRecord(
            live.call_id, live.caller, live.callee, utc(live.started), live.kind, self._site,
            live.queue, live.agent,
            None if live.agent_answered is None else utc(live.agent_answered),
            live.priority, None if live.enqueued_at is None else utc(live.enqueued_at)))

    def _settle(self, live: CallInProgress) -> None:
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

    def _finalize(self, live: CallInProgress) -> None:
        if live.linger is not None:
            live.linger.cancel()
            live.linger = None
        self._live.pop(live.call_id, None)
        self._finished.put(live.call_id, None, finished=True)
        self._flush_complete(live, live.cause)
        record = call_record_of(live, self._site, self._ivr_calls)
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
                details = self._details(live.call_id, record.ended or utc(self._clock()))
            except Exception:
                log.exception("call %s: gathering its routing/IVR/context failed", live.call_id)
                details = None
            if details is not None:
                self._put(details)

    def _flush_complete(self, live: CallInProgress, cause: str | None) -> None:
        if live.complete is not None:
            self._put(queue_log.completed(live.complete, cause, live.wait_seconds))
            live.complete = None
            for entry in live.after_complete:
                self._put(entry)
            live.after_complete.clear()

    def _put(self, item: Write) -> None:
        self._writer.put(item)
