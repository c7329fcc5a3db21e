"""The IVR as a call application: answers an extension by running a flow.

Wiring (composition root)::

    flows = load_flows(["demo"], prompts)            # at start-up / check-config
    application = IvrApplication(flows["demo"], prompts, bus, lookup_customer,
                                 HoldMusicGateway(prompts), call_log=ivr_calls)
    await application.run(answered_call)
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from ivr.call_log import IvrCallLog
from ivr.engine import (
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


class IvrApplication:
    """Implements ``pbx.calls.manager.CallApplication``; one per extension, shared by its calls."""

    def __init__(self, flow: Flow, prompts: PromptLibrary, bus: EventPublisher,
                 lookup_customer: CustomerLookup | None, enqueue: EnqueueGateway,
                 clock: Callable[[], datetime] = utc_now, *,
                 transfer: TransferGateway | None = None,
                 call_log: IvrCallLog | None = None) -> None:
        self.runner = FlowRunner(flow, prompts, bus, enqueue=enqueue, transfer=transfer,
                                 lookup_customer=lookup_customer, clock=clock, call_log=call_log)

    @property
    def call_log(self) -> IvrCallLog:
        return self.runner.call_log

    async def run(self, call: ApplicationCall) -> None:
        await self.runner.run(call)
