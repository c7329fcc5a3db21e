"""Screen-pop: the caller's context for the agent whose phone rings.

Kept for the API (`GET /api/v1/calls/{id}/context`) and, when a webhook URL is
configured, POSTed as JSON to a CRM. A slow or failing webhook never delays a
call: posts run in the background with a timeout and failures are logged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from events import AgentOffered, CallEnded, EventBus
from events.recent_calls import RecentCalls

log = logging.getLogger("pbx.calls.screen_pop")

WEBHOOK_TIMEOUT_SECONDS = 3.0


class ScreenPop:
    """The contexts of live calls and recently finished ones: at most ``capacity``, a finished
    call's for ``max_age_seconds`` after it ended (the store has them for good)."""

    def __init__(self, bus: EventBus, *, webhook_url: str | None = None, capacity: int = 1000,
                 max_age_seconds: float = 300.0) -> None:
        self.webhook_url = webhook_url
        self.capacity = capacity
        self._contexts: RecentCalls[dict[str, Any]] = RecentCalls(capacity, max_age_seconds)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        bus.subscribe(self._on_offered, AgentOffered)
        bus.subscribe(self._on_call_ended, CallEnded)

    def context(self, call_id: str) -> dict[str, Any]:
        """The latest context offered for `call_id`; KeyError when none."""
        return self._contexts.get(call_id)

    def prune(self) -> int:
        """Drop finished calls' contexts past their age; returns how many went."""
        return self._contexts.prune()

    def __len__(self) -> int:
        return len(self._contexts)

    def _on_call_ended(self, event: CallEnded) -> None:
        self._contexts.finished(event.call_id)

    def _on_offered(self, event: AgentOffered) -> None:
        document = {"call_id": event.call_id, "agent": event.agent, "queue": event.queue,
                    "caller": event.caller, **event.context}
        self._contexts.put(event.call_id, document)
        if self.webhook_url:
            task = asyncio.get_running_loop().create_task(self._post(document))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _post(self, document: dict[str, Any]) -> None:
        assert self.webhook_url is not None
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_SECONDS))
        try:
            async with self._session.post(self.webhook_url, json=document) as response:
                if response.status >= 300:
                    log.warning("screen-pop webhook answered %d for call %s", response.status,
                                document["call_id"])
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("screen-pop webhook failed for call %s: %s", document["call_id"], exc or "timeout")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()
