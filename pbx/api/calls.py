"""Calls: why the router routed a call the way it did."""

from __future__ import annotations

from aiohttp import web

from ivr.call_log import IvrCallLog, UnknownIvrCall
from pbx.api.endpoint import ROUTER, Endpoint
from pbx.api.errors import not_found
from pbx.api.schemas import RoutingView
from pbx.screen_pop import ScreenPop

IVR_CALLS = web.AppKey("ivr_calls", IvrCallLog)
SCREEN_POP = web.AppKey("screen_pop", ScreenPop)


async def call_routing(request: web.Request) -> web.Response:
    call_id = request.match_info["call_id"]
    decisions = request.app[ROUTER].explain(call_id)  # UnknownCall -> 404
    view = RoutingView.model_validate(
        {"call_id": call_id, "decisions": [decision.to_dict() for decision in decisions]}
    )
    return web.json_response(view.model_dump(mode="json"))


async def call_ivr(request: web.Request) -> web.Response:
    call_id = request.match_info["call_id"]
    log = request.app.get(IVR_CALLS)
    try:
        if log is None:
            raise UnknownIvrCall(call_id)
        return web.json_response(log.get(call_id))
    except UnknownIvrCall:
        raise not_found(f"no IVR record for call {call_id!r} (it never reached the IVR, or is too old)") from None


async def call_context(request: web.Request) -> web.Response:
    call_id = request.match_info["call_id"]
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
