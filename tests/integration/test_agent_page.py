"""The agent page in a real browser: Debian's Chromium (headless, fake microphone) driven by
Playwright, JsSIP registering over SIP WebSocket, WebRTC media bridged by rtpengine.

An agent signs in, goes available; a SIPp caller presses 1 in the queue menu; the page
shows the screen-pop; the agent answers with the keyboard; audio flows both ways: the
browser's microphone is a tone and the caller's media port (agent_page_audio.CallerMedia)
hears that tone, while the caller's own tone is what the page plays (its WebRTC stats and
a frequency analysis of the remote stream); mute silences the agent for the caller and the
keypad's digits reach the caller; the agent transfers or hangs up and is in wrap-up; the
recent calls come from the call records. Screenshots of each state go to a temporary
folder, or to the README's docs/agent-page/ with CENTRALITA_SCREENSHOTS=docs/agent-page.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from integration.agent_page_audio import (
    BROWSER_TONE_SHARES,
    CallerMedia,
    tone_share,
    write_tone_wav,
)
from integration.test_queue_agents import agent_state, caller_xml, cc_config, need_sipp, wait_until
from pbx.agent_desk.app import PHONE_BUNDLE
from pbx.media.ng import bdecode
from peers import sipp
from peers.procs import LOOPBACK, free_port, peer_unavailable

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
# The README's pictures are refreshed only when asked, so a test run leaves the tree clean.
SCREENSHOTS = Path(os.environ.get("CENTRALITA_SCREENSHOTS")
                   or Path(tempfile.gettempdir()) / f"centralita-agent-page-{os.getpid()}")
BROWSER_FLAGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 # rtpengine listens on loopback only here: let WebRTC use it.
                 "--allow-loopback-in-peer-connection", "--no-sandbox",
                 # The remote audio plays, and can be analysed, without a click on the page.
                 "--autoplay-policy=no-user-gesture-required",
                 # The wss listener's certificate is self-signed (made by the server under test).
                 "--ignore-certificate-errors"]
# Two tones far from each other, from the DTMF frequencies and from the menu prompt's voice.
AGENT_HZ, CALLER_HZ = 1000, 440
CALLER_NUMBER = "+34915550001"  # caller_xml's
# The queue menu after a customer lookup: a known caller's tier and last agent reach the screen-pop.
LOOKUP_FLOW = Path(__file__).resolve().parent / "flows" / "queue_lookup.yaml"
HEARD, SILENT = 0.5, 0.1  # share of the audio's energy at a tone


def _need_browser():
    if not Path(CHROMIUM).exists():
        peer_unavailable("Debian's chromium is not installed (scripts/install-test-deps)")
    if not PHONE_BUNDLE.is_file():
        peer_unavailable(f"the agent page's phone {PHONE_BUNDLE} is not built (scripts/build-agent-page)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        peer_unavailable("the playwright package is missing (pip install -e '.[test]')")
    return sync_playwright


def _agent_page_server(pbx_server, rtpengine, *, embedded: bool = False, rtp_timeout: float = 60,
                       agents: dict[str, dict[str, int]] | None = None, websocket: str = "ws"):
    """A server with a SIP WebSocket listener, `ws` or `wss` (its certificate is the one the
    server makes for itself: the browser is told to accept it)."""
    config = yaml.safe_load(cc_config(agents=agents or {"1001": {"billing": 5}}, wrap_up=30,
                                      rtp_timeout=rtp_timeout,
                                      media=None if embedded else rtpengine.media_settings))
    config["routing"]["auto_login"] = False
    config["extensions"]["100"]["flow"] = str(LOOKUP_FLOW)
    ws_port = free_port(udp=False, tcp=True)
    server = pbx_server(yaml.safe_dump(config), extra_args=("--sip-listen", f"{websocket}:{LOOPBACK}:{ws_port}"),
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


def _get(server, path: str, token: str | None) -> tuple[int, dict]:
    request = urllib.request.Request(f"{server.http_url}{path}",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _known_caller(server) -> None:
    """The SIPp callers' number as a VIP customer (the last agent comes with answered calls)."""
    status, body = _post(server, "/api/v1/customers", {"number": CALLER_NUMBER, "name": "Ana Ruiz", "tier": "vip"})
    assert status == 201, body


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
    assert first["webrtc_media"] is False  # the embedded engine: the page says its phone cannot work
    # A second sign-in takes over: the first token is no longer accepted.
    status, second = _post(server, "/agent/session", {"extension": "1001", "password": "demo1001"})
    assert status == 200
    assert _post(server, "/agent/state", {"state": "available"}, first["token"])[0] == 401
    status, state = _post(server, "/agent/state", {"state": "break", "reason": ""}, second["token"])
    assert status == 400 and "reason" in state["error"]["message"]
    # No phone registered yet (the page's JsSIP is not running here): refused with why.
    status, state = _post(server, "/agent/state", {"state": "available"}, second["token"])
    assert status == 409 and "not registered" in state["error"]["message"], state
    # Password guessing: after sip.protection.auth_failures (10) failures from one address,
    # it is refused for a while, even with the right password.
    for _ in range(8):
        assert _post(server, "/agent/session", {"extension": "1001", "password": "guess"})[0] == 401
    status, body = _post(server, "/agent/session", {"extension": "1001", "password": "demo1001"})
    assert status == 429 and body["error"]["code"] == "too_many_failures", body
    assert server.alive()


