"""One declared endpoint: registered on the application and described in OpenAPI from the same record."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from pydantic import BaseModel

from pbx.api.errors import invalid
from pbx.store import Store
from router import Router

STORE = web.AppKey("store", Store)
ROUTER = web.AppKey("router", Router)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class QueryParameter:
    name: str
    description: str
    minimum: int
    maximum: int
    default: int


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    request: type[BaseModel] | None = None
    request_is_patch: bool = False
    response: type[BaseModel] | None = None
    response_is_list: bool = False
    status: int = 200
    also_created: bool = False  # PUT answers 201 when it created the resource
    errors: tuple[int, ...] = ()
    error_bodies: tuple[tuple[int, type[BaseModel]], ...] = ()  # statuses whose body is not ErrorBody
    query: tuple[QueryParameter, ...] = ()


def path_parameter(request: web.Request, name: str) -> str:
    return request.match_info[name]


def query_int(request: web.Request, parameter: QueryParameter) -> int:
    """An integer query parameter, its default when absent; 422 naming it when invalid."""
    raw = request.query.get(parameter.name)
    if raw is None:
        return parameter.default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(parameter.name, f"must be an integer, got {raw!r}", "int_parsing") from None
    if not parameter.minimum <= value <= parameter.maximum:
        raise invalid(
            parameter.name, f"must be {parameter.minimum}-{parameter.maximum}, got {value}", "range"
        )
    return value
