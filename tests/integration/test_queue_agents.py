"""Queue to agent, end to end on loopback: callers go through the IVR into a queue and reach
agents on three independent SIP stacks (SIPp, baresip, pyVoIP), and audio flows both ways.

Every agent registers with digest authentication (MD5: baresip 1.0.0 and pyVoIP cannot do
SHA-256) and is logged in by the registration (``routing.auto_login``); every agent phone
auto-answers. The IVR is ``flows/queue_menu.yaml``: one short prompt, RFC 2833 ``1`` ->
queue ``billing``, ``2`` -> ``support``, no digit hangs up (so a lost digit cannot reach an
agent by accident).

How "audio flows both ways" is judged, on what the peers themselves received:

- the caller is baresip: it dials 100, presses 1 over ctrl_tcp (``sndcode``, RFC 2833) and
  plays a 600 Hz tone; its ``sndfile`` dump is the audio it decoded from the RTP it got;
- baresip agent: plays 1500 Hz. Its dump must hold the caller's 600 Hz, and the caller's
  dump, after the agent answered, must hold 1500 Hz (no prompt of the server is 1500 Hz);
- SIPp agent: runs with ``-rtp_echo`` (sends back every RTP packet it receives). The caller's
  dump after the answer must hold its own 600 Hz: that audio went caller -> server -> SIPp
  agent -> server -> caller, which proves both directions through the agent's leg (the
  server never loops a caller's audio back by itself);
- pyVoIP agent: counts the RTP packets it received and the non-silent bytes in them (the
  caller's tone). pyVoIP sends RTP with silence in it; the caller must keep decoding audio
  after the answer and that audio must be silence, not the hold music: the caller hears the
  agent's leg.

Plus SIPp callers (``play_pcap_audio`` of SIPp's ``dtmf_2833_1.pcap``, then 7 s of A-law)
reaching each agent stack, the agent receiving that audio where the stack can tell.

The helpers here (config, SIPp scenarios, phones, polling) are shared with
test_queue_scenarios.py.
"""

from __future__ import annotations

import json
import math
import struct
import time
import urllib.parse
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from integration.rtpengine_fixture import assert_bridged_through_rtpengine
from peers import sipp
from peers.baresip import Account, Baresip, write_tone_wav
from peers.pjsua_phone import PjsuaPhone
from peers.procs import LOOPBACK, free_port, peer_unavailable, require_binary
from peers.pyvoip_phone import PyVoipPhone

pytestmark = pytest.mark.integration

FLOW = Path(__file__).resolve().parent / "flows" / "queue_menu.yaml"
CALLER_TONE = 600.0
AGENT_TONE = 1500.0
CALLER_ACCOUNT = ("1009", "demo1009")  # a plain account (not an agent) for baresip callers

# extension -> (skills, languages)
AGENT_PROFILES: dict[str, dict[str, int]] = {
    "1001": {"billing": 8},
    "1002": {"support": 8},   # no billing skill at all
    "1003": {"billing": 7},
    "1004": {"support": 9},
    "1005": {"billing": 6},
    "1006": {"support": 6},
}


# ---------------------------------------------------------------------------- configuration

def password(user: str) -> str:
    return f"demo{user}"