def _launch(playwright, folder: Path):
    """Chromium whose microphone plays the agent's tone."""
    microphone = write_tone_wav(folder / "agent-tone.wav", AGENT_HZ)
    return playwright.chromium.launch(executable_path=CHROMIUM,
                                      args=[*BROWSER_FLAGS, f"--use-file-for-fake-audio-capture={microphone}"])


def _sign_in(page, server, *, password: str = "demo1001", extension: str = "1001") -> None:
    page.goto(f"{server.http_url}/agent/")
    page.fill("#extension", extension)
    page.fill("#password", password)
    page.click("#signin-form button[type=submit]")


def _go_available(page) -> None:
    page.wait_for_selector("#phone-state[data-registered=yes]", timeout=15_000)
    page.click("#go-available")
    page.wait_for_selector("#state[data-state=available]")


def _caller(server, workdir: Path, hold_ms: int) -> sipp.SippProcess:
    return sipp.start(server.sip_address, scenario=caller_xml(digit="1", hold_ms=hold_ms),
                      workdir=workdir, service="100", calls=1, trace_msg=True)


def _caller_with_ears(server, workdir: Path, hold_ms: int) -> tuple[sipp.SippProcess, CallerMedia]:
    """A SIPp caller whose SDP names a CallerMedia port: SIPp signals, the CallerMedia plays
    the caller's tone and digit 1 (the queue menu's billing) and keeps what the caller hears."""
    media = CallerMedia(CALLER_HZ, digit="1")
    scenario = caller_xml(digit="1", hold_ms=hold_ms, play_audio=False)
    dtmf_from_sipp = '<nop><action><exec play_pcap_audio="pcap/dtmf_2833_1.pcap"/></action></nop>'
    assert dtmf_from_sipp in scenario and "[auto_media_port]" in scenario
    scenario = scenario.replace(dtmf_from_sipp, "").replace("[auto_media_port]", str(media.port))
    try:
        return sipp.start(server.sip_address, scenario=scenario, workdir=workdir, service="100",
                          calls=1, trace_msg=True), media
    except BaseException:
        media.close()
        raise


def _caller_hears(media: CallerMedia, frequency: float, seconds: float = 0.6) -> float:
    """The share of `frequency` in what reached the caller over the last `seconds`."""
    return tone_share(media.audio_since(time.monotonic() - seconds), frequency)


