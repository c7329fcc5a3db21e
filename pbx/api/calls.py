"""Calls: why the router routed a call the way it did."""

from __future__ import annotations

from aiohttp import web

from pbx.api.endpoint import ROUTER, Endpoint
from pbx.api.schemas import RoutingView


async def call_routing(request: web.Request) -> web.Response:
    call_id = request.match_info["call_id"]
    decisions = request.app[ROUTER].explain(call_id)  # UnknownCall -> 404
    view = RoutingView.model_validate(
        {"call_id": call_id, "decisions": [decision.to_dict() for decision in decisions]}
    )
    return web.json_response(view.model_dump(mode="json"))


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/calls/{call_id}/routing", call_routing, "call_routing",
             "The router's decisions for a call: candidates, scores, rejections and why",
             "calls", response=RoutingView, errors=(404,)),
)
