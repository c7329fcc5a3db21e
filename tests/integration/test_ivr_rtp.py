"""The IVR engine driving a real RtpSession on loopback, with a caller sending RFC 4733 digits.

No SIP here: two RtpSessions face each other, one driven by the demo flow, the
other playing the caller. Proves that prompt audio leaves the engine's session
and that the caller's telephone-events choose the branch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from events import EventBus
from ivr.call_log import IvrCallLog
from ivr.engine import HoldMusicGateway
from ivr.flow import load_flows
from pbx.calls.ivr_application import IvrApplication
from pbx.media.g711 import codec_by_name
from pbx.media.ports import PortAllocator
from pbx.media.prompt import PromptLibrary
from pbx.media.stream import RtpSession

pytestmark = pytest.mark.integration
TELEPHONE_EVENT_PT = 101


class RtpBackedCall:
    """The slice of ``ApplicationCall`` the IVR uses, over a real RtpSession."""

    def __init__(self, media: RtpSession) -> None:
        self.call_id = "rtp-call-1"
        self.caller = "600100200"
        self.media = media
        self.digits: asyncio.Queue[str] = asyncio.Queue()
        self.hung_up = asyncio.Event()
        media.on_dtmf = self.digits.put_nowait

    def hang_up(self) -> None:
        self.hung_up.set()


async def until(condition: Callable[[], bool], what: str, limit: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_demo_flow_over_rtp_spanish_then_billing() -> None:
    prompts = PromptLibrary()
    flow = load_flows(["demo"], prompts)["demo"]
    ports = PortAllocator("127.0.0.1", 41000, 41100)
    ivr_side = await RtpSession.open(ports, telephone_event_payload_type=TELEPHONE_EVENT_PT)
    caller_side = await RtpSession.open(ports, remote=ivr_side.local_address,
                                        telephone_event_payload_type=TELEPHONE_EVENT_PT)
    ivr_side.configure(caller_side.local_address, telephone_event_payload_type=TELEPHONE_EVENT_PT)
    heard: list[bytes] = []
    caller_side.on_audio = heard.append

    bus = EventBus()
    log = IvrCallLog()
    application = IvrApplication(flow, prompts, bus, None, HoldMusicGateway(prompts),
                                 call_log=log)
    call = RtpBackedCall(ivr_side)
    running = asyncio.ensure_future(application.run(call))  # type: ignore[arg-type]
    try:
        await until(lambda: len(heard) >= 10, "the language prompt's audio")
        choose_language = prompts.get("common/choose_language").frames("PCMU")
        pcmu = codec_by_name("PCMU")
        assert heard[0] == pcmu.decode(choose_language[0])
        caller_side.send_dtmf("2")
        await until(lambda: "main_menu" in log.record(call.call_id).nodes, "the main menu")
        received_before_menu = len(heard)
        await until(lambda: len(heard) >= received_before_menu + 10, "the menu's audio")
        caller_side.send_dtmf("1")
        await until(lambda: log.get(call.call_id)["queue"] is not None, "the enqueue")
        record = log.get(call.call_id)
        assert record["language"] == "es"
        assert record["queue"] == "billing"
        assert [step["node"] for step in record["path"]] == [
            "lookup", "choose_language", "welcome", "main_menu", "billing_queue"]
        assert [(d["node"], d["digit"]) for d in record["digits"]] == [
            ("choose_language", "2"), ("main_menu", "1")]
        # Spanish "please hold" follows: its first frame reaches the caller.
        please_hold = pcmu.decode(prompts.get("es/please_hold").frames("PCMU")[0])
        await until(lambda: please_hold in heard, "the Spanish please_hold prompt")
        assert not running.done()  # on hold until the caller hangs up
        call.hung_up.set()
        await asyncio.wait_for(running, 5)
        assert log.get(call.call_id)["outcome"] == "enqueued"
    finally:
        running.cancel()
        caller_side.close()
        ivr_side.close()