def _page_hears(page) -> dict[str, float]:
    return page.evaluate(BROWSER_TONE_SHARES, [CALLER_HZ, AGENT_HZ]) or {}


def _audio_both_ways(page, media: CallerMedia) -> None:
    """The caller hears the agent's microphone and the page plays the caller's tone."""
    assert wait_until(lambda: _caller_hears(media, AGENT_HZ) > HEARD, 15), (
        f"the caller does not hear the agent's {AGENT_HZ} Hz: share {_caller_hears(media, AGENT_HZ):.2f}, "
        f"payload types {media.payload_types_since(time.monotonic() - 1)}")
    assert wait_until(lambda: _page_hears(page).get(str(CALLER_HZ), 0) > HEARD, 15), (
        f"the page does not play the caller's {CALLER_HZ} Hz: {_page_hears(page)}")


def _answer(page) -> str:
    """Answer the ringing call by keyboard; the SIP Call-ID of the agent's leg."""
    page.wait_for_selector("#call-status[data-call=ringing]", timeout=20_000)
    page.keyboard.press("a")  # the answer shortcut
    page.wait_for_selector("#call-status[data-call=established]", timeout=15_000)
    page.wait_for_selector("#state[data-state=on_call]", timeout=10_000)
    return str(page.evaluate("desk.callId"))


def _finished(caller: sipp.SippProcess, timeout: float) -> sipp.SippResult:
    assert wait_until(lambda: caller.process.poll() is not None, timeout), "the SIPp caller is still in its call"
    return caller.stop()


