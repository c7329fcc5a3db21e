"""What is kept about a call in progress until its record is written, and the live view of it.

``CallInProgress`` gathers what the telephony, IVR and router events said about one call
(times are epoch seconds); ``live_view`` says what the call is doing now, for
``/api/v1/calls/live``.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from datetime import datetime

from events import routing as router_events
from pbx.records.dispositions import Disposition
from pbx.records.times import rounded, utc
from pbx.store import QueueLogEntry


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


@dataclass
class Offer:
    """An agent reserved for the call, whose phone may be ringing."""

    agent: str
    queue: str
    offered_at: float
    ringing_at: float | None = None


@dataclass
class CallInProgress:
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
    enqueued_at: float | None = None  # when it first did: its place in line, kept across transfers
    priority: int | None = None  # in the queue
    agent: str | None = None
    agent_answered: float | None = None
    wait_seconds: float | None = None
    talk_seconds: float | None = None
    offers: dict[str, Offer] = field(default_factory=dict)
    complete: router_events.QueueCallEnded | None = None  # logged once the hang-up cause is known
    after_complete: list[QueueLogEntry] = field(default_factory=list)  # e.g. its WRAPUPEND
    linger: asyncio.TimerHandle | None = None
    origin_call_id: str | None = None  # a callback call's: the call the customer asked from
    callback_request_id: str | None = None  # a callback call's: its request


def live_view(call: CallInProgress, now: float) -> LiveCallView:
    started = call.started if call.started is not None else call.first_seen
    ringing = next((o for o in call.offers.values() if o.ringing_at is not None), None)
    offered = ringing or next(iter(call.offers.values()), None)
    agent = call.agent
    waited: float | None = None
    if call.ended is not None:
        state = LiveState.ENDING
    elif offered is not None:
        state = LiveState.AGENT_RINGING if ringing is not None else LiveState.OFFERING
        agent = offered.agent
    elif call.in_router and call.router_outcome is Disposition.ANSWERED:
        state = LiveState.TALKING
    elif call.in_router:
        state = LiveState.QUEUED
    elif call.ivr_active:
        state = LiveState.IVR
    elif call.line_answered is not None:
        state = LiveState.TALKING if call.kind == "bridge" else LiveState.ANSWERED
    else:
        state = LiveState.RINGING
    if call.agent_answered is not None:
        waited = call.wait_seconds
    elif call.queued_at is not None:
        waited = max(0.0, now - call.queued_at)
    answered = call.agent_answered if call.queue is not None else call.line_answered
    return LiveCallView(
        call_id=call.call_id, caller=call.caller, callee=call.callee, kind=call.kind,
        state=state.value, started=utc(started),
        answered=None if answered is None else utc(answered),
        queue=call.queue or call.requested_queue, agent=agent,
        waited_seconds=rounded(waited), duration_seconds=round(max(0.0, now - started), 3),
        ivr_path=tuple(call.ivr_nodes))
