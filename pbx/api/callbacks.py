"""Callback requests: ask to be called back (a web "call me back" form), list, read, cancel.

A request keeps its place in the queue's line from the moment it is made; one pending
request per number and queue (a second is answered 409 with the first). Bad input the
client can fix (a number that cannot be dialled, an unknown queue, a time in the past or
outside the queue's business hours) is a 400 saying why.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, Field

from callbacks import CallbackDesk, CallbackRequest, CallbackState, InvalidNumber
from pbx.api.bodies import read_model
from pbx.api.endpoint import ROUTER, Endpoint, QueryParameter, query_int
from pbx.api.errors import ApiError, invalid, not_found
from pbx.api.history import LIMIT, query_name
from pbx.api.schemas import ErrorDetail
from pbx.configuration.callbacks import CallbackConfig
from pbx.configuration.models import RequestModel
from router import UnknownQueue

CALLBACK_DESK = web.AppKey("callback_desk", CallbackDesk)
CALLBACK_CONFIG = web.AppKey("callback_config", CallbackConfig)

OFFSET = QueryParameter("offset", "requests to skip, in original enqueue order", 0, 2**31 - 1, 0)

# A form filled in "for now" reaches us a little later: a time this recent is taken as now.
PAST_TOLERANCE = timedelta(seconds=60)


class CallbackCreate(RequestModel):
    number: str = Field(max_length=256, description="the number to call back: digits with an "
                                                    "optional leading +; spaces, dashes, dots "
                                                    "and parentheses are dropped")
    queue: str = Field(max_length=64, description="the queue whose line the request joins")
    earliest_at: AwareDatetime | None = Field(
        None, description="not called before this time (ISO 8601 with an offset); within the "
                          "queue's business hours when it has any. Default: as soon as its turn comes")


class CallbackOutcomeView(BaseModel):
    at: datetime
    outcome: str = Field(description="answered, no_answer, busy, invalid_number, trunk_failure, "
                                     "agent_rejected, interrupted, cancelled or expired")
    site: str
    detail: str


class CallbackView(BaseModel):
    id: str
    number: str
    queue: str
    state: str = Field(description="pending, dialing, completed, failed, expired or cancelled")
    priority: int
    requested_at: datetime = Field(description="the original enqueue time: the request's place in line")
    earliest_at: datetime = Field(description="not dialled before this (schedule, or retry backoff)")
    expires_at: datetime
    attempts: int = Field(description="tries that reached the customer's phone")
    site: str = Field(description="the site that owns the request")
    lease_expires_at: datetime
    origin_call_id: str | None = Field(description="the call the request came from, if any")
    history: list[CallbackOutcomeView] = Field(description="every try's outcome, oldest first")


class DuplicateCallbackBody(BaseModel):
    error: ErrorDetail
    callback: CallbackView = Field(description="the pending request already there")


def callback_view(request: CallbackRequest) -> dict[str, Any]:
    return CallbackView(
        id=request.id, number=request.number, queue=request.queue, state=request.state.value,
        priority=request.priority, requested_at=request.requested_at,
        earliest_at=request.earliest_at, expires_at=request.expires_at,
        attempts=request.attempts, site=request.site, lease_expires_at=request.lease_expires_at,
        origin_call_id=request.origin_call_id,
        history=[CallbackOutcomeView(at=record.at, outcome=record.outcome.value, site=record.site,
                                     detail=record.detail) for record in request.history],
    ).model_dump(mode="json")


def _bad_request(code: str, field: str, message: str) -> ApiError:
    return ApiError(400, code, f"{field}: {message}",
                    fields=[{"field": field, "message": message, "type": code}])


def _location(request: web.Request, callback_id: str) -> str:
    return str(request.app.router["get_callback"].url_for(callback_id=callback_id))


async def create_callback(request: web.Request) -> web.Response:
    desk = request.app[CALLBACK_DESK]
    config = request.app[CALLBACK_CONFIG]
    body = await read_model(request, CallbackCreate)
    try:
        request.app[ROUTER].queue(body.queue)
    except UnknownQueue:
        raise _bad_request("unknown_queue", "queue", f"there is no queue {body.queue!r}") from None
    earliest = body.earliest_at.astimezone(UTC) if body.earliest_at is not None else None
    if earliest is not None:
        now = desk.now()
        if earliest < now - PAST_TOLERANCE:
            raise _bad_request("in_the_past", "earliest_at",
                               f"{earliest.isoformat()} is in the past (it is now {now.isoformat()})")
        rules = config.callbacks.for_queue(body.queue)
        if rules.business_hours is not None and not rules.business_hours.hours().is_open(earliest):
            local = earliest.astimezone(rules.business_hours.hours().timezone)
            raise _bad_request("outside_business_hours", "earliest_at",
                               f"queue {body.queue!r} is closed at {local.isoformat()} "
                               f"(open {_opening_text(rules.business_hours.weekly)})")
    try:
        stored, created = await desk.request(body.number, body.queue, earliest_at=earliest)
    except InvalidNumber as error:
        raise _bad_request("invalid_number", "number", error.reason) from None
    location = _location(request, stored.id)
    if not created:
        return web.json_response(
            {"error": {"code": "duplicate_callback",
                       "message": f"a callback for {stored.number} in queue {stored.queue!r} is "
                                  f"already {stored.state.value} ({stored.id})"},
             "callback": callback_view(stored)},
            status=409, headers={"Location": location})
    return web.json_response(callback_view(stored), status=201, headers={"Location": location})


def _opening_text(weekly: dict[str, str]) -> str:
    return ", ".join(f"{days} {hours}" for days, hours in weekly.items()) or "never"


def _query_state(request: web.Request) -> CallbackState | None:
    raw = request.query.get("state")
    if raw is None:
        return None
    try:
        return CallbackState(raw)
    except ValueError:
        choices = ", ".join(state.value for state in CallbackState)
        raise invalid("state", f"must be one of {choices}, got {raw!r}", "enum") from None


async def list_callbacks(request: web.Request) -> web.Response:
    found = await request.app[CALLBACK_DESK].store.callbacks(
        state=_query_state(request), queue=query_name(request, "queue"),
        limit=query_int(request, LIMIT), offset=query_int(request, OFFSET))
    return web.json_response([callback_view(item) for item in found])


async def _existing(request: web.Request) -> CallbackRequest:
    callback_id = request.match_info["callback_id"]
    found = await request.app[CALLBACK_DESK].store.callback(callback_id)
    if found is None:
        raise not_found(f"no callback {callback_id!r}")
    return found


async def get_callback(request: web.Request) -> web.Response:
    return web.json_response(callback_view(await _existing(request)))


async def cancel_callback(request: web.Request) -> web.Response:
    existing = await _existing(request)
    cancelled = await request.app[CALLBACK_DESK].cancel(existing.id, "cancelled through the API")
    if cancelled is None:
        ended = await _existing(request)
        raise ApiError(409, "invalid_transition",
                       f"callback {ended.id} is {ended.state.value}: only a pending or dialing "
                       "callback can be cancelled")
    return web.json_response(callback_view(cancelled))


_ONE = "/callbacks/{callback_id}"

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("POST", "/callbacks", create_callback, "create_callback",
             "Ask for a callback: the number joins the queue's line now, keeping its place; "
             "400 for a number that cannot be dialled, an unknown queue, or a time in the past "
             "or outside the queue's business hours; 409 (with the existing request) when one "
             "is pending for the same number and queue", "callbacks",
             request=CallbackCreate, response=CallbackView, status=201,
             errors=(400, 409, 415, 422), error_bodies=((409, DuplicateCallbackBody),)),
    Endpoint("GET", "/callbacks", list_callbacks, "list_callbacks",
             "Callback requests in line order (original enqueue time); filter with state "
             "(pending, dialing, completed, failed, expired, cancelled) and queue", "callbacks",
             response=CallbackView, response_is_list=True, errors=(422,), query=(LIMIT, OFFSET)),
    Endpoint("GET", _ONE, get_callback, "get_callback",
             "A callback request with the outcome of every try", "callbacks",
             response=CallbackView, errors=(404,)),
    Endpoint("DELETE", _ONE, cancel_callback, "cancel_callback",
             "Cancel a pending (or dialing) callback; 409 when it has ended already", "callbacks",
             response=CallbackView, errors=(404, 409)),
)