def test_agent_answers_a_queue_call_in_the_browser_with_audio_both_ways_and_transfers_it(
        pbx_server, rtpengine, tmp_path) -> None:
    sync_playwright = _need_browser()
    need_sipp()
    server, _ = _agent_page_server(pbx_server, rtpengine)
    with sync_playwright() as playwright:
        browser = _launch(playwright, tmp_path)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800}, locale="en-GB")
            page.goto(f"{server.http_url}/agent")  # redirected to /agent/
            assert page.url.endswith("/agent/")
            _screenshot(page, "1-sign-in")
            _sign_in(page, server, password="wrong")
            page.wait_for_selector("#signin-error:has-text('Wrong extension or password')")
            page.fill("#password", "demo1001")
            page.click("#signin-form button[type=submit]")
            _go_available(page)
            _screenshot(page, "2-available")

            # The caller waits up to 30 s for a BYE after its audio, then hangs up itself:
            # once transferred to a queue with nobody in it, that is how its call ends.
            _known_caller(server)
            caller, media = _caller_with_ears(server, tmp_path / "caller", hold_ms=30_000)
            try:
                page.wait_for_selector("#call-status[data-call=ringing]", timeout=20_000)
                page.wait_for_selector("#screen-pop dd[data-key=queue]:has-text('billing')")
                pop = {key: page.text_content(f"#screen-pop dd[data-key={key}]")
                       for key in ("caller", "language", "ivr", "tier", "priority", "routing")}
                assert pop["caller"] == CALLER_NUMBER and pop["language"] == "en" and pop["tier"] == "vip", pop
                assert pop["ivr"].startswith("queue_lookup: lookup → menu") and pop["ivr"].endswith("(1)"), pop
                assert int(pop["priority"]) > 0 and pop["routing"].startswith("longest_idle · 1001"), pop
                _screenshot(page, "3-ringing-with-screen-pop")

                agent_call = _answer(page)
                first = page.evaluate("desk.audioBytes()")
                assert wait_until(lambda: (lambda now: now["received"] > first["received"] + 4000
                                      and now["sent"] > first["sent"] + 4000)(page.evaluate("desk.audioBytes()")),
                             15), f"no WebRTC audio both ways: {page.evaluate('desk.audioBytes()')}"
                _audio_both_ways(page, media)
                caller_call_id = page.evaluate("desk.offer.call_id")
                # rtpengine's counters: the browser's leg received packets on both sides
                # (from the browser, DTLS-SRTP; from the caller's side, plain RTP), and the
                # caller's own rtpengine call forwarded the agent's audio towards the caller.
                calls = rtpengine.call_ids()
                assert agent_call in calls and len(calls) == 2, calls
                caller_call = next(call for call in calls if call != agent_call)

                def counts(call_id: str) -> dict[str, int]:
                    query = _stats_of(rtpengine, call_id)
                    return {tag: _packets_received(query, tag) for tag in query.get("tags") or {}}

                assert wait_until(lambda: len(counts(agent_call)) == 2
                             and all(n > 100 for n in counts(agent_call).values()), 10), counts(agent_call)
                assert wait_until(lambda: counts(caller_call).get("inside", 0) > 100, 10), counts(caller_call)

                # On hold the caller no longer hears the agent; resumed, they do again.
                page.click("#hold")
                page.wait_for_selector("#call-status:has-text('On hold')")
                _screenshot(page, "4-on-call")
                assert wait_until(lambda: _caller_hears(media, AGENT_HZ) < SILENT, 10), (
                    f"on hold, the caller still hears the agent: share {_caller_hears(media, AGENT_HZ):.2f}")
                page.click("#hold")
                page.wait_for_selector("#call-status:has-text('Talking with')")
                assert wait_until(lambda: _caller_hears(media, AGENT_HZ) > HEARD, 10), (
                    f"resumed, the caller does not hear the agent: share {_caller_hears(media, AGENT_HZ):.2f}")

                page.fill("#transfer-target", "support")
                page.click("#transfer")
                page.wait_for_selector("#call-status[data-call=none]", timeout=15_000)
                page.wait_for_selector("#state[data-state=wrap_up]", timeout=10_000)
                page.wait_for_selector("#state-detail:has-text('wrap-up left')")
                page.wait_for_selector("#recent li")
                _screenshot(page, "5-wrap-up")
                live = json.loads(server.http_get("/api/v1/calls/live")[1])
                assert [call.get("queue") for call in live] == ["support"], live
                result = _finished(caller, 45)
                assert result.returncode == 0, result.describe()
            finally:
                media.close()
                if caller.process.poll() is None:
                    caller.stop()
            assert wait_until(lambda: not rtpengine.call_ids(), 10), rtpengine.call_ids()

            # Spanish, and a second sign-in elsewhere takes the first page over.
            page.select_option("#lang", "es")
            page.wait_for_selector("#state-title:has-text('Mi estado')")
            other = browser.new_page()
            _sign_in(other, server)
            page.wait_for_selector("#notice:has-text('otra página')", timeout=10_000)
            _screenshot(page, "6-taken-over-es")
            # The new sign-in's recent calls come from the call records: the call just handled.
            other.wait_for_selector(f"#recent li[data-call-id='{caller_call_id}']:has-text('{CALLER_NUMBER}')",
                                    timeout=15_000)
        finally:
            browser.close()
    assert server.alive()


