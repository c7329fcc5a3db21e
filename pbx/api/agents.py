"""Agents: configuration CRUD (store and router kept in step) and state changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from pbx.api.bodies import merge_patch, read_json_object, read_model, validate
from pbx.api.endpoint import ROUTER, STORE, Endpoint
from pbx.api.errors import conflict, not_found
from pbx.api.schemas import AgentLive, AgentView, BreakRequest, RemoteAgentView
from pbx.configuration.models import AgentCreate, AgentFields, agent_record
from pbx.store import AgentRecord, Store
from router import AgentState, Router, RouterError, UnknownAgent


def _fields_of(record: AgentRecord) -> dict[str, Any]:
    fields = {**record.profile.to_dict(), "active": record.active}
    del fields["extension"]
    return fields


def _live(router: Router, record: AgentRecord) -> AgentLive | None:
    if not record.active:
        return None
    try:
        snapshot = router.agent(record.extension)
    except UnknownAgent:
        return None
    return AgentLive(
        state=snapshot.state,
        state_since=snapshot.state_since,
        reason=snapshot.reason,
        occupancy=snapshot.occupancy,
        last_caller=snapshot.last_caller,
        reserved_call=snapshot.reserved_call,
        reachable=snapshot.reachable,
        site_healthy=snapshot.site_healthy,
        site_open=snapshot.site_open,
        queues=list(snapshot.queues),
        pending=snapshot.pending,
        personal_calls=snapshot.personal_calls,
    )


# On one site of several: another site's agent as the bus shows it, None for our own.
RemoteAgents = Callable[[str], RemoteAgentView | None]
REMOTE_AGENTS: web.AppKey[RemoteAgents] = web.AppKey("remote_agents")


def _view(router: Router, record: AgentRecord, request: web.Request) -> dict[str, Any]:
    remote = request.app.get(REMOTE_AGENTS)
    view = AgentView(extension=record.extension, **_fields_of(record), live=_live(router, record),
                     remote=None if remote is None else remote(record.extension))
    return view.model_dump(mode="json")


def _give_router(router: Router, record: AgentRecord) -> None:
    if record.active:
        router.upsert_agent(record.profile)
        return
    try:
        router.remove_agent(record.extension)
    except UnknownAgent:
        pass


async def _save(store: Store, router: Router, previous: AgentRecord | None, record: AgentRecord) -> bool:
    """Write the store, then the router; if the router refuses, put the store back."""
    created = await store.save_agent(record.profile, active=record.active)
    try:
        _give_router(router, record)
    except RouterError:
        if previous is None:
            await store.delete_agent(record.extension)
        else:
            await store.save_agent(previous.profile, active=previous.active)
        raise
    return created


async def _existing(store: Store, extension: str) -> AgentRecord:
    record = await store.agent(extension)
    if record is None:
        raise not_found(f"unknown agent {extension!r}")
    return record


async def list_agents(request: web.Request) -> web.Response:
    router = request.app[ROUTER]
    return web.json_response([_view(router, record, request) for record in await request.app[STORE].agents()])


async def get_agent(request: web.Request) -> web.Response:
    record = await _existing(request.app[STORE], request.match_info["extension"])
    return web.json_response(_view(request.app[ROUTER], record, request))


async def create_agent(request: web.Request) -> web.Response:
    store, router = request.app[STORE], request.app[ROUTER]
    body = await read_model(request, AgentCreate)
    record = agent_record(body.extension, body)
    await store.create_agent(record.profile, active=record.active)
    try:
        _give_router(router, record)
    except RouterError:
        await store.delete_agent(record.extension)
        raise
    location = f"{request.app.router['get_agent'].url_for(extension=record.extension)}"
    return web.json_response(_view(router, record, request), status=201, headers={"Location": location})


async def replace_agent(request: web.Request) -> web.Response:
    store, router = request.app[STORE], request.app[ROUTER]
    extension = request.match_info["extension"]
    document = await read_json_object(request)
    fields = validate(AgentFields, merge_patch({}, document, "extension", extension))
    record = agent_record(extension, fields)
    created = await _save(store, router, await store.agent(extension), record)
    return web.json_response(_view(router, record, request), status=201 if created else 200)


async def patch_agent(request: web.Request) -> web.Response:
    store, router = request.app[STORE], request.app[ROUTER]
    extension = request.match_info["extension"]
    previous = await _existing(store, extension)
    document = await read_json_object(request)
    fields = validate(AgentFields, merge_patch(_fields_of(previous), document, "extension", extension))
    record = agent_record(extension, fields)
    await _save(store, router, previous, record)
    return web.json_response(_view(router, record, request))


async def delete_agent(request: web.Request) -> web.Response:
    store, router = request.app[STORE], request.app[ROUTER]
    extension = request.match_info["extension"]
    await _existing(store, extension)
    try:
        router.remove_agent(extension)  # refuses (409) while the agent holds a call
    except UnknownAgent:
        pass
    await store.delete_agent(extension)
    return web.Response(status=204)


async def _routable(request: web.Request) -> tuple[Router, AgentRecord]:
    record = await _existing(request.app[STORE], request.match_info["extension"])
    if not record.active:
        raise conflict("agent_inactive", f"agent {record.extension!r} is inactive; activate it first")
    return request.app[ROUTER], record


async def login(request: web.Request) -> web.Response:
    router, record = await _routable(request)
    router.login(record.extension)
    return web.json_response(_view(router, record, request))


async def logout(request: web.Request) -> web.Response:
    router, record = await _routable(request)
    router.logout(record.extension)
    return web.json_response(_view(router, record, request))


async def start_break(request: web.Request) -> web.Response:
    router, record = await _routable(request)
    body = await read_model(request, BreakRequest)
    router.start_break(record.extension, body.reason)
    return web.json_response(_view(router, record, request))


async def make_available(request: web.Request) -> web.Response:
    """Back to work: ends a break, or ends wrap-up early."""
    router, record = await _routable(request)
    if router.agent(record.extension).state is AgentState.WRAP_UP:
        router.end_wrap_up(record.extension)
    else:
        router.end_break(record.extension)
    return web.json_response(_view(router, record, request))


_ONE = "/agents/{extension}"
_MISSING_OR_INACTIVE = (404, 409)

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/agents", list_agents, "list_agents", "List agents with their live state",
             "agents", response=AgentView, response_is_list=True),
    Endpoint("POST", "/agents", create_agent, "create_agent", "Create an agent", "agents",
             request=AgentCreate, response=AgentView, status=201, errors=(400, 409, 415, 422)),
    Endpoint("GET", _ONE, get_agent, "get_agent", "Get an agent with its live state", "agents",
             response=AgentView, errors=(404,)),
    Endpoint("PUT", _ONE, replace_agent, "replace_agent", "Create or replace an agent", "agents",
             request=AgentFields, response=AgentView, also_created=True, errors=(400, 409, 415, 422)),
    Endpoint("PATCH", _ONE, patch_agent, "patch_agent",
             "Change some fields of an agent (each field given replaces the stored one)", "agents",
             request=AgentFields, request_is_patch=True, response=AgentView,
             errors=(400, 404, 409, 415, 422)),
    Endpoint("DELETE", _ONE, delete_agent, "delete_agent", "Delete an agent", "agents",
             status=204, errors=(404, 409)),
    Endpoint("POST", _ONE + "/login", login, "agent_login", "Log the agent in (available)", "agents",
             response=AgentView, errors=_MISSING_OR_INACTIVE),
    Endpoint("POST", _ONE + "/logout", logout, "agent_logout",
             "Log the agent out (deferred until its call ends)", "agents", response=AgentView,
             errors=_MISSING_OR_INACTIVE),
    Endpoint("POST", _ONE + "/break", start_break, "agent_break",
             "Put the agent on a break (deferred until its call ends)", "agents",
             request=BreakRequest, response=AgentView, errors=(400, 404, 409, 415, 422)),
    Endpoint("POST", _ONE + "/available", make_available, "agent_available",
             "Available again: ends the agent's break, or its wrap-up early", "agents", response=AgentView,
             errors=_MISSING_OR_INACTIVE),
)
