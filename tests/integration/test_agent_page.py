"""The agent page in a real browser: Debian's Chromium (headless, fake microphone) driven by
Playwright, JsSIP registering over SIP WebSocket, WebRTC media bridged by rtpengine.

An agent signs in, goes available; a SIPp caller presses 1 in the queue menu; the page
shows the screen-pop; the agent answers with the keyboard; audio flows both ways (the
page's WebRTC stats, and rtpengine's counters of what it forwarded towards SIPp); the
agent hangs up and is in wrap-up. Screenshots of each state go to docs/agent-page/.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from integration.test_queue_agents import caller_xml, cc_config, need_sipp
from pbx.media.ng import bdecode
from peers import sipp
from peers.procs import LOOPBACK, free_port, peer_unavailable

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "agent-page"
BROWSER_FLAGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 # rtpengine listens on loopback only here: let WebRTC use it.
                 "--allow-loopback-in-peer-connection", "--no-sandbox"]


def _need_browser():
    if not Path(CHROMIUM).exists():
        peer_unavailable("Debian's chromium is not installed (scripts/install-test-deps)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        peer_unavailable("the playwright package is missing (pip install -e '.[test]')")
    return sync_playwright


def _agent_page_server(pbx_server, rtpengine, *, embedded: bool = False):
    config = yaml.safe_load(cc_config(agents={"1001": {"billing": 5}}, wrap_up=30,
                                      media=None if embedded else rtpengine.media_settings))
    config["routing"]["auto_login"] = False
    ws_port = free_port(udp=False, tcp=True)
    server = pbx_server(yaml.safe_dump(config), extra_args=("--sip-listen", f"ws:{LOOPBACK}:{ws_port}"),
                        sip_trace=True)
    return server, ws_port


def _post(server, path: str, body: dict, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(f"{server.http_url}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _stats_of(rtpengine, call_id: str) -> dict:
    reply = rtpengine.command("query", **{"call-id": call_id})
    return bdecode(reply)  # type: ignore[return-value]


def _packets_received(query: dict, tag: str) -> int:
    side = (query.get("tags") or {}).get(tag) or {}
    return sum(stream.get("stats", {}).get("packets", 0)
               for media in side.get("medias", []) for stream in media.get("streams", []))


def _screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def _wait(predicate, timeout: float, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def test_wrong_password_and_unknown_extension_get_the_same_refusal(pbx_server, rtpengine) -> None:
    server, _ = _agent_page_server(pbx_server, rtpengine, embedded=True)
    wrong = _post(server, "/agent/session", {"extension": "1001", "password": "nope"})
    unknown = _post(server, "/agent/session", {"extension": "9999", "password": "nope"})
    assert wrong == unknown == (401, {"error": {"code": "unauthorized",
                                                "message": "wrong extension or password"}})
    status, body = _post(server, "/agent/session", {"extension": "1001"})
    assert status == 400, body
    status, first = _post(server, "/agent/session", {"extension": "1001", "password": "demo1001"})
    assert status == 200 and first["state"] == "offline" and first["sip_websocket"].startswith("ws://"), first
    # A second sign-in takes over: the first token is no longer accepted.
    status, second = _post(server, "/agent/session", {"extension": "1001", "password": "demo1001"})
    assert status == 200
    assert _post(server, "/agent/state", {"state": "available"}, first["token"])[0] == 401
    status, state = _post(server, "/agent/state", {"state": "break", "reason": ""}, second["token"])
    assert status == 400 and "reason" in state["error"]["message"]
    # No phone registered yet (the page's JsSIP is not running here): refused with why.
    status, state = _post(server, "/agent/state", {"state": "available"}, second["token"])
    assert status == 409 and "not registered" in state["error"]["message"], state
    assert server.alive()


def test_agent_answers_a_queue_call_in_the_browser_with_audio_both_ways(pbx_server, rtpengine, tmp_path) -> None:
    sync_playwright = _need_browser()
    need_sipp()
    server, _ = _agent_page_server(pbx_server, rtpengine)
    started = time.monotonic()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800}, locale="en-GB")
            page.goto(f"{server.http_url}/agent/")
            _screenshot(page, "1-sign-in")
            page.fill("#extension", "1001")
            page.fill("#password", "wrong")
            page.click("#signin-form button[type=submit]")
            page.wait_for_selector("#signin-error:has-text('Wrong extension or password')")
            page.fill("#password", "demo1001")
            page.click("#signin-form button[type=submit]")
            page.wait_for_selector("#phone-state[data-registered=yes]", timeout=15_000)
            page.click("#go-available")
            page.wait_for_selector("#state[data-state=available]")
            _screenshot(page, "2-available")

            caller = sipp.start(server.sip_address, scenario=caller_xml(digit="1", hold_ms=60_000),
                                workdir=tmp_path / "caller", service="100", calls=1, trace_msg=True)
            try:
                page.wait_for_selector("#call-status[data-call=ringing]", timeout=20_000)
                page.wait_for_selector("#screen-pop dd[data-key=queue]:has-text('billing')")
                assert page.text_content("#screen-pop dd[data-key=caller]") == "+34915550001"
                _screenshot(page, "3-ringing-with-screen-pop")

                page.keyboard.press("a")  # the answer shortcut
                page.wait_for_selector("#call-status[data-call=established]", timeout=15_000)
                page.wait_for_selector("#state[data-state=on_call]", timeout=10_000)
                agent_call = page.evaluate("desk.callId")
                first = page.evaluate("desk.audioBytes()")
                assert _wait(lambda: (lambda now: now["received"] > first["received"] + 4000
                                      and now["sent"] > first["sent"] + 4000)(page.evaluate("desk.audioBytes()")),
                             15), f"no WebRTC audio both ways: {page.evaluate('desk.audioBytes()')}"
                # The browser's leg, as rtpengine saw it: packets came from the browser
                # (DTLS-SRTP, decrypted) and from the plain side towards it.
                tags = list(_stats_of(rtpengine, agent_call).get("tags") or {})
                assert len(tags) == 2, tags

                def counts() -> dict[str, int]:
                    query = _stats_of(rtpengine, agent_call)
                    return {tag: _packets_received(query, tag) for tag in tags}

                assert _wait(lambda: all(n > 100 for n in counts().values()), 10), counts()
                page.click("#hold")
                page.wait_for_selector("#call-status:has-text('On hold')")
                _screenshot(page, "4-on-call")
                page.click("#hold")
                page.wait_for_selector("#call-status:has-text('Talking with')")

                page.keyboard.press("h")  # the hang-up shortcut
                page.wait_for_selector("#call-status[data-call=none]", timeout=10_000)
                page.wait_for_selector("#state[data-state=wrap_up]", timeout=10_000)
                page.wait_for_selector("#recent li")
                _screenshot(page, "5-wrap-up")
                result = caller.stop() if caller.process.poll() is None else caller.stop()
                assert result.returncode == 0, result.describe()
            finally:
                if caller.process.poll() is None:
                    caller.stop()
            assert _wait(lambda: agent_call not in rtpengine.call_ids(), 10), "the browser's rtpengine call stayed"

            # Spanish, and a second sign-in elsewhere takes the first page over.
            page.select_option("#lang", "es")
            page.wait_for_selector("#state-title:has-text('Mi estado')")
            other = browser.new_page()
            other.goto(f"{server.http_url}/agent/")
            other.fill("#extension", "1001")
            other.fill("#password", "demo1001")
            other.click("#signin-form button[type=submit]")
            page.wait_for_selector("#notice:has-text('otra página')", timeout=10_000)
            _screenshot(page, "6-taken-over-es")
        finally:
            browser.close()
    print(f"browser scenario took {time.monotonic() - started:.1f} s")
    assert server.alive()


def test_embedded_media_refuses_a_browsers_webrtc_offer_with_the_reason(pbx_server, rtpengine) -> None:
    """With media.engine: embedded, an INVITE from a page (WebRTC SDP) gets 488 and why."""
    import asyncio

    from aiohttp import ClientSession

    server, ws_port = _agent_page_server(pbx_server, rtpengine, embedded=True)
    invite = ("INVITE sip:1002@127.0.0.1 SIP/2.0\r\n"
              "Via: SIP/2.0/WS abc.invalid;branch=z9hG4bK-webrtc-1\r\n"
              "From: <sip:1001@127.0.0.1>;tag=page\r\nTo: <sip:1002@127.0.0.1>\r\n"
              "Call-ID: webrtc-refused\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
              "Contact: <sip:1001@abc.invalid;transport=ws>\r\nContent-Type: application/sdp\r\n")
    sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\n")
    message = f"{invite}Content-Length: {len(sdp)}\r\n\r\n{sdp}"

    async def exchange() -> tuple[str, int]:
        async with ClientSession() as session:
            async with session.get(f"http://{LOOPBACK}:{ws_port}/") as plain:
                refused_status = plain.status
            async with session.ws_connect(f"ws://{LOOPBACK}:{ws_port}/", protocols=("sip",)) as socket:
                await socket.send_str(message)
                reply = await socket.receive(timeout=5)
                return str(reply.data), refused_status

    reply, plain_status = asyncio.run(exchange())
    assert plain_status == 400  # no 'sip' subprotocol
    assert reply.startswith("SIP/2.0 488 "), reply
    assert "WebRTC media needs media.engine: rtpengine" in reply, reply
    assert server.alive()


@pytest.fixture(autouse=True)
def _keep_chromium_quiet(monkeypatch) -> None:
    # Chromium writes crash dumps and caches under $HOME: keep them out of the user's.
    home = Path(os.environ.get("TMPDIR", "/tmp")) / "centralita-chromium-home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    yield
    shutil.rmtree(home, ignore_errors=True)