def test_mute_keypad_and_transfer_to_an_account_reach_the_caller_and_recent_calls_are_the_records(
        pbx_server, rtpengine, tmp_path) -> None:
    sync_playwright = _need_browser()
    need_sipp()
    # Over wss this time (the other tests use ws): the page's phone picks it by itself.
    server, _ = _agent_page_server(pbx_server, rtpengine, agents={"1001": {"billing": 5}, "1002": {"support": 5}},
                                   websocket="wss")
    with sync_playwright() as playwright:
        browser = _launch(playwright, tmp_path)
        try:
            page = browser.new_page()
            _sign_in(page, server)
            _go_available(page)
            # Agent 1002's page, signed in but not available: its account can still be called.
            colleague = browser.new_page()
            _sign_in(colleague, server, extension="1002", password="demo1002")
            colleague.wait_for_selector("#phone-state[data-registered=yes]", timeout=15_000)
            assert page.evaluate("desk.ua._transport.socket.url").startswith("wss://")
            caller, media = _caller_with_ears(server, tmp_path / "caller", hold_ms=60_000)
            try:
                _answer(page)
                caller_call_id = page.evaluate("desk.offer.call_id")
                _audio_both_ways(page, media)

                # Mute: what reaches the caller goes silent (or stops), and comes back on unmute.
                page.click("#mute")
                assert page.get_attribute("#mute", "aria-pressed") == "true"
                assert wait_until(lambda: _caller_hears(media, AGENT_HZ) < SILENT, 10), (
                    f"muted, the caller still hears the agent: share {_caller_hears(media, AGENT_HZ):.2f}")
                muted_at = time.monotonic()
                time.sleep(1.5)  # a while muted
                # Chromium keeps sending, silence (A-law's quietest codes): no packets would do too.
                muted = media.audio_since(muted_at)
                assert max(map(abs, muted), default=0) < 256, (
                    f"muted, the caller got sound: peak {max(map(abs, muted))}, "
                    f"share of the agent's tone {tone_share(muted, AGENT_HZ):.2f}")
                page.click("#mute")
                assert page.get_attribute("#mute", "aria-pressed") == "false"
                assert wait_until(lambda: _caller_hears(media, AGENT_HZ) > HEARD, 10), (
                    f"unmuted, the caller does not hear the agent: share {_caller_hears(media, AGENT_HZ):.2f}")

                # The keypad: RFC 4733 events from the browser, through both rtpengine calls,
                # reach the caller as the digits pressed, in order.
                keyed_at = time.monotonic()
                for key in "42#":
                    page.click(f"#keypad button:text-is('{key}')")
                assert wait_until(lambda: media.digits_since(keyed_at) == "42#", 10), (
                    f"the caller got digits {media.digits_since(keyed_at)!r}, payload types "
                    f"{media.payload_types_since(keyed_at)}")

                # Blind transfer to an account: 1002's page rings, answers by keyboard, and the
                # caller and 1002 hear each other; 1001 is in wrap-up; 1002 hangs up.
                page.fill("#transfer-target", "1002")
                page.click("#transfer")
                page.wait_for_selector("#call-status[data-call=none]", timeout=15_000)
                page.wait_for_selector("#state[data-state=wrap_up]", timeout=10_000)
                colleague.wait_for_selector("#call-status[data-call=ringing]", timeout=20_000)
                colleague.keyboard.press("a")
                colleague.wait_for_selector("#call-status[data-call=established]", timeout=15_000)
                _audio_both_ways(colleague, media)
                colleague.keyboard.press("h")
                assert _finished(caller, 15).returncode == 0
            finally:
                media.close()
                if caller.process.poll() is None:
                    caller.stop()
            colleague.close()

            # Reloaded, the page knows nothing; signed in again, its recent calls are read
            # from the call records, with the agent's token.
            page.reload()
            _sign_in(page, server)
            recent = page.wait_for_selector(f"#recent li[data-call-id='{caller_call_id}']", timeout=15_000)
            assert CALLER_NUMBER in recent.text_content() and "billing" in recent.text_content()
            token = page.evaluate("desk.token")
            status, body = _get(server, "/agent/calls", token)
            assert status == 200 and [call["call_id"] for call in body["calls"]] == [caller_call_id], body
            assert body["calls"][0]["disposition"] == "transferred" and body["calls"][0]["talk_seconds"] > 0, body
            page.click("#sign-out")
            page.wait_for_selector("#signin-form", state="visible")
            assert wait_until(lambda: agent_state(server, "1001") == "offline", 10), agent_state(server, "1001")
        finally:
            browser.close()
    # Only one's own calls (the record is 1001's, who answered it), and only with a token.
    assert _get(server, "/agent/calls", None)[0] == 401
    assert _get(server, "/agent/calls", "not-a-token")[0] == 401
    status, other = _post(server, "/agent/session", {"extension": "1002", "password": "demo1002"})
    assert status == 200, other
    assert _get(server, "/agent/calls", other["token"]) == (200, {"calls": []})
    assert server.alive()


