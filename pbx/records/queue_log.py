"""The queue log's format: one line per queue step (Asterisk ``queue_log`` style verbs).

Each function turns an event (and what the recorder knows of the call) into the line the
queue log stores; the recorder decides when a line is written.
"""

from __future__ import annotations

import enum
from typing import Any

from events import callbacks as callback_events
from events import calls as line_events
from events import ivr as ivr_events
from events import routing as router_events
from pbx.records.call_state import Offer
from pbx.records.times import rounded, utc
from pbx.store import QueueLogEntry


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
    CALLBACK = "CALLBACK"  # a callback try's call to the customer ended (data: outcome, request)


# Who ended a call whose agent's part is complete, from the telephony end cause.
_ENDED_BY = {"caller_hangup": "caller", "callee_hangup": "agent", "transfer": "transfer"}


def entry(at: float, call_id: str, event: QueueEvent, *, queue: str | None = None,
          agent: str | None = None, data: dict[str, Any] | None = None) -> QueueLogEntry:
    return QueueLogEntry(utc(at), call_id, event.value, queue, agent, data or {})


def entered(event: router_events.CallQueued, caller: str | None) -> QueueLogEntry:
    return entry(event.at, event.call_id, QueueEvent.ENTERQUEUE, queue=event.queue,
                 data={"position": event.position, "priority": event.priority, "caller": caller})


def offered(event: router_events.AgentReserved) -> QueueLogEntry:
    return entry(event.at, event.call_id, QueueEvent.OFFER, queue=event.queue, agent=event.agent,
                 data={"reservation_id": event.reservation_id})


def ringing(event: router_events.AgentRinging, queue: str | None) -> QueueLogEntry:
    return entry(event.at, event.call_id, QueueEvent.RINGING, queue=queue, agent=event.agent,
                 data={"reservation_id": event.reservation_id,
                       "ring_timeout_seconds": rounded(event.expires_at - event.at)})


def offer_failed(at: float, call_id: str, reservation_id: str, agent: str, reason: str,
                 queue: str | None, offer: Offer | None) -> QueueLogEntry:
    """RINGNOANSWER when the agent's phone rang out, OFFERFAILED for any other failure."""
    rang = None if offer is None or offer.ringing_at is None else at - offer.ringing_at
    rang_out = reason in ("no_answer", "ring_timeout") and (offer is None or offer.ringing_at is not None)
    return entry(at, call_id, QueueEvent.RINGNOANSWER if rang_out else QueueEvent.OFFERFAILED,
                 queue=queue, agent=agent,
                 data={"reservation_id": reservation_id, "reason": reason,
                       "rang_seconds": rounded(rang),
                       "offered_seconds": None if offer is None else rounded(at - offer.offered_at)})


def connected(event: router_events.QueueCallAnswered, rang: float | None) -> QueueLogEntry:
    return entry(event.at, event.call_id, QueueEvent.CONNECT, queue=event.queue, agent=event.agent,
                 data={"waited_seconds": rounded(event.waited_seconds),
                       "within_sla": event.within_sla, "rang_seconds": rounded(rang)})


def abandoned(event: router_events.CallAbandoned, ringing_agent: str | None,
              entered_position: int | None) -> QueueLogEntry:
    return entry(event.at, event.call_id, QueueEvent.ABANDON, queue=event.queue,
                 agent=ringing_agent,
                 data={"waited_seconds": rounded(event.waited_seconds),
                       "entered_position": entered_position})


def dropped(event: router_events.CallDropped) -> QueueLogEntry:
    return entry(event.at, event.call_id, QueueEvent.DROP, queue=event.queue,
                 data={"waited_seconds": rounded(event.waited_seconds), "reason": event.reason})


def announced(at: float, event: line_events.AnnouncementPlayed) -> QueueLogEntry:
    return entry(at, event.call_id, QueueEvent.ANNOUNCE, queue=event.queue,
                 data={"kind": event.kind, "position": event.position,
                       "ewt_seconds": rounded(event.ewt_seconds),
                       "announced_minutes": event.announced_minutes})


def completed(event: router_events.QueueCallEnded, cause: str | None,
              waited: float | None) -> QueueLogEntry:
    return entry(event.at, event.call_id, QueueEvent.COMPLETE, queue=event.queue, agent=event.agent,
                 data={"talk_seconds": rounded(event.talk_seconds),
                       "waited_seconds": rounded(waited),
                       "ended_by": _ENDED_BY.get(cause or "", cause)})


def overflowed(event: router_events.CallOverflowed) -> QueueLogEntry:
    return entry(event.at, event.call_id, QueueEvent.OVERFLOW, queue=event.queue,
                 data={"target": event.target, "moved": event.moved,
                       "waited_seconds": rounded(event.waited_seconds)})


def entered_by_overflow(event: router_events.CallOverflowed, caller: str | None) -> QueueLogEntry:
    """The call filed in the overflow's target queue (the router sends no CallQueued for it)."""
    return entry(event.at, event.call_id, QueueEvent.ENTERQUEUE, queue=event.target,
                 data={"overflow_from": event.queue, "caller": caller})


def expanded(event: router_events.CallExpanded) -> QueueLogEntry:
    return entry(event.at, event.call_id, QueueEvent.EXPAND, queue=event.queue,
                 data={"rings_active": event.rings_active})


def transferred_by_agent(at: float, event: line_events.CallTransferred,
                         queue: str | None) -> QueueLogEntry:
    return entry(at, event.call_id, QueueEvent.TRANSFER, queue=queue, agent=event.agent,
                 data={"target": event.target, "by": "agent"})


def transferred_by_ivr(at: float, event: ivr_events.TransferRequested) -> QueueLogEntry:
    return entry(at, event.call_id, QueueEvent.TRANSFER,
                 data={"extension": event.extension, "by": "ivr", "flow": event.flow})


def wrap_up_ended(event: router_events.AgentStateChanged, call_id: str, queue: str,
                  since: float) -> QueueLogEntry:
    return entry(event.at, call_id, QueueEvent.WRAPUPEND, queue=queue, agent=event.agent,
                 data={"wrap_up_seconds": rounded(event.at - since),
                       "next_state": str(event.new), "reason": event.reason})


def callback_try_ended(event: callback_events.CallbackTryEnded) -> QueueLogEntry:
    return entry(event.at, event.call_id or "", QueueEvent.CALLBACK, queue=event.queue,
                 data={"request_id": event.request_id, "origin_call_id": event.origin_call_id,
                       "outcome": event.outcome, "detail": event.detail, "state": event.state,
                       "waited_seconds": rounded(event.waited_seconds)})
