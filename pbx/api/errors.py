"""JSON errors for every failure, and the bearer-token check on every request."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import ValidationError

from pbx.store import (
    AlreadyExists,
    ConstraintViolation,
    InUse,
    MissingReference,
    NotFound,
    StoreError,
)
from router import (
    AgentBusy,
    DuplicateCall,
    InvalidArgument,
    InvalidTransition,
    QueueInUse,
    RouterError,
    UnknownAgent,
    UnknownCall,
    UnknownQueue,
    UnknownReservation,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
}


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message", "fields"?}}`` with ``status``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        fields: Sequence[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = list(fields) if fields is not None else None
        self.headers = headers or {}

    def response(self) -> web.Response:
        detail: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields is not None:
            detail["fields"] = self.fields
        return web.json_response({"error": detail}, status=self.status, headers=self.headers)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


def conflict(code: str, message: str) -> ApiError:
    return ApiError(409, code, message)


def invalid(field: str, message: str, kind: str = "invalid") -> ApiError:
    """A 422 about one field."""
    return ApiError(
        422,
        "validation_failed",
        f"{field}: {message}",
        fields=[{"field": field, "message": message, "type": kind}],
    )


def _field_path(location: Sequence[int | str]) -> str:
    return ".".join(str(part) for part in location) or "(body)"


def validation_failed(error: ValidationError) -> ApiError:
    problems = [
        {"field": _field_path(item["loc"]), "message": item["msg"], "type": item["type"]}
        for item in error.errors(include_url=False)
    ]
    summary = "; ".join(f"{problem['field']}: {problem['message']}" for problem in problems)
    return ApiError(422, "validation_failed", summary, fields=problems)


def _domain_error(error: StoreError | RouterError) -> ApiError:
    """The HTTP answer for a store or router refusal."""
    message = str(error)
    if isinstance(error, MissingReference):
        return invalid(error.field, message, "unknown_reference")
    if isinstance(error, UnknownAgent | UnknownQueue | UnknownCall | UnknownReservation | NotFound):
        return not_found(message)
    if isinstance(error, InvalidArgument):
        return ApiError(422, "validation_failed", message)
    conflicts: tuple[tuple[type[Exception], str], ...] = (
        (AlreadyExists, "already_exists"),
        (InUse, "in_use"),
        (ConstraintViolation, "conflict"),
        (InvalidTransition, "invalid_transition"),
        (AgentBusy, "agent_busy"),
        (QueueInUse, "queue_in_use"),
        (DuplicateCall, "duplicate_call"),
    )
    for kind, code in conflicts:
        if isinstance(error, kind):
            return conflict(code, message)
    if isinstance(error, RouterError):
        return conflict("router_refused", message)
    raise error  # a store failure that is not the client's doing: a 500


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every error, aiohttp's own (404, 405, 413) included, as a JSON error body."""
    try:
        return await handler(request)
    except ApiError as error:
        return error.response()
    except (StoreError, RouterError) as error:
        try:
            return _domain_error(error).response()
        except StoreError:
            log.exception("store failure in %s %s", request.method, request.path)
            return ApiError(500, "internal_error", "internal server error").response()
    except web.HTTPException as error:
        if error.status < 400:
            raise
        headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
        code = _CODES_BY_STATUS.get(error.status, "http_error")
        return ApiError(error.status, code, error.reason, headers=headers).response()
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return ApiError(500, "internal_error", "internal server error").response()


def bearer_token_check(token: str | None) -> Middleware:
    """Middleware requiring ``Authorization: Bearer <token>`` on every request, reads
    included (agents' and customers' data are personal).

    Without a configured token the API is open (the demo, on loopback only). The token is
    compared in constant time and never logged.
    """
    expected = None if token is None else token.encode()

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None:
            scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not presented:
                raise ApiError(
                    401,
                    "unauthorized",
                    "the API needs an Authorization: Bearer <token> header",
                    headers={"WWW-Authenticate": 'Bearer realm="centralita"'},
                )
            if not hmac.compare_digest(presented.strip().encode(), expected):
                raise ApiError(
                    401,
                    "unauthorized",
                    "invalid token",
                    headers={"WWW-Authenticate": 'Bearer realm="centralita", error="invalid_token"'},
                )
        return await handler(request)

    return require_token
