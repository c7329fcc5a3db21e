"""The IVR as a call application: answers an extension by running a flow.

Wiring (composition root)::

    flows = load_flows(["demo"], prompts)            # at start-up / check-config
    application = IvrApplication(flows["demo"], prompts, bus, lookup_customer,
                                 HoldMusicGateway(prompts), call_log=ivr_calls,
                                 callbacks=DeskCallbacks(router, lambda: desk))
    await application.run(answered_call)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from callbacks import CallbackDesk, InvalidNumber, normalize_number
from ivr.call_log import IvrCallLog
from ivr.engine import (
    CallbackAnswer,
    CallbackBooking,
    CallbackGateway,
    CallbackOrder,
    CustomerLookup,
    EnqueueGateway,
    EventPublisher,
    FlowRunner,
    TransferGateway,
    utc_now,
)
from ivr.flow import Flow
from pbx.calls.manager import ApplicationCall
from pbx.media.prompt import PromptLibrary
from router import Router, RouterError

log = logging.getLogger("pbx.calls.ivr_application")


class IvrApplication:
    """Implements ``pbx.calls.manager.CallApplication``; one per extension, shared by its calls."""

    def __init__(self, flow: Flow, prompts: PromptLibrary, bus: EventPublisher,
                 lookup_customer: CustomerLookup | None, enqueue: EnqueueGateway,
                 clock: Callable[[], datetime] = utc_now, *,
                 transfer: TransferGateway | None = None,
                 call_log: IvrCallLog | None = None,
                 callbacks: CallbackGateway | None = None) -> None:
        self.runner = FlowRunner(flow, prompts, bus, enqueue=enqueue, transfer=transfer,
                                 lookup_customer=lookup_customer, clock=clock, call_log=call_log,
                                 callbacks=callbacks)

    @property
    def call_log(self) -> IvrCallLog:
        return self.runner.call_log

    async def run(self, call: ApplicationCall) -> None:
        await self.runner.run(call)


class DeskCallbacks:
    """The IVR's ``CallbackGateway``: numbers judged by ``callbacks.numbers``, waits estimated
    by the router, requests booked at this site's ``CallbackDesk`` (which exists once the
    store is open: ``desk`` returns it, or None before)."""

    def __init__(self, router: Router, desk: Callable[[], CallbackDesk | None]) -> None:
        self.router = router
        self.desk = desk

    def number_problem(self, number: str) -> str | None:
        try:
            normalize_number(number)
        except InvalidNumber as error:
            return error.problem.value
        return None

    def estimated_wait(self, queue: str, call_id: str) -> float | None:
        """The caller's own estimate while they wait in line, else one joining the queue now."""
        try:
            return self.router.ewt(call_id)
        except RouterError:
            pass
        try:
            return self.router.queue_stats(queue).ewt_seconds
        except RouterError:
            return None

    async def request_callback(self, order: CallbackOrder) -> CallbackAnswer:
        desk = self.desk()
        if desk is None:
            return CallbackAnswer(CallbackBooking.NOT_BOOKED)
        enqueued_at = (None if order.enqueued_at is None
                       else datetime.fromtimestamp(order.enqueued_at, UTC))
        try:
            request, new = await desk.request(order.number, order.queue, priority=order.priority,
                                              requested_at=enqueued_at,
                                              origin_call_id=order.call_id)
        except InvalidNumber as error:
            return CallbackAnswer(CallbackBooking.INVALID_NUMBER, problem=error.problem.value)
        except Exception:
            log.exception("call %s: cannot book a callback to %s in %s", order.call_id,
                          order.number, order.queue)
            return CallbackAnswer(CallbackBooking.NOT_BOOKED)
        log.info("call %s: callback %s %s for %s in %s", order.call_id, request.id,
                 "booked" if new else "already pending", request.number, order.queue)
        return CallbackAnswer(CallbackBooking.BOOKED if new else CallbackBooking.ALREADY_PENDING,
                              request.number, request_id=request.id)

    async def withdraw_callback(self, request_id: str, reason: str) -> None:
        desk = self.desk()
        if desk is None:
            return
        try:
            cancelled = await desk.cancel(request_id, reason)
        except Exception:
            log.exception("cannot withdraw callback %s (%s)", request_id, reason)
            return
        if cancelled is not None:
            log.info("callback %s withdrawn: %s", request_id, reason)