def cc_config(*, ring_timeout: float = 15, wrap_up: float = 2, max_wait: float = 600,
              agents: dict[str, dict[str, int]] | None = None, rtp_timeout: float = 60,
              media: dict[str, str] | None = None) -> str:
    """Server YAML: accounts 1001-1010, the agents above (auto-login), queues billing and
    support, flows/queue_menu.yaml on 100, MD5 digest only (for baresip and pyVoIP);
    `media`: more media keys (the engine: the ``media_engine`` fixture)."""
    agents = AGENT_PROFILES if agents is None else agents
    queue = {"strategy": "longest_idle", "wrap_up_seconds": wrap_up,
             "ring_timeout_seconds": ring_timeout, "max_wait_seconds": max_wait}
    config = {
        "sip": {"listen": [f"{LOOPBACK}:5060"], "realm": "centralita", "trace": False,
                "min_expires": 60, "max_expires": 3600, "default_expires": 600,
                "digest_algorithms": ["MD5"]},
        "media": {"host": LOOPBACK, "port_min": 20000, "port_max": 29999,
                  "codecs": ["PCMU", "PCMA"], "rtp_timeout": rtp_timeout, **(media or {})},
        "http": {"listen": f"{LOOPBACK}:8080", "api_token": None},
        "store": {"url": None},
        "accounts": [{"user": str(n), "password": password(str(n)), "name": f"User {n}"}
                     for n in range(1001, 1011)],
        "extensions": {"100": {"application": "ivr", "flow": str(FLOW)}},
        "routing": {"auto_login": True},
        "sites": [{"name": "lab", "timezone": "Europe/Madrid"}],
        "agents": [{"extension": ext, "name": f"Agent {ext}", "site": "lab", "skills": skills,
                    "languages": ["en", "es"]} for ext, skills in agents.items()],
        "queues": [{"name": "billing", "skills": {"billing": 5}, **queue},
                   {"name": "support", "skills": {"support": 5}, **queue}],
    }
    return yaml.safe_dump(config, sort_keys=False)


# ---------------------------------------------------------------------------- polling the server

