"""Queues: configuration CRUD (store and router kept in step) and live statistics."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pbx.api.bodies import merge_patch, read_json_object, read_model, validate
from pbx.api.endpoint import ROUTER, STORE, Endpoint
from pbx.api.errors import not_found
from pbx.api.schemas import QueueStatsView, QueueView
from pbx.configuration.models import QueueCreate, QueueFields, queue_config
from pbx.store import Store
from router import QueueConfig, Router, RouterError, UnknownQueue


def _fields_of(config: QueueConfig) -> dict[str, Any]:
    fields = config.to_dict()
    del fields["name"]
    return fields


def _view(config: QueueConfig) -> dict[str, Any]:
    return QueueView.model_validate(config.to_dict()).model_dump(mode="json")


async def _save(store: Store, router: Router, previous: QueueConfig | None, config: QueueConfig) -> bool:
    """Write the store, then the router; if the router refuses, put the store back."""
    created = await store.save_queue(config)
    try:
        router.upsert_queue(config)
    except RouterError:
        if previous is None:
            await store.delete_queue(config.name)
        else:
            await store.save_queue(previous)
        raise
    return created


async def _existing(store: Store, name: str) -> QueueConfig:
    config = await store.queue(name)
    if config is None:
        raise not_found(f"unknown queue {name!r}")
    return config


async def list_queues(request: web.Request) -> web.Response:
    return web.json_response([_view(config) for config in await request.app[STORE].queue_configs()])


async def get_queue(request: web.Request) -> web.Response:
    return web.json_response(_view(await _existing(request.app[STORE], request.match_info["name"])))


async def create_queue(request: web.Request) -> web.Response:
    store, router = request.app[STORE], request.app[ROUTER]
    body = await read_model(request, QueueCreate)
    config = queue_config(body.name, body)
    await store.create_queue(config)
    try:
        router.upsert_queue(config)
    except RouterError:
        await store.delete_queue(config.name)
        raise
    location = f"{request.app.router['get_queue'].url_for(name=config.name)}"
    return web.json_response(_view(config), status=201, headers={"Location": location})


async def replace_queue(request: web.Request) -> web.Response:
    store, router = request.app[STORE], request.app[ROUTER]
    name = request.match_info["name"]
    document = await read_json_object(request)
    config = queue_config(name, validate(QueueFields, merge_patch({}, document, "name", name)))
    created = await _save(store, router, await store.queue(name), config)
    return web.json_response(_view(config), status=201 if created else 200)


async def patch_queue(request: web.Request) -> web.Response:
    store, router = request.app[STORE], request.app[ROUTER]
    name = request.match_info["name"]
    previous = await _existing(store, name)
    document = await read_json_object(request)
    fields = validate(QueueFields, merge_patch(_fields_of(previous), document, "name", name))
    config = queue_config(name, fields)
    await _save(store, router, previous, config)
    return web.json_response(_view(config))


async def delete_queue(request: web.Request) -> web.Response:
    store, router = request.app[STORE], request.app[ROUTER]
    name = request.match_info["name"]
    previous = await _existing(store, name)
    await store.delete_queue(name)  # refuses (409) while another queue overflows into it
    try:
        router.remove_queue(name)  # refuses (409) while calls wait in it
    except UnknownQueue:
        pass
    except RouterError:
        await store.save_queue(previous)
        raise
    return web.Response(status=204)


async def queue_stats(request: web.Request) -> web.Response:
    stats = request.app[ROUTER].queue_stats(request.match_info["name"])
    return web.json_response(QueueStatsView.model_validate(stats.to_dict()).model_dump(mode="json"))


_ONE = "/queues/{name}"

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/queues", list_queues, "list_queues", "List queues", "queues",
             response=QueueView, response_is_list=True),
    Endpoint("POST", "/queues", create_queue, "create_queue", "Create a queue", "queues",
             request=QueueCreate, response=QueueView, status=201, errors=(400, 409, 415, 422)),
    Endpoint("GET", _ONE, get_queue, "get_queue", "Get a queue", "queues",
             response=QueueView, errors=(404,)),
    Endpoint("PUT", _ONE, replace_queue, "replace_queue", "Create or replace a queue", "queues",
             request=QueueFields, response=QueueView, also_created=True, errors=(400, 409, 415, 422)),
    Endpoint("PATCH", _ONE, patch_queue, "patch_queue",
             "Change some fields of a queue (each field given replaces the stored one)", "queues",
             request=QueueFields, request_is_patch=True, response=QueueView,
             errors=(400, 404, 409, 415, 422)),
    Endpoint("DELETE", _ONE, delete_queue, "delete_queue",
             "Delete a queue (refused while calls wait in it or another queue overflows into it)",
             "queues", status=204, errors=(404, 409)),
    Endpoint("GET", _ONE + "/stats", queue_stats, "queue_stats",
             "Live figures: waiting calls, longest wait, EWT, agents available, service level",
             "queues", response=QueueStatsView, errors=(404,)),
)
