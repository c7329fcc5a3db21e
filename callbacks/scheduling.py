"""Which requests are due, in which order, and which one a new request would duplicate.

Line order: higher priority first, then the earlier original enqueue time
(``requested_at``), then the id so no two requests tie. That is the waiting
line's 'strict' order (``router.waiting_line``); when a callback joins a queue's
waiting line, the router ages it from the same ``requested_at``, so it competes
with live callers as if it had never left the line, and never jumps it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from callbacks.requests import CallbackRequest, is_due


def line_key(request: CallbackRequest) -> tuple[int, datetime, str]:
    """Sort key: the smallest is served first."""
    return (-request.priority, request.requested_at, request.id)


def due_in_line_order(requests: Iterable[CallbackRequest], now: datetime) -> list[CallbackRequest]:
    """The requests due at ``now``, first to be served first."""
    return sorted((request for request in requests if is_due(request, now)), key=line_key)


def duplicate_of(requests: Iterable[CallbackRequest], number: str, queue: str) -> CallbackRequest | None:
    """The active request for ``number`` (normalised) in ``queue``, if any: there is at most one."""
    for request in requests:
        if request.active and request.number == number and request.queue == queue:
            return request
    return None
