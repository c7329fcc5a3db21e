"""Calls: those in progress (from the call recorder's live view) and the history, the
call-detail records and the queue log as the call recorder stored them.

Records appear once a call has ended (see ``pbx.records``); until then ``/calls/{id}``
answers with the live view (``status: live``). Lists are in time order,
oldest first, a page at a time; ``since``/``until`` are ISO 8601 times (an offset or
``Z``; without one they are taken as UTC), ``since`` inclusive and ``until`` exclusive.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field, RootModel

from pbx.api.endpoint import STORE, Endpoint, QueryParameter, query_int
from pbx.api.errors import invalid, not_found
from pbx.records import CallRecorder, LiveCallView
from pbx.store import MAX_PAGE_SIZE, CallRecord, QueueLogEntry
from pbx.store.records import as_utc

LIVE_CALLS = web.AppKey("live_calls", CallRecorder)

LIMIT = QueryParameter("limit", "page size", 1, MAX_PAGE_SIZE, 100)
CALLS_OFFSET = QueryParameter("offset", "records to skip, in start-time order", 0, 2**31 - 1, 0)
LOG_OFFSET = QueryParameter("offset", "lines to skip, in time order", 0, 2**31 - 1, 0)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_MAX_NAME = 64
_MAX_CALL_ID = 255


class CallRecordView(BaseModel):
    id: int
    call_id: str
    caller: str
    callee: str
    started: datetime
    answered: datetime | None = Field(
        description="when an agent answered (queued calls), else when the callee or the IVR did")
    ended: datetime | None
    queue: str | None = Field(description="the last queue the call waited in, or was sent to")
    agent: str | None = Field(description="the agent who answered")
    disposition: str = Field(
        description="answered, abandoned, dropped (ended by the server while waiting), deflected, "
                    "overflowed, transferred, completed, rejected, failed or interrupted")
    ivr_path: list[str] = Field(description="IVR nodes visited, in order")
    wait_seconds: float | None = Field(description="time in line, for queued calls")
    talk_seconds: float | None
    site: str | None
    origin_call_id: str | None = Field(
        description="a callback call's: the call the customer asked to be called back from")
    callback_request_id: str | None = Field(description="a callback call's: its callback request")


class QueueLogView(BaseModel):
    id: int
    time: datetime
    call_id: str
    event: str = Field(
        description="ENTERQUEUE, OFFER, RINGING, RINGNOANSWER, OFFERFAILED, CONNECT, ABANDON, "
                    "DROP, ANNOUNCE, OVERFLOW, EXPAND, TRANSFER, COMPLETE, WRAPUPEND or CALLBACK")
    queue: str | None
    agent: str | None
    data: dict[str, Any]


class CallHistoryView(CallRecordView):
    queue_log: list[QueueLogView] = Field(description="the call's queue-log lines, in time order")


class LiveCallModel(BaseModel):
    status: str = Field("live", description="always `live`: the call is in progress")
    call_id: str
    caller: str
    callee: str
    kind: str | None = Field(description="`application` (the IVR, an extension) or `bridge` "
                                         "(a direct call to an account)")
    state: str = Field(description="ringing, ivr, answered, queued, offering, agent_ringing, "
                                   "talking or ending (hung up, its record being written)")
    started: datetime
    answered: datetime | None = Field(
        description="when an agent answered (queued calls), else when the callee or the IVR did")
    queue: str | None
    agent: str | None = Field(description="the agent talking, or whose phone is ringing")
    waited_seconds: float | None = Field(description="time in line so far (queued calls)")
    duration_seconds: float = Field(description="since the call arrived")
    ivr_path: list[str] = Field(description="IVR nodes visited so far, in order")


class LiveCallDetailView(LiveCallModel):
    queue_log: list[QueueLogView] = Field(description="the call's queue-log lines so far")


class CallView(RootModel[CallHistoryView | LiveCallDetailView]):
    """A finished call's record (``status`` absent) or a live call (``status: live``)."""


def _live_view(view: LiveCallView) -> dict[str, Any]:
    return LiveCallModel.model_validate(asdict(view)).model_dump(mode="json")


