"""The OpenAPI 3.1 description, built from the same endpoint records that are registered."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from pbx.api.endpoint import Endpoint
from pbx.api.schemas import ErrorBody

_PATH_PARAMETER = re.compile(r"\{(\w+)\}")

_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    204: "No content",
    400: "The body is not valid JSON, or a value is refused (the message says why)",
    401: "Missing or invalid bearer token",
    404: "No such resource",
    409: "Conflicts with the current state (exists already, in use, invalid state change)",
    415: "The body is not application/json",
    422: "The body is well-formed JSON but a field is invalid; `fields` says which and why",
}


def _patch_name(model: type[BaseModel]) -> str:
    return f"{model.__name__}Patch"


_Refs = dict[tuple[type[BaseModel], str], str]


def _components(endpoints: Sequence[Endpoint]) -> tuple[dict[str, Any], _Refs]:
    inputs: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for endpoint in endpoints:
        if endpoint.request is not None:
            inputs.append((endpoint.request, "validation"))
        if endpoint.response is not None:
            inputs.append((endpoint.response, "serialization"))
        inputs.extend((body, "serialization") for _, body in endpoint.error_bodies)
    inputs.append((ErrorBody, "serialization"))
    unique = list(dict.fromkeys(inputs))
    key_map, document = models_json_schema(unique, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = document.get("$defs", {})
    refs: _Refs = {
        (model, mode): value["$ref"]
        for (model, mode), value in key_map.items()
        if isinstance(model, type) and issubclass(model, BaseModel)
    }
    for endpoint in endpoints:
        if endpoint.request is not None and endpoint.request_is_patch:
            name = refs[(endpoint.request, "validation")].rsplit("/", 1)[1]
            patch = copy.deepcopy(schemas[name])
            patch.pop("required", None)
            patch["title"] = _patch_name(endpoint.request)
            patch["description"] = "Any subset of the fields; each one given replaces the stored value."
            schemas[_patch_name(endpoint.request)] = patch
    return schemas, refs


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _operation(endpoint: Endpoint, refs: _Refs) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": endpoint.operation_id,
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
    }
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAMETER.findall(endpoint.path)
    ]
    parameters += [
        {
            "name": query.name,
            "in": "query",
            "required": False,
            "description": query.description,
            "schema": {
                "type": "integer",
                "minimum": query.minimum,
                "maximum": query.maximum,
                "default": query.default,
            },
        }
        for query in endpoint.query
    ]
    if parameters:
        operation["parameters"] = parameters
    if endpoint.request is not None:
        if endpoint.request_is_patch:
            schema = {"$ref": f"#/components/schemas/{_patch_name(endpoint.request)}"}
        else:
            schema = {"$ref": refs[(endpoint.request, "validation")]}
        operation["requestBody"] = {"required": True, "content": _json_content(schema)}

    responses: dict[str, Any] = {}
    success_statuses = [endpoint.status, *([201] if endpoint.also_created else [])]
    for status in success_statuses:
        response: dict[str, Any] = {"description": _STATUS_TEXT[status]}
        if endpoint.response is not None:
            item: dict[str, Any] = {"$ref": refs[(endpoint.response, "serialization")]}
            body = {"type": "array", "items": item} if endpoint.response_is_list else item
            response["content"] = _json_content(body)
        responses[str(status)] = response
    error_ref = {"$ref": refs[(ErrorBody, "serialization")]}
    errors = set(endpoint.errors) | {401}
    operation["security"] = [{"bearer": []}]
    special = dict(endpoint.error_bodies)
    for status in sorted(errors):
        body_ref = {"$ref": refs[(special[status], "serialization")]} if status in special else error_ref
        responses[str(status)] = {"description": _STATUS_TEXT[status], "content": _json_content(body_ref)}
    operation["responses"] = responses
    return operation


def build_openapi(endpoints: Sequence[Endpoint], *, server_url: str) -> dict[str, Any]:
    """A complete OpenAPI 3.1 document for ``endpoints``, served under ``server_url``."""
    schemas, refs = _components(endpoints)
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint, refs)
    paths["/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "This description",
            "tags": ["meta"],
            "security": [{"bearer": []}],
            "responses": {
                "200": {"description": "OK", "content": _json_content({"type": "object"})},
                "401": {"description": _STATUS_TEXT[401],
                        "content": _json_content({"$ref": refs[(ErrorBody, "serialization")]})},
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Centralita router API",
            "version": "1.0.0",
            "description": (
                "Agents, queues, sites and customers of the Centralita contact center, the "
                "agents' live state, the calls in progress and finished, and the router's "
                "decisions. Every request, reads included, needs `Authorization: Bearer <token>` "
                "when the server has a token configured (`http.api_token`). Every "
                "error is `{\"error\": {\"code\", \"message\", \"fields\"?}}`."
            ),
        },
        "servers": [{"url": server_url}],
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "tags": [
            {"name": name}
            for name in dict.fromkeys([endpoint.tag for endpoint in endpoints] + ["meta"])
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