def test_dropped_event_stream_recovers_and_a_page_gone_mid_call_leaves_nothing_stuck(
        pbx_server, rtpengine, tmp_path) -> None:
    sync_playwright = _need_browser()
    need_sipp()
    server, _ = _agent_page_server(pbx_server, rtpengine, rtp_timeout=5)
    with sync_playwright() as playwright:
        browser = _launch(playwright, tmp_path)
        try:
            _known_caller(server)
            page = browser.new_page()
            _sign_in(page, server)
            _go_available(page)
            page.select_option("#break-reason", "training")
            page.click("#go-break")
            page.wait_for_selector("#state[data-state=break]")
            assert page.text_content("#state-detail") == "training"
            _go_available(page)

            # The live-update WebSocket drops: the page reconnects and sees what changed
            # elsewhere (a supervisor putting the agent on a break through the API).
            page.evaluate("desk.events.close()")
            page.wait_for_function("desk.events.readyState === WebSocket.OPEN && desk.retry === 0")
            status, _ = _post(server, "/api/v1/agents/1001/break", {"reason": "coaching"})
            assert status == 200
            page.wait_for_selector("#state[data-state=break]")
            assert page.text_content("#state-detail") == "coaching"
            page.click("#go-available")
            page.wait_for_selector("#state[data-state=available]")

            # The phone's SIP WebSocket drops (closed under JsSIP, as a network would): the page
            # says so; the router takes the agent offline, as for any phone that unregisters;
            # JsSIP connects and registers again, the page puts the agent back to available,
            # and the next call reaches it.
            page.evaluate("desk.ua._transport.socket._ws.close()")
            page.wait_for_selector("#phone-state[data-registered=no]:has-text('reconnecting')", timeout=10_000)
            page.wait_for_selector("#state[data-state=offline]")  # JsSIP waits at least 2 s to reconnect
            page.wait_for_selector("#phone-state[data-registered=yes]", timeout=30_000)
            page.wait_for_selector("#state[data-state=available]")
            assert wait_until(lambda: agent_state(server, "1001") == "available", 10), agent_state(server, "1001")

            # Hang up by keyboard.
            caller = _caller(server, tmp_path / "caller1", hold_ms=60_000)
            try:
                _answer(page)
                page.keyboard.press("h")  # the hang-up shortcut
                page.wait_for_selector("#state[data-state=wrap_up]", timeout=10_000)
                assert _finished(caller, 15).returncode == 0
            finally:
                if caller.process.poll() is None:
                    caller.stop()
            page.click("#go-available")
            page.wait_for_selector("#state[data-state=available]")

            # The page vanishes mid-call: the caller is hung up after the RTP timeout, the
            # agent's registration goes with its WebSocket, and no state is left stuck.
            caller = _caller(server, tmp_path / "caller2", hold_ms=60_000)
            try:
                # The same customer again: the screen-pop names who served them last.
                page.wait_for_selector("#screen-pop dd[data-key=last_agent]:has-text('1001')", timeout=20_000)
                _answer(page)
                page.close()
                result = _finished(caller, 30)
                assert result.returncode == 0, result.describe()  # it got a BYE
            finally:
                if caller.process.poll() is None:
                    caller.stop()
        finally:
            browser.close()
    agent = json.loads(server.http_get("/api/v1/agents/1001")[1])
    assert agent["live"]["state"] != "on_call" and agent["live"]["reachable"] is False, agent
    assert wait_until(lambda: server.metric("centralita_sip_dialogs_active") == 0.0, 15)
    assert wait_until(lambda: not rtpengine.call_ids(), 10), rtpengine.call_ids()
    assert "registration(s) over the WS connection" in server.log_text()
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
