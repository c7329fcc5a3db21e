"""Sites: CRUD; a site's health is also given to the router, which stops routing to it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict

from aiohttp import web
from pydantic import BaseModel, Field

from pbx.api.bodies import merge_patch, read_json_object, read_model, validate
from pbx.api.endpoint import ROUTER, STORE, Endpoint
from pbx.api.errors import conflict, not_found
from pbx.api.schemas import SiteOverrideFields, SiteOverrideView, SiteView
from pbx.configuration.models import (
    DisplayName,
    RequestModel,
    SiteCreate,
    SiteFields,
    opening_hours,
    site_fields_of,
    site_record,
)
from pbx.drill.drain import DrainConflict, SiteDrain
from pbx.store import SiteRecord, Store


async def _existing(store: Store, name: str) -> SiteRecord:
    site = await store.site(name)
    if site is None:
        raise not_found(f"unknown site {name!r}")
    return site


def _view(site: SiteRecord) -> dict[str, object]:
    return SiteView.model_validate(asdict(site)).model_dump(mode="json")


async def list_sites(request: web.Request) -> web.Response:
    return web.json_response([_view(site) for site in await request.app[STORE].sites()])


async def get_site(request: web.Request) -> web.Response:
    return web.json_response(_view(await _existing(request.app[STORE], request.match_info["name"])))


async def create_site(request: web.Request) -> web.Response:
    body = await read_model(request, SiteCreate)
    site = site_record(body.name, body)
    await request.app[STORE].create_site(site)
    _give_router(request, site)
    location = f"{request.app.router['get_site'].url_for(name=site.name)}"
    return web.json_response(_view(site), status=201, headers={"Location": location})


async def _save(request: web.Request, site: SiteRecord) -> bool:
    created = await request.app[STORE].save_site(site)
    _give_router(request, site)
    return created


def _give_router(request: web.Request, site: SiteRecord) -> None:
    router = request.app[ROUTER]
    router.set_site_health(site.name, site.healthy)
    router.set_site_hours(site.name, opening_hours(site))


async def replace_site(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    fields = validate(SiteFields, merge_patch({}, await read_json_object(request), "name", name))
    site = site_record(name, fields)
    created = await _save(request, site)
    return web.json_response(_view(site), status=201 if created else 200)


async def patch_site(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    previous = await _existing(request.app[STORE], name)
    fields = validate(SiteFields, merge_patch(site_fields_of(previous), await read_json_object(request),
                                              "name", name))
    site = site_record(name, fields)
    await _save(request, site)
    return web.json_response(_view(site))


async def delete_site(request: web.Request) -> web.Response:
    await request.app[STORE].delete_site(request.match_info["name"])
    return web.Response(status=204)


# Force a site down or up on every site (the site bus); absent on a server that is one site.
# Called with (site, "down" / "up" / None, by); returns the site's health after it.
SiteOverride = Callable[[str, str | None, str], bool]
SITE_OVERRIDE: web.AppKey[SiteOverride] = web.AppKey("site_override")


async def override_site(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    body = await read_model(request, SiteOverrideFields)
    await _existing(request.app[STORE], name)
    force = request.app.get(SITE_OVERRIDE)
    if force is None:
        raise conflict("not_multi_site", "this server is the only site: there is no bus to publish "
                       "an override on (change the site's health with PATCH /sites/{name})")
    try:
        up = force(name, body.forced, body.by)
    except ValueError as error:  # a site created through the API, not in the shared configuration
        raise conflict("unknown_to_bus", str(error)) from None
    view = SiteOverrideView(site=name, forced=body.forced, by=body.by, up=up)
    return web.json_response(view.model_dump(mode="json"))


class DrainFields(RequestModel):
    draining: bool = Field(description="true: refuse new calls (503) so the front door sends "
                                       "them to the other sites; false: take them again")
    by: DisplayName = Field("api", description="who asks (logged, in the drill's events)")


class DrainView(BaseModel):
    site: str
    draining: bool
    since: float | None = Field(description="Unix seconds the drain started")
    by: str | None
    calls_in_progress: int = Field(description="calls this site's server carries now")
    callback_tries: int = Field(description="callback calls this site is trying now")
    callbacks_handed_over: int | None = Field(
        description="callback requests given up to the other sites during this drain")
    agents_released: list[dict[str, object]] = Field(
        description="this site's agents released for the drill's target (agent, at: Unix "
                    "seconds), during this drain")
    callers_moved: list[dict[str, object]] = Field(
        description="callers waiting here answered by another site's agent during this "
                    "drain (call_id, site, agent, at)")


class AgentsReleaseFields(RequestModel):
    to: DisplayName = Field(description="the site that claims the released agents")


class AgentsReleaseView(BaseModel):
    site: str
    released: list[str] = Field(description="agents offered no call here from now on")
    on_a_call: list[str] = Field(description="agents released once their call ends (ask again)")


class AgentsClaimFields(RequestModel):
    agents: list[DisplayName] = Field(description="the agents this site serves from now on")
    from_site: DisplayName = Field(alias="from", description="the drained site they come from")


class AgentsClaimView(BaseModel):
    site: str
    claimed: list[str] = Field(description="agents this site claimed now (on the bus)")
    at: float = Field(description="Unix seconds of the claims")


class CallbacksHandOverView(BaseModel):
    site: str
    handed_over: int = Field(description="requests given up; the other sites adopt them")


# This server's drain (one site of several); absent on a server that is the only site.
SITE_DRAIN: web.AppKey[SiteDrain] = web.AppKey("site_drain")


def _own_drain(request: web.Request) -> SiteDrain:
    name = request.match_info["name"]
    drain = request.app.get(SITE_DRAIN)
    if drain is None:
        raise conflict("not_multi_site", "this server is the only site: there is no other "
                       "site to send its calls to")
    if name != drain.site:
        raise conflict("other_site", f"this server is site {drain.site}: ask site "
                       f"{name}'s own server to drain it")
    return drain


def _drain_view(drain: SiteDrain) -> web.Response:
    return web.json_response(DrainView.model_validate(drain.view()).model_dump(mode="json"))


async def get_drain(request: web.Request) -> web.Response:
    await _existing(request.app[STORE], request.match_info["name"])
    return _drain_view(_own_drain(request))


async def put_drain(request: web.Request) -> web.Response:
    body = await read_model(request, DrainFields)
    await _existing(request.app[STORE], request.match_info["name"])
    drain = _own_drain(request)
    try:
        if body.draining:
            drain.start(body.by)
        elif drain.draining:
            drain.end(body.by)
    except DrainConflict as error:
        raise conflict("drill_running", str(error)) from None
    return _drain_view(drain)


async def hand_over_callbacks(request: web.Request) -> web.Response:
    await _existing(request.app[STORE], request.match_info["name"])
    drain = _own_drain(request)
    try:
        count = await drain.hand_over_callbacks()
    except DrainConflict as error:
        raise conflict("not_now", str(error)) from None
    view = CallbacksHandOverView(site=drain.site, handed_over=count)
    return web.json_response(view.model_dump(mode="json"))


async def release_agents(request: web.Request) -> web.Response:
    body = await read_model(request, AgentsReleaseFields)
    await _existing(request.app[STORE], request.match_info["name"])
    await _existing(request.app[STORE], body.to)
    drain = _own_drain(request)
    try:
        released, busy = drain.release_agents(body.to)
    except DrainConflict as error:
        raise conflict("not_drained", str(error)) from None
    view = AgentsReleaseView(site=drain.site, released=released, on_a_call=busy)
    return web.json_response(view.model_dump(mode="json"))


async def claim_agents(request: web.Request) -> web.Response:
    body = await read_model(request, AgentsClaimFields)
    await _existing(request.app[STORE], request.match_info["name"])
    drain = _own_drain(request)
    at = time.time()
    try:
        claimed = await drain.claim_agents(list(body.agents), body.from_site)
    except DrainConflict as error:
        raise conflict("drained", str(error)) from None
    except ValueError as error:
        raise not_found(str(error)) from None
    view = AgentsClaimView(site=drain.site, claimed=claimed, at=at)
    return web.json_response(view.model_dump(mode="json"))


async def agents_home(request: web.Request) -> web.Response:
    await _existing(request.app[STORE], request.match_info["name"])
    drain = _own_drain(request)
    at = time.time()
    try:
        claimed = await drain.take_agents_back()
    except DrainConflict as error:
        raise conflict("drill_running", str(error)) from None
    view = AgentsClaimView(site=drain.site, claimed=claimed, at=at)
    return web.json_response(view.model_dump(mode="json"))


_ONE = "/sites/{name}"

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/sites", list_sites, "list_sites", "List sites", "sites",
             response=SiteView, response_is_list=True),
    Endpoint("POST", "/sites", create_site, "create_site", "Create a site", "sites",
             request=SiteCreate, response=SiteView, status=201, errors=(400, 409, 415, 422)),
    Endpoint("GET", _ONE, get_site, "get_site", "Get a site", "sites", response=SiteView,
             errors=(404,)),
    Endpoint("PUT", _ONE, replace_site, "replace_site", "Create or replace a site", "sites",
             request=SiteFields, response=SiteView, also_created=True, errors=(400, 415, 422)),
    Endpoint("PATCH", _ONE, patch_site, "patch_site",
             "Change a site's time zone, business hours or health (unhealthy or closed sites "
             "get no calls)", "sites",
             request=SiteFields, request_is_patch=True, response=SiteView,
             errors=(400, 404, 415, 422)),
    Endpoint("PUT", _ONE + "/override", override_site, "override_site",
             "Force a site down or up on every site, or back to its liveness signal (null)",
             "sites", request=SiteOverrideFields, response=SiteOverrideView,
             errors=(400, 404, 409, 415, 422)),
    Endpoint("GET", _ONE + "/drain", get_drain, "get_site_drain",
             "Whether this server's site is drained for a drill, and what it still carries",
             "sites", response=DrainView, errors=(404, 409)),
    Endpoint("PUT", _ONE + "/drain", put_drain, "put_site_drain",
             "Drain this server's site (new calls refused 503, calls in progress carry on) "
             "or take new calls again", "sites", request=DrainFields, response=DrainView,
             errors=(400, 404, 409, 415, 422)),
    Endpoint("POST", _ONE + "/drain/callbacks", hand_over_callbacks, "hand_over_callbacks",
             "A drained site gives its callback requests up for the other sites to adopt",
             "sites", response=CallbacksHandOverView, errors=(404, 409)),
    Endpoint("POST", _ONE + "/drain/agents", release_agents, "release_site_agents",
             "A drained site stops offering calls to its agents not on a call, for the drill's "
             "target to claim", "sites", request=AgentsReleaseFields, response=AgentsReleaseView,
             errors=(400, 404, 409, 415, 422)),
    Endpoint("POST", _ONE + "/agents/claim", claim_agents, "claim_site_agents",
             "This server's site serves these agents from now on (a drill moves them here)",
             "sites", request=AgentsClaimFields, response=AgentsClaimView,
             errors=(400, 404, 409, 415, 422)),
    Endpoint("POST", _ONE + "/agents/home", agents_home, "site_agents_home",
             "This server's site claims back its agents that other sites serve (after a drill)",
             "sites", response=AgentsClaimView, errors=(404, 409)),
    Endpoint("DELETE", _ONE, delete_site, "delete_site",
             "Delete a site (refused while agents belong to it)", "sites", status=204,
             errors=(404, 409)),
)
