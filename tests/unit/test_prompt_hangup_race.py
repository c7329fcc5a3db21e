"""A caller hanging up just as a prompt starts, with the real IVR engine and RTP session: an
abandon, not an IVR failure, and no error logged. (The queue's race, a hang-up while the
agent's leg opens, needs the call manager and router together: tests/integration/
test_hangup_races.py.)"""

from __future__ import annotations

import asyncio
import itertools
import logging
from datetime import UTC, datetime

import pytest

from events import EventBus
from events.ivr import IvrFinished, IvrNodeEntered
from ivr.call_log import IvrCallLog
from ivr.engine import EnqueueRequest, FlowRunner, IvrCallInterface
from ivr.flow import load_flows
from pbx.media.ports import PortAllocator
from pbx.media.prompt import PromptLibrary
from pbx.media.stream import RtpSession

_ranges = itertools.count()


class ClosingCall:
    """An IVR call on a real RTP session; `leave()` does what the call manager does on a BYE:
    close the media, then signal the hang-up."""

    def __init__(self, media: RtpSession) -> None:
        self.call_id = "race-1"
        self.caller = "600100200"
        self.digits: asyncio.Queue[str] = asyncio.Queue()
        self.hung_up = asyncio.Event()
        self.media = media

    def leave(self) -> None:
        self.media.close()
        self.hung_up.set()

    def hang_up(self) -> None:
        self.leave()


class NoQueue:
    async def enqueue(self, call: IvrCallInterface, request: EnqueueRequest) -> None:
        raise AssertionError("the caller left before any queue")

    async def transfer(self, call: IvrCallInterface, extension: str, language: str) -> None:
        raise AssertionError("no transfer expected")


@pytest.mark.parametrize("node", ["choose_language", "welcome"])
async def test_hang_up_as_a_prompt_starts_is_an_abandon(node: str, caplog: pytest.LogCaptureFixture) -> None:
    prompts = PromptLibrary()
    flow = load_flows(["demo"], prompts)["demo"]
    base = 43000 + 20 * (next(_ranges) % 50)
    ports = PortAllocator("127.0.0.1", base, base + 19)
    media = await RtpSession.open(ports, remote=("127.0.0.1", 9))
    call = ClosingCall(media)
    if node != "choose_language":
        call.digits.put_nowait("1")  # English, typed ahead: the language prompt is skipped
    bus = EventBus()
    finished: list[IvrFinished] = []
    bus.subscribe(finished.append, IvrFinished)
    # The BYE lands between entering the node and starting its prompt: the same loop turn.
    bus.subscribe(lambda event: call.leave() if event.node == node else None, IvrNodeEntered)
    runner = FlowRunner(flow, prompts, bus, enqueue=NoQueue(), call_log=IvrCallLog(10),
                        clock=lambda: datetime(2025, 3, 3, 12, 0, tzinfo=UTC))
    caplog.set_level(logging.INFO)
    record = await asyncio.wait_for(runner.run(call), 10)
    assert record.outcome == "abandoned"
    assert [event.outcome for event in finished] == ["abandoned"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    await asyncio.sleep(0.05)
    assert ports.in_use == 0 and ports.sessions_open == 0