def _query_time(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    candidates = [raw]
    if " " in raw:  # an unescaped "+01:00" arrives as " 01:00"
        candidates.append(raw.replace(" ", "+"))
    for candidate in candidates:
        try:
            return as_utc(datetime.fromisoformat(candidate))
        except ValueError:
            continue
    raise invalid(name, f"must be an ISO 8601 date-time, got {raw!r}", "datetime_parsing")


def query_name(request: web.Request, name: str) -> str | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if len(raw) > _MAX_NAME or not _NAME.match(raw):
        raise invalid(name, f"must be a name of 1-{_MAX_NAME} letters, digits, '_', '.', '+' "
                            f"or '-', got {raw!r}", "string_pattern_mismatch")
    return raw


def _query_call_id(request: web.Request, name: str) -> str | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not 1 <= len(raw) <= _MAX_CALL_ID:
        raise invalid(name, f"must be 1-{_MAX_CALL_ID} characters", "string_length")
    return raw


def _time_range(request: web.Request) -> tuple[datetime | None, datetime | None]:
    since, until = _query_time(request, "since"), _query_time(request, "until")
    if since is not None and until is not None and until <= since:
        raise invalid("until", "must be later than since", "range")
    return since, until


def _record_view(record: CallRecord) -> dict[str, Any]:
    return CallRecordView.model_validate(asdict(record)).model_dump(mode="json")


def _log_fields(entry: QueueLogEntry) -> dict[str, Any]:
    # Not asdict(): it cannot deep-copy the entry's read-only data mapping.
    return {"id": entry.id, "time": entry.time, "call_id": entry.call_id, "event": entry.event,
            "queue": entry.queue, "agent": entry.agent, "data": dict(entry.data)}


def _log_view(entry: QueueLogEntry) -> dict[str, Any]:
    return QueueLogView.model_validate(_log_fields(entry)).model_dump(mode="json")


async def list_calls(request: web.Request) -> web.Response:
    since, until = _time_range(request)
    records = await request.app[STORE].call_records(
        since=since,
        until=until,
        queue=query_name(request, "queue"),
        agent=query_name(request, "agent"),
        limit=query_int(request, LIMIT),
        offset=query_int(request, CALLS_OFFSET),
    )
    return web.json_response([_record_view(record) for record in records])


async def list_live_calls(request: web.Request) -> web.Response:
    recorder = request.app.get(LIVE_CALLS)
    views = [] if recorder is None else recorder.live_call_views()
    return web.json_response([_live_view(view) for view in views])


async def get_call(request: web.Request) -> web.Response:
    call_id = request.match_info["call_id"]
    store = request.app[STORE]
    recorder = request.app.get(LIVE_CALLS)
    live = None if recorder is None else recorder.live_call(call_id)
    records = [] if live is not None else await store.call_records(call_id=call_id, limit=MAX_PAGE_SIZE)
    if live is None and not records:
        raise not_found(f"no call {call_id!r} in progress nor in the call records")
    lines = await store.queue_log(call_id=call_id, limit=MAX_PAGE_SIZE)
    if live is not None:
        detail = LiveCallDetailView.model_validate(
            asdict(live) | {"queue_log": [_log_fields(line) for line in lines]})
        return web.json_response(detail.model_dump(mode="json"))
    # Several records for one call id (a replayed write) are possible: the latest wins.
    view = CallHistoryView.model_validate(
        asdict(records[-1]) | {"queue_log": [_log_fields(line) for line in lines]}
    )
    return web.json_response(view.model_dump(mode="json"))


async def list_queue_log(request: web.Request) -> web.Response:
    since, until = _time_range(request)
    entries = await request.app[STORE].queue_log(
        call_id=_query_call_id(request, "call_id"),
        since=since,
        until=until,
        queue=query_name(request, "queue"),
        limit=query_int(request, LIMIT),
        offset=query_int(request, LOG_OFFSET),
    )
    return web.json_response([_log_view(entry) for entry in entries])


ENDPOINTS: tuple[Endpoint, ...] = (
    # Before /calls/{call_id}, which would otherwise take "live" for a call id.
    Endpoint("GET", "/calls/live", list_live_calls, "list_live_calls",
             "The calls in progress, oldest first: state (ringing, ivr, queued, agent_ringing, "
             "talking...), queue, agent, time waited so far, start", "calls",
             response=LiveCallModel, response_is_list=True),
    Endpoint("GET", "/calls", list_calls, "list_calls",
             "Call-detail records, oldest start first; filter with since and until (ISO 8601), "
             "queue and agent", "history",
             response=CallRecordView, response_is_list=True, errors=(422,),
             query=(LIMIT, CALLS_OFFSET)),
    Endpoint("GET", "/calls/{call_id}", get_call, "get_call",
             "A finished call's detail record with its queue-log lines, or a call in progress "
             "as GET /calls/live shows it (status: live) with its queue-log lines so far",
             "history", response=CallView, errors=(404,)),
    Endpoint("GET", "/queue-log", list_queue_log, "list_queue_log",
             "Queue-log lines in time order; filter with since and until (ISO 8601), queue and "
             "call_id", "history",
             response=QueueLogView, response_is_list=True, errors=(422,),
             query=(LIMIT, LOG_OFFSET)),
)