def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.2):
    """Poll until ``predicate()`` is truthy or ``timeout`` passes; returns the last value.
    A liveness wait: no test asserts how long anything took."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def get_json(server, path: str) -> tuple[int, object]:
    status, body = server.http_get(path, timeout=10.0)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def agent_live(server, ext: str) -> dict:
    status, body = get_json(server, f"/api/v1/agents/{ext}")
    assert status == 200, f"GET /api/v1/agents/{ext}: {status} {body}"
    return (body or {}).get("live") or {"state": "inactive"}


def agent_state(server, ext: str) -> str:
    return agent_live(server, ext).get("state", "inactive")


def wait_agent_state(server, ext: str, *states: str, timeout: float = 20.0) -> dict:
    """Poll the agent until its live state is one of ``states``; returns the last live view."""
    seen: list[str] = []

    def check():
        live = agent_live(server, ext)
        if not seen or seen[-1] != live.get("state"):
            seen.append(live.get("state"))
        return live if live.get("state") in states else None

    live = wait_until(check, timeout)
    assert live, f"agent {ext} never reached {states}; states seen: {seen}"
    return live


def queue_stats(server, name: str) -> dict:
    status, body = get_json(server, f"/api/v1/queues/{name}/stats")
    assert status == 200, f"queue stats {name}: {status} {body}"
    return body  # type: ignore[return-value]


def call_record(server, call_id: str, timeout: float = 15.0) -> dict:
    """GET /api/v1/calls/{call_id} (the CDR and queue log, once the call has ended)."""
    path = f"/api/v1/calls/{urllib.parse.quote(call_id, safe='')}"
    result = wait_until(lambda: (lambda r: r if r[0] == 200 else None)(get_json(server, path)),
                        timeout)
    status, body = result or get_json(server, path)
    assert status == 200, f"GET {path}: {status} {body}"
    return body  # type: ignore[return-value]


IDLE_METRICS = ("centralita_sip_dialogs_active", "centralita_calls_active",
                "centralita_rtp_sessions")


def idle_metrics(server) -> dict[str, float]:
    return {name: server.metric(name, 0.0) for name in IDLE_METRICS}


def wait_idle(server, timeout: float = 20.0) -> dict[str, float]:
    """/metrics once no dialog, call or RTP session is active (or the last values seen)."""
    found = wait_until(lambda: (lambda m: m if not any(m.values()) else None)(idle_metrics(server)),
                       timeout)
    return found or idle_metrics(server)


# ---------------------------------------------------------------------------- audio analysis

def read_pcm16(path: Path) -> list[int]:
    """Samples of a (possibly unfinished) 16-bit mono WAV dump: everything after the data
    chunk header (baresip finalises the header only when the call ends)."""
    data = path.read_bytes()
    start = data.find(b"data")
    start = start + 8 if 0 <= start < 200 else 44
    raw = data[start:]
    raw = raw[: len(raw) // 2 * 2]
    return list(struct.unpack(f"<{len(raw) // 2}h", raw))


def tone_share(samples: list[int], frequency: float, rate: int = 8000, block: int = 160) -> float:
    """Share of 20 ms blocks whose energy is mostly a sine at ``frequency`` (Goertzel)."""
    blocks = hits = 0
    coefficient = 2 * math.cos(2 * math.pi * frequency / rate)
    for start in range(0, len(samples) - block + 1, block):
        chunk = samples[start:start + block]
        blocks += 1
        energy = sum(v * v for v in chunk)
        if energy < block * 200 ** 2:  # quieter than -44 dBFS: silence, not the tone
            continue
        s1 = s2 = 0.0
        for value in chunk:
            s1, s2 = value + coefficient * s1 - s2, s1
        power = s1 * s1 + s2 * s2 - coefficient * s1 * s2
        if power / (energy * block / 2) > 0.5:
            hits += 1
    return hits / blocks if blocks else 0.0


def loud_share(samples: list[int], block: int = 160) -> float:
    """Share of 20 ms blocks louder than -44 dBFS."""
    blocks = [samples[i:i + block] for i in range(0, len(samples) - block + 1, block)]
    if not blocks:
        return 0.0
    return sum(1 for b in blocks if sum(v * v for v in b) >= block * 200 ** 2) / len(blocks)


class CallerDump:
    """The audio a baresip caller decoded, split at a moment (the agent's answer)."""

    def __init__(self, phone: Baresip) -> None:
        self.phone = phone
        self.mark = 0

    def samples(self) -> list[int]:
        dumps = self.phone.dumps("dec")
        assert dumps, f"baresip {self.phone.account.user} wrote no decoded-audio dump"
        return read_pcm16(dumps[-1])

    def set_mark(self) -> None:
        self.mark = len(self.samples())

    def after_mark(self, skip_seconds: float = 0.5) -> list[int]:
        return self.samples()[self.mark + int(skip_seconds * 8000):]

    def wait_after_mark(self, seconds: float, timeout: float = 15.0) -> list[int]:
        """At least ``seconds`` of audio decoded after the mark (+ the skipped 0.5 s)."""
        wanted = int((seconds + 0.5) * 8000)
        wait_until(lambda: len(self.samples()) - self.mark >= wanted, timeout)
        return self.after_mark()


# ---------------------------------------------------------------------------- SIPp scenarios

SDP_PCMA = """
      v=0
      o=user 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [{port}] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
"""


def caller_xml(*, digit: str = "1", number: str = "+34915550001", hold_ms: int = 600_000,
               play_audio: bool = True, dtmf_after_ms: int = 500) -> str:
    """A SIPp caller: INVITE [service] (PCMA + telephone-event), ACK, press ``digit`` (RFC
    2833 from SIPp's pcap), stream 7 s of A-law; then either receive the server's BYE (the
    agent hung up) or, after ``hold_ms`` without one, hang up itself (BYE)."""
    audio = """
  <pause milliseconds="300"/>
  <nop><action><exec play_pcap_audio="pcap/g711a.pcap"/></action></nop>""" if play_audio else ""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="centralita test caller (digit {digit})">
  <send retrans="500"><![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{number}@[local_ip]:[local_port]>;tag=[pid]C[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:{number}@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]
{SDP_PCMA.format(port="auto_media_port")}
  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true"/>
  <send><![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{number}@[local_ip]:[local_port]>;tag=[pid]C[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:{number}@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <pause milliseconds="{dtmf_after_ms}"/>
  <nop><action><exec play_pcap_audio="pcap/dtmf_2833_{digit}.pcap"/></action></nop>{audio}
  <recv request="BYE" timeout="{hold_ms}" ontimeout="hangup"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
  ]]></send>
  <nop next="done"/>
  <label id="hangup"/>
  <send retrans="500"><![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{number}@[local_ip]:[local_port]>;tag=[pid]C[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <sip:{number}@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <recv response="200"/>
  <label id="done"/>
</scenario>
"""


REGISTER_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="centralita test agent registration">
  <send retrans="500"><![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{user}@[remote_ip]>;tag=[pid]R[call_number]
      To: <sip:{user}@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:{user}@[local_ip]:[local_port]>
      Expires: 3600
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="401" auth="true"/>
  <send retrans="500"><![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{user}@[remote_ip]>;tag=[pid]R[call_number]
      To: <sip:{user}@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:{user}@[local_ip]:[local_port]>
      [authentication]
      Expires: 3600
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="200"/>
</scenario>
"""

_UAS_INVITE = """
  <recv request="INVITE" rrs="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="remote_party"/>
      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="local_party"/>
    </action>
  </recv>
  <send><![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]A[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:{user}@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0
  ]]></send>"""

_UAS_ANSWER = """
  <send retrans="500"><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]A[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:{user}@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]
""" + SDP_PCMA.format(port="media_port") + """
  ]]></send>
  <recv request="ACK" rtd="true"/>"""

_UAS_200 = """
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
  ]]></send>"""


def _uas_request(method: str, cseq: int, extra: str = "") -> str:
    return f"""
  <send retrans="500"><![CDATA[
      {method} [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: [$local_party];tag=[pid]A[call_number]
      To: [$remote_party]
      [last_Call-ID:]
      CSeq: {cseq} {method}
      Contact: <sip:{{user}}@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70{extra}
      Content-Length: 0
  ]]></send>"""


def agent_xml(user: str, mode: str = "answer", *, hold_ms: int = 600_000, play_audio: bool = False,
              refer_to: str | None = None, refer_after_ms: int = 2000) -> str:
    """A SIPp agent phone (UAS) for one call at a time.

    ``answer``: 180, 200 + SDP (PCMA), ACK; optionally play 7 s of A-law; then take the
    server's BYE, or hang up itself after ``hold_ms``.
    ``ring``: 180 only, never answers; takes the server's CANCEL (200, 487, ACK).
    ``refer``: answers, then after ``refer_after_ms`` blind-transfers (REFER to ``refer_to``),
    takes the 202 and the NOTIFY, and hangs up (BYE).
    """
    body = _UAS_INVITE
    if mode == "ring":  # SIPp refuses variables set and never used
        body = body.replace('<ereg regexp=".*" search_in="hdr" header="To:" assign_to="local_party"/>',
                            "").replace('<ereg regexp=".*" search_in="hdr" header="From:" '
                                        'assign_to="remote_party"/>', "")
        body += """
  <recv request="CANCEL"/>""" + _UAS_200 + """
  <send><![CDATA[
      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]A[call_number]
      [last_Call-ID:]
      CSeq: [cseq] INVITE
      Content-Length: 0
  ]]></send>
  <recv request="ACK"/>"""
    elif mode == "answer":
        body += _UAS_ANSWER
        if play_audio:
            body += """
  <nop><action><exec play_pcap_audio="pcap/g711a.pcap"/></action></nop>"""
        body += f"""
  <recv request="BYE" timeout="{hold_ms}" ontimeout="hangup"/>""" + _UAS_200 + """
  <nop next="done"/>
  <label id="hangup"/>""" + _uas_request("BYE", 1) + """
  <recv response="200"/>
  <label id="done"/>"""
    elif mode == "refer":
        assert refer_to is not None
        body += _UAS_ANSWER + f"""
  <pause milliseconds="{refer_after_ms}"/>""" + _uas_request(
            "REFER", 1, f"\n      Refer-To: <{refer_to}>\n      Referred-By: <sip:{user}@[local_ip]>") + """
  <recv response="202"/>
  <recv request="NOTIFY"/>""" + _UAS_200 + _uas_request("BYE", 2) + """
  <recv response="200"/>"""
    else:
        raise ValueError(mode)
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="centralita test agent {user} ({mode})">{body.replace("{user}", user)}
</scenario>
"""


def need_sipp() -> None:
    require_binary("sipp", "sip-tester")
    if not (sipp.PCAP_DIR / "dtmf_2833_1.pcap").exists() or \
            not (sipp.PCAP_DIR / "g711a.pcap").exists():
        peer_unavailable(f"SIPp's pcaps are missing from {sipp.PCAP_DIR}")


# ---------------------------------------------------------------------------- agent phones

class SippAgent:
    """One agent on SIPp: a REGISTER run from port P, then a UAS on P (where it is rung)."""

    stack = "sipp"

    def __init__(self, workdir: Path, server, user: str, mode: str = "answer", *,
                 rtp_echo: bool = False, calls: int | None = None, auto_answer: bool = False,
                 **scenario) -> None:
        need_sipp()
        self.user = user
        self.workdir = Path(workdir)
        last = ""
        for attempt in range(3):
            port = free_port(udp=True, tcp=True)
            registration = sipp.run(
                server.sip_address, scenario=REGISTER_XML.replace("{user}", user),
                workdir=self.workdir / f"register{attempt}", calls=1, local_port=port,
                auth=(user, password(user)), auth_uri=server.sip_address, timeout=20,
                trace_msg=True)
            if registration.returncode != 0 or registration.successful != 1:
                last = registration.describe() + "\n" + registration.messages_log
                continue
            try:
                self.uas = sipp.start(None, scenario=agent_xml(user, mode, **scenario),
                                      workdir=self.workdir / f"uas{attempt}", port=port,
                                      trace_msg=True, calls=calls,
                                      extra=(["-rtp_echo"] if rtp_echo else [])
                                      + (["-aa"] if auto_answer else []))
            except RuntimeError as error:
                last = str(error)
                continue
            return
        raise AssertionError(f"SIPp agent {user} could not register and listen:\n{last}")

    @property
    def messages(self) -> str:
        path = self.uas.workdir / "messages.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def received(self, first_line_start: str) -> int:
        """How many messages starting with ``first_line_start`` the agent received."""
        count = 0
        lines = self.messages.splitlines()
        for index, line in enumerate(lines):
            if "message received" in line:
                following = [x.strip() for x in lines[index + 1:index + 4] if x.strip()]
                if following and following[0].startswith(first_line_start):
                    count += 1
        return count

    def sent(self, first_line_start: str) -> int:
        count = 0
        lines = self.messages.splitlines()
        for index, line in enumerate(lines):
            if "message sent" in line:
                following = [x.strip() for x in lines[index + 1:index + 4] if x.strip()]
                if following and following[0].startswith(first_line_start):
                    count += 1
        return count

    def stats(self) -> dict[str, str]:
        return sipp.read_stats(self.uas.workdir)

    def describe(self) -> str:
        return f"SIPp agent {self.user}:\n{self.uas.stop().describe() if self.uas.process.poll() is not None else 'running'}\n--- messages (tail) ---\n" + "\n".join(self.messages.splitlines()[-80:])

    def stop(self) -> sipp.SippResult:
        return self.uas.stop()


def baresip_agent(workdir: Path, server, user: str, *, frequency: float = AGENT_TONE,
                  answermode: str = "auto") -> Baresip:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tone = write_tone_wav(workdir / "agent-tone.wav", seconds=60, frequency=frequency)
    phone = Baresip(workdir, Account(user, password(user), (server.host, server.sip_port),
                                     answermode=answermode), source_wav=tone)
    phone.wait_registered()
    return phone


def baresip_caller(workdir: Path, server, user: str = CALLER_ACCOUNT[0]) -> Baresip:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tone = write_tone_wav(workdir / "caller-tone.wav", seconds=60, frequency=CALLER_TONE)
    phone = Baresip(workdir, Account(user, password(user), (server.host, server.sip_port)),
                    source_wav=tone)
    phone.wait_registered()
    return phone


def pyvoip_agent(workdir: Path, server, user: str, **options) -> PyVoipPhone:
    phone = PyVoipPhone(Path(workdir), (server.host, server.sip_port), user, password(user),
                        **options)
    event = phone.wait_event("registered", "register_failed", timeout=20)
    if event["event"] != "registered":
        phone.stop()
        raise AssertionError(f"pyVoIP {user} did not register: {event}")
    return phone


def pjsua_agent(workdir: Path, server, user: str, **options) -> PjsuaPhone:
    phone = PjsuaPhone(Path(workdir), (server.host, server.sip_port), user, password(user),
                       tone=AGENT_TONE, **options)
    event = phone.wait_event("registered", "register_failed", timeout=20)
    if event["event"] != "registered":
        phone.stop()
        raise AssertionError(f"pjsua {user} did not register: {event}\n{phone.log_tail()}")
    return phone


def baresip_dials_queue(caller: Baresip, server, digit: str = "1") -> None:
    """The baresip caller dials 100 and presses ``digit`` (RFC 2833) once the IVR answered."""
    caller.dial(f"sip:100@{server.sip_address}")
    event = caller.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", timeout=20)
    assert event["type"] == "CALL_ESTABLISHED", f"the IVR did not answer: {event}"
    time.sleep(0.5)  # let the menu prompt start: a digit during it barges in
    answer = caller.command("sndcode", digit)
    assert answer.get("ok", True), f"baresip refused sndcode {digit}: {answer}"


# ---------------------------------------------------------------------------- the tests

@pytest.mark.parametrize("stack,engine", [
    ("baresip", "embedded"), ("sipp", "embedded"), ("pyvoip", "embedded"), ("pjsua", "embedded"),
    ("baresip", "rtpengine"), ("sipp", "rtpengine")])
def test_baresip_caller_and_agent_hear_each_other(pbx_server, tmp_path, request, stack: str,
                                                  engine: str) -> None:
    """A caller pressing 1 reaches the billing agent on ``stack``; audio crosses both ways,
    through the media ``engine`` (with rtpengine: through it, not through the server)."""
    if stack == "sipp":
        need_sipp()
    media = {"engine": "embedded"}
    if engine == "rtpengine":
        media = request.getfixturevalue("rtpengine").media_settings
    server = pbx_server(cc_config(agents={"1001": {"billing": 8}}, media=media), sip_trace=True)
    with ExitStack() as stack_:
        if stack == "baresip":
            agent = baresip_agent(tmp_path / "agent", server, "1001")
            stack_.callback(agent.stop)
        elif stack == "sipp":
            agent = SippAgent(tmp_path / "agent", server, "1001", rtp_echo=True)
            stack_.callback(agent.stop)
        elif stack == "pjsua":
            agent = pjsua_agent(tmp_path / "agent", server, "1001")
            stack_.callback(agent.stop)
        else:
            agent = pyvoip_agent(tmp_path / "agent", server, "1001")
            stack_.callback(agent.stop)
        wait_agent_state(server, "1001", "available")
        caller = baresip_caller(tmp_path / "caller", server)
        stack_.callback(caller.stop)
        dump = CallerDump(caller)

        baresip_dials_queue(caller, server, "1")
        # Until the digit was pressed the caller could only hear the IVR: the control below.
        ivr_audio = dump.samples()
        # The agent answers (auto-answer): mark the caller's audio at that moment.
        if stack == "baresip":
            event = agent.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", timeout=30)
            assert event["type"] == "CALL_ESTABLISHED", event
        elif stack in ("pyvoip", "pjsua"):
            agent.wait_event("answered", timeout=30)
        wait_agent_state(server, "1001", "on_call", timeout=30)
        dump.set_mark()
        heard = dump.wait_after_mark(4.0)
        # Control: before the digit the caller heard the server (the menu prompt), which holds
        # neither tone, so finding a tone below is not an accident.
        assert len(ivr_audio) >= 2400, "the caller decoded no IVR audio before the digit"
        for tone in (CALLER_TONE, AGENT_TONE):
            assert tone_share(ivr_audio, tone) < 0.1, (
                f"the IVR/hold audio already contains {tone:g} Hz: the tone check proves nothing")
        assert len(heard) >= 4 * 8000, (
            f"the caller decoded only {len(heard)} samples after the agent answered:"
            f" no RTP from the agent's leg?\n{caller.log_tail()}")

        if stack == "pjsua":
            share = tone_share(heard, AGENT_TONE)
            print(f"caller heard pjsua tone share {share:.2f}")
            assert share > 0.6, f"the caller did not hear the agent's tone (share {share:.2f})"
            incoming = agent.last("incoming") or {}
            assert incoming.get("headers", {}).get("X-Centralita-Queue") == "billing", incoming
        elif stack == "baresip":
            agent_heard = read_pcm16(agent.dumps("dec")[-1]) if agent.dumps("dec") else []
            assert tone_share(agent_heard, CALLER_TONE) > 0.5, (
                f"the agent did not hear the caller's {CALLER_TONE:g} Hz tone "
                f"({len(agent_heard)} samples)")
            share = tone_share(heard, AGENT_TONE)
            print(f"caller heard agent tone share {share:.2f}, before {tone_share(ivr_audio, AGENT_TONE):.2f}")
            assert share > 0.6, f"the caller did not hear the agent's tone (share {share:.2f})"
        elif stack == "sipp":
            share = tone_share(heard, CALLER_TONE)
            print(f"caller heard own echoed tone share {share:.2f}, before {tone_share(ivr_audio, CALLER_TONE):.2f}")
            assert share > 0.6, (
                f"the caller's own tone did not come back through the SIPp agent's echo "
                f"(share {share:.2f}): caller->agent or agent->caller audio is missing")
        else:
            audio = wait_until(lambda: (lambda a: a if a.get("packets", 0) >= 100
                                        and a.get("nonsilent_bytes", 0) >= 2000 else None)(
                agent.last("audio") or {}), 10) or agent.last("audio")
            assert audio and audio.get("packets", 0) >= 100, f"pyVoIP got too little RTP: {audio}"
            assert audio.get("nonsilent_bytes", 0) >= 2000, f"pyVoIP heard silence only: {audio}"
            # pyVoIP sends silence: the caller hears the agent's (silent) leg, not hold music.
            print(f"caller loud share after answer {loud_share(heard):.2f}, before {loud_share(ivr_audio):.2f}")
            assert loud_share(heard) < 0.2, (
                f"after the answer the caller still hears loud audio ({loud_share(heard):.2f}"
                f" of blocks): not the pyVoIP agent's silent stream")

        if engine == "rtpengine":
            assert_bridged_through_rtpengine(server, request.getfixturevalue("rtpengine"))

        # The agent saw the queue's context headers.
        if stack == "sipp":
            assert "X-Centralita-Queue: billing" in agent.messages, agent.messages[-3000:]

        caller.hangup()
        caller.wait_event("CALL_CLOSED", timeout=10)
        if stack == "baresip":
            agent.wait_event("CALL_CLOSED", timeout=15)
        elif stack == "pyvoip":
            agent.wait_event("ended", timeout=15)
        elif stack == "pjsua":
            agent.wait_event("ended", timeout=15)
            recording = Path(agent.wait_event("recorded", timeout=10)["path"])
            agent_heard = read_pcm16(recording)
            share = tone_share(agent_heard, CALLER_TONE)
            print(f"pjsua heard caller tone share {share:.2f} of {len(agent_heard)} samples")
            assert share > 0.5, (
                f"the pjsua agent did not hear the caller's {CALLER_TONE:g} Hz tone "
                f"(share {share:.2f} of {len(agent_heard)} samples)")
        else:
            assert wait_until(lambda: agent.received("BYE") >= 1, 15), agent.messages[-3000:]
        wait_agent_state(server, "1001", "wrap_up", "available", timeout=15)
        wait_agent_state(server, "1001", "available", timeout=30)
    idle = wait_idle(server)
    assert not any(idle.values()), f"something stayed up after the call: {idle}"


@pytest.mark.parametrize("stack", ["sipp", "baresip", "pyvoip", "pjsua"])
def test_sipp_caller_with_dtmf_reaches_agent(pbx_server, tmp_path, stack: str) -> None:
    """A SIPp caller (RFC 2833 '1' from SIPp's pcap, then A-law) reaches the billing agent on
    ``stack``, which receives the caller's audio; the call ends cleanly."""
    need_sipp()
    server = pbx_server(cc_config(agents={"1001": {"billing": 8}}), sip_trace=True)
    with ExitStack() as stack_:
        if stack == "baresip":
            agent = baresip_agent(tmp_path / "agent", server, "1001")
        elif stack == "sipp":
            agent = SippAgent(tmp_path / "agent", server, "1001", hold_ms=3000)
        elif stack == "pjsua":
            agent = pjsua_agent(tmp_path / "agent", server, "1001")
        else:
            agent = pyvoip_agent(tmp_path / "agent", server, "1001")
        stack_.callback(agent.stop)
        wait_agent_state(server, "1001", "available")
        # The SIPp agent hangs up after 3 s; the other agents stay on until the caller does.
        hold_ms = 60_000 if stack == "sipp" else 8000
        caller = sipp.start(server.sip_address, scenario=caller_xml(digit="1", hold_ms=hold_ms),
                            service="100", calls=1, trace_msg=True, workdir=tmp_path / "caller")
        stack_.callback(caller.stop)
        wait_agent_state(server, "1001", "on_call", timeout=30)
        if stack == "baresip":
            agent.wait_event("CALL_ESTABLISHED", timeout=10)
            frames = wait_until(lambda: agent.received_audio_frames() >= 16000
                                and agent.received_audio_frames(), 10)
            assert frames, f"baresip agent decoded too little: {agent.received_audio_frames()}"
            samples = read_pcm16(agent.dumps("dec")[-1])
            assert loud_share(samples) > 0.3, "baresip agent decoded only silence"
        elif stack == "pyvoip":
            audio = wait_until(lambda: (lambda a: a if a.get("packets", 0) >= 100
                                        and a.get("nonsilent_bytes", 0) >= 2000 else None)(
                agent.last("audio") or {}), 10) or agent.last("audio")
            assert audio and audio.get("nonsilent_bytes", 0) >= 2000, f"pyVoIP: {audio}"
        result = caller.wait(60)
        assert result.returncode == 0 and result.successful == 1, (
            result.describe() + "\n" + result.messages_log[-4000:])
        if stack == "sipp":
            assert wait_until(lambda: agent.sent("BYE") + agent.received("BYE") >= 1, 10)
        elif stack == "pjsua":
            incoming = agent.last("incoming") or {}
            assert incoming.get("headers", {}).get("X-Centralita-Queue") == "billing", incoming
            assert incoming.get("headers", {}).get("X-Centralita-Caller") == "+34915550001", \
                incoming
            recording = read_pcm16(Path(agent.wait_event("recorded", timeout=15)["path"]))
            assert len(recording) >= 2 * 8000 and loud_share(recording) > 0.3, (
                f"the pjsua agent recorded {len(recording)} samples,"
                f" {loud_share(recording):.2f} of them loud: the caller's A-law did not arrive")
        # Still registered: after wrap-up the agent is available again.
        wait_agent_state(server, "1001", "available", timeout=30)
        idle = wait_idle(server)
        assert not any(idle.values()), f"something stayed up after the call: {idle}"
