"""Reading JSON request bodies into validated models."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from pbx.api.errors import ApiError, invalid, validation_failed

Model = TypeVar("Model", bound=BaseModel)

# Enforced here rather than by client_max_size: a sub-application's own setting is
# ignored, requests carry the limit of the application that accepted them.
MAX_BODY_BYTES = 256 * 1024


def _too_large() -> ApiError:
    return ApiError(413, "payload_too_large", f"the body exceeds {MAX_BODY_BYTES} bytes")


async def _read_limited(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise _too_large()
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _too_large()
    return bytes(body)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object: 415 unless it is declared JSON, 400 unless it parses."""
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the body as application/json, not {request.content_type or 'nothing'}",
        )
    raw = await _read_limited(request)
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as error:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {error}") from error
    if not isinstance(document, dict):
        raise invalid("(body)", "must be a JSON object", "object_type")
    return document


def validate(model: type[Model], document: dict[str, Any]) -> Model:
    """Validate strictly, as JSON: no silent coercion of "5" into 5."""
    try:
        return model.model_validate_json(json.dumps(document), strict=True)
    except ValidationError as error:
        raise validation_failed(error) from error


async def read_model(request: web.Request, model: type[Model]) -> Model:
    return validate(model, await read_json_object(request))


def merge_patch(current: dict[str, Any], patch: dict[str, Any], key_field: str, key: str) -> dict[str, Any]:
    """Top-level merge: each field named in ``patch`` replaces the current one.

    The key may be repeated in the patch but not changed.
    """
    if key_field in patch and patch[key_field] != key:
        raise invalid(key_field, f"cannot be changed (the resource is {key!r})", "immutable")
    merged = {**current, **patch}
    merged.pop(key_field, None)
    return merged
