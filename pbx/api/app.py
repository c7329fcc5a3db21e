"""The API application: every endpoint, the JSON error handling and the token check."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from callbacks import CallbackDesk
from ivr.call_log import IvrCallLog
from pbx.api import agents, callbacks, calls, customers, history, queues, sites
from pbx.api.agents import REMOTE_AGENTS, RemoteAgents
from pbx.api.callbacks import CALLBACK_CONFIG, CALLBACK_DESK
from pbx.api.calls import IVR_CALLS, SCREEN_POP
from pbx.api.endpoint import ROUTER, STORE, Endpoint
from pbx.api.errors import bearer_token_check, json_errors
from pbx.api.history import LIVE_CALLS
from pbx.api.openapi import build_openapi
from pbx.api.sites import SITE_OVERRIDE, SiteOverride
from pbx.calls.screen_pop import ScreenPop
from pbx.configuration.callbacks import DEFAULT_SITE, CallbackConfig
from pbx.records import CallRecorder
from pbx.store import Store
from pbx.store.callbacks import SqlCallbackStore
from router import Router

ENDPOINTS: tuple[Endpoint, ...] = (
    *agents.ENDPOINTS,
    *queues.ENDPOINTS,
    *sites.ENDPOINTS,
    *customers.ENDPOINTS,
    *calls.ENDPOINTS,
    *history.ENDPOINTS,
    *callbacks.ENDPOINTS,
)


async def openapi_document(request: web.Request) -> web.Response:
    # Derive the mount point from where we were reached, so the document is right wherever
    # the composition root mounts the API.
    server_url = request.path.removesuffix("/openapi.json") or "/"
    return web.json_response(build_openapi(ENDPOINTS, server_url=server_url))


def create_api(store: Store, router: Router, token: str | None,
               ivr_calls: IvrCallLog | None = None,
               screen_pop: ScreenPop | None = None,
               live_calls: CallRecorder | None = None,
               callback_desk: CallbackDesk | None = None,
               callback_config: CallbackConfig | None = None,
               site_override: SiteOverride | None = None,
               remote_agents: RemoteAgents | None = None) -> web.Application:
    """The API as a sub-application, for ``app.add_subapp("/api/v1", create_api(...))``.

    With ``token`` set, every request needs ``Authorization: Bearer <token>``.
    ``live_calls`` (the call recorder) serves the calls in progress. ``callback_desk`` takes
    callback requests (default: a desk on the store, as the single site ``local``), and
    ``callback_config`` has the queues' business hours. ``site_override`` forces a site
    down or up over the site bus, and ``remote_agents`` shows other sites' agents as the bus
    does (one site of several).
    The router is synchronous and owned by the event loop's thread; handlers call it directly.
    """
    app = web.Application(middlewares=[json_errors, bearer_token_check(token)])
    app[STORE] = store
    app[ROUTER] = router
    if ivr_calls is not None:
        app[IVR_CALLS] = ivr_calls
    if screen_pop is not None:
        app[SCREEN_POP] = screen_pop
    if live_calls is not None:
        app[LIVE_CALLS] = live_calls
    app[CALLBACK_DESK] = callback_desk or CallbackDesk(
        SqlCallbackStore(store.engine), site=DEFAULT_SITE, clock=lambda: datetime.now(UTC))
    app[CALLBACK_CONFIG] = callback_config or CallbackConfig()
    if site_override is not None:
        app[SITE_OVERRIDE] = site_override
    if remote_agents is not None:
        app[REMOTE_AGENTS] = remote_agents
    for endpoint in ENDPOINTS:
        app.router.add_route(endpoint.method, endpoint.path, endpoint.handler, name=endpoint.operation_id)
    app.router.add_get("/openapi.json", openapi_document, name="openapi")
    return app
