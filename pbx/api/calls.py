"""Calls: why the router routed a call the way it did, its IVR path and screen-pop context.

A call in progress is answered from memory (the router, the IVR call log, the screen-pop);
a finished call from the store (``call_details``, written with its call record), and from
memory only while its details are still on their way to the store.
"""

from __future__ import annotations

from aiohttp import web

from ivr.call_log import IvrCallLog, UnknownIvrCall
from pbx.api.endpoint import ROUTER, STORE, Endpoint
from pbx.api.errors import not_found
from pbx.api.history import LIVE_CALLS
from pbx.api.schemas import RoutingView
from pbx.calls.screen_pop import ScreenPop
from pbx.store import CallDetails

IVR_CALLS = web.AppKey("ivr_calls", IvrCallLog)
SCREEN_POP = web.AppKey("screen_pop", ScreenPop)


async def _finished_details(request: web.Request, call_id: str) -> CallDetails | None:
    """The stored details of a finished call; None for a call in progress or unknown."""
    recorder = request.app.get(LIVE_CALLS)
    if recorder is not None and recorder.live_call(call_id) is not None:
        return None
    return await request.app[STORE].call_details(call_id)


async def call_routing(request: web.Request) -> web.Response:
    call_id = request.match_info["call_id"]
    details = await _finished_details(request, call_id)
    if details is not None and details.routing is not None:
        decisions = details.routing
    else:
        # UnknownCall -> 404
        decisions = [decision.to_dict() for decision in request.app[ROUTER].explain(call_id)]
    view = RoutingView.model_validate({"call_id": call_id, "decisions": decisions})
    return web.json_response(view.model_dump(mode="json"))


async def call_ivr(request: web.Request) -> web.Response:
    call_id = request.match_info["call_id"]
    details = await _finished_details(request, call_id)
    if details is not None and details.ivr is not None:
        return web.json_response(details.ivr)
    log = request.app.get(IVR_CALLS)
    try:
        if log is None:
            raise UnknownIvrCall(call_id)
        return web.json_response(log.get(call_id))
    except UnknownIvrCall:
        raise not_found(f"no IVR record for call {call_id!r} (it never reached the IVR)") from None


async def call_context(request: web.Request) -> web.Response:
    call_id = request.match_info["call_id"]
    details = await _finished_details(request, call_id)
    if details is not None and details.context is not None:
        return web.json_response(details.context)
    screen_pop = request.app.get(SCREEN_POP)
    try:
        if screen_pop is None:
            raise KeyError(call_id)
        return web.json_response(screen_pop.context(call_id))
    except KeyError:
        raise not_found(f"no agent has been offered call {call_id!r}") from None


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/calls/{call_id}/routing", call_routing, "call_routing",
             "The router's decisions for a call: candidates, scores, rejections and why",
             "calls", response=RoutingView, errors=(404,)),
    Endpoint("GET", "/calls/{call_id}/ivr", call_ivr, "call_ivr",
             "The call's path through the IVR: nodes, digits, language, outcome",
             "calls", errors=(404,)),
    Endpoint("GET", "/calls/{call_id}/context", call_context, "call_context",
             "What the agent's screen-pop shows: caller, customer, IVR choices, routing",
             "calls", errors=(404,)),
)
