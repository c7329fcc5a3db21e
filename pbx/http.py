"""The server's HTTP side: health, Prometheus metrics, and the API mounted beside them."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

HealthProbe = Callable[[], dict[str, Any]]


def create_http_app(render_metrics: Callable[[], Awaitable[bytes]], health: HealthProbe,
                    object_census: Callable[[], dict[str, Any]] | None = None,
                    cycle_census: Callable[[], dict[str, Any]] | None = None) -> web.Application:
    """``object_census`` and ``cycle_census``, when given, are served at ``/debug/objects``
    and ``/debug/cycles`` (leak hunting)."""
    started = time.monotonic()

    async def healthz(request: web.Request) -> web.Response:
        body = {"status": "ok", "uptime_seconds": round(time.monotonic() - started, 3), **health()}
        return web.json_response(body)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=await render_metrics(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    @web.middleware
    async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
        # Unknown paths and wrong methods get the same JSON error shape as the API.
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except web.HTTPException as exc:
            if exc.status < 400 or exc.content_type == "application/json":
                raise
            body = {"error": {"code": exc.reason.lower().replace(" ", "_"), "message": exc.reason}}
            return web.Response(status=exc.status, text=json.dumps(body),
                                content_type="application/json", headers=_allow(exc))

    async def agent_page(request: web.Request) -> web.Response:
        raise web.HTTPFound("/agent/")  # the page's relative links need the trailing slash

    app = web.Application(middlewares=[json_errors])
    app.router.add_get("/agent", agent_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    if object_census is not None:
        census = object_census

        async def objects(request: web.Request) -> web.Response:
            return web.json_response(census())

        app.router.add_get("/debug/objects", objects)
    if cycle_census is not None:
        cycles_found = cycle_census

        async def cycles(request: web.Request) -> web.Response:
            return web.json_response(cycles_found())

        app.router.add_get("/debug/cycles", cycles)
    return app


def _allow(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}
