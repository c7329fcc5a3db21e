"""N contact-center agents played by SIPp: a registration run, then a UAS run, per group.

The server rings an agent at the address its REGISTER came from, so each group of agents
registers from port P (``bench/scenarios/agent_register.xml``, digest credentials from an
injection file, ``-auth_uri`` set to the server) and then one SIPp UAS listens on that same
port P for every agent of the group (``agent_uas.xml`` waits for the server's BYE,
``agent_uas_hangup.xml`` hangs up after ``talk_ms``). Both answer with 180 then 200 + SDP
and play 7 s of A-law, so the media path carries audio.

What each agent was offered is read back from the UAS's message trace (``-trace_msg``, or
the cheaper ``-trace_shortmsg`` for benchmarks): the Request-URI of an INVITE names the
agent (its registered Contact ``sip:USER@127.0.0.1:P``); a dialog is open from the INVITE
until a BYE or CANCEL in either direction, or a final non-2xx response. SIPp is one
thread, so its trace is in the order things happened: the largest number of dialogs open at
once per agent is exact, and must never exceed 1.

Also here: :func:`contact_center_config`, the YAML of a server with N such agents, one queue
(``bench``) and the short benchmark flow on extension 100.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from peers import sipp
from peers.procs import LOOPBACK, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = REPO_ROOT / "bench" / "scenarios"
REGISTER_XML = SCENARIOS / "agent_register.xml"
UAS_WAIT_BYE_XML = SCENARIOS / "agent_uas.xml"
UAS_HANGUP_XML = SCENARIOS / "agent_uas_hangup.xml"
CALLER_WAIT_BYE_XML = SCENARIOS / "caller_ivr.xml"
CALLER_HANGUP_XML = SCENARIOS / "caller_ivr_hangup.xml"
BENCH_FLOW = SCENARIOS / "bench_flow.yaml"
QUEUE = "bench"


# ---------------------------------------------------------------------- configuration

def agent_accounts(count: int, first: int = 2001) -> list[tuple[str, str]]:
    """(extension, password) of ``count`` agents: 2001/bench2001, 2002/bench2002, ..."""
    return [(str(first + i), f"bench{first + i}") for i in range(count)]


def contact_center_config(accounts: Sequence[tuple[str, str]], *, wrap_up_seconds: float = 0,
                          ring_timeout_seconds: float = 30, max_wait_seconds: float = 600,
                          flow: Path | str = BENCH_FLOW, rtp_timeout: float = 60,
                          trace: bool = False) -> str:
    """Server YAML: the accounts as auto-login agents (skill bench), queue ``bench``, flow on 100."""
    config = {
        "sip": {"listen": [f"{LOOPBACK}:5060"], "realm": "centralita", "trace": trace,
                "min_expires": 60, "max_expires": 3600, "default_expires": 600,
                "digest_algorithms": ["MD5", "SHA-256"]},
        "media": {"host": LOOPBACK, "port_min": 20000, "port_max": 29999,
                  "codecs": ["PCMU", "PCMA"], "rtp_timeout": rtp_timeout},
        "http": {"listen": f"{LOOPBACK}:8080", "api_token": None},
        "store": {"url": None},
        "accounts": [{"user": user, "password": password, "name": f"Agent {user}"}
                     for user, password in accounts],
        "extensions": {"100": {"application": "ivr", "flow": str(flow)}},
        "routing": {"auto_login": True},
        "sites": [{"name": "bench", "timezone": "Europe/Madrid"}],
        "agents": [{"extension": user, "name": f"Agent {user}", "site": "bench",
                    "skills": {QUEUE: 5}, "languages": ["en"]} for user, _ in accounts],
        "queues": [{"name": QUEUE, "skills": {QUEUE: 1}, "strategy": "longest_idle",
                    "wrap_up_seconds": wrap_up_seconds,
                    "ring_timeout_seconds": ring_timeout_seconds,
                    "max_wait_seconds": max_wait_seconds}],
    }
    return yaml.safe_dump(config, sort_keys=False)


# ---------------------------------------------------------------------- what agents saw

@dataclass
class AgentLoad:
    """What the agents' SIPp traces say they were offered."""

    offered: Counter = field(default_factory=Counter)       # INVITEs per agent
    max_concurrent: dict[str, int] = field(default_factory=dict)
    overlaps: list[str] = field(default_factory=list)       # "agent: call-id while call-id"
    open_at_end: dict[str, list[str]] = field(default_factory=dict)
    callers: dict[str, str] = field(default_factory=dict)   # caller (From user) -> agent

    def merge(self, other: AgentLoad) -> None:
        self.offered.update(other.offered)
        for user, peak in other.max_concurrent.items():
            self.max_concurrent[user] = max(peak, self.max_concurrent.get(user, 0))
        self.overlaps += other.overlaps
        for user, calls in other.open_at_end.items():
            self.open_at_end.setdefault(user, []).extend(calls)
        self.callers.update(other.callers)

    @property
    def worst(self) -> int:
        return max(self.max_concurrent.values(), default=0)


_USER_OF_URI = re.compile(r"^sips?:([^@;>\s]+)@", re.IGNORECASE)
_USER_IN_HEADER = re.compile(r"sips?:([^@;>\s]+)@", re.IGNORECASE)


class _DialogTracker:
    def __init__(self) -> None:
        self.load = AgentLoad()
        self.open: dict[str, dict[str, None]] = defaultdict(dict)   # user -> open call-ids
        self.owner: dict[str, str] = {}                              # call-id -> user

    def message(self, direction: str, first_line: str, call_id: str, cseq_method: str,
                from_user: str | None = None) -> None:
        parts = first_line.split()
        if not parts:
            return
        if parts[0].startswith("SIP/"):  # a response
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            if cseq_method == "INVITE" and status >= 300:
                self._close(call_id)
            return
        method = parts[0].upper()
        if method == "INVITE" and direction == "R":
            match = _USER_OF_URI.match(parts[1]) if len(parts) > 1 else None
            user = match.group(1) if match else "?"
            if call_id in self.owner:
                return  # a retransmission or a re-INVITE of an open dialog
            self.owner[call_id] = user
            self.load.offered[user] += 1
            if from_user:
                self.load.callers[from_user] = user
            current = self.open[user]
            for other in current:
                self.load.overlaps.append(f"{user}: {call_id} offered while {other} was open")
            current[call_id] = None
            peak = self.load.max_concurrent.get(user, 0)
            self.load.max_concurrent[user] = max(peak, len(current))
        elif method in ("BYE", "CANCEL"):
            self._close(call_id)

    def _close(self, call_id: str) -> None:
        user = self.owner.get(call_id)
        if user is not None:
            self.open[user].pop(call_id, None)

    def finish(self) -> AgentLoad:
        self.load.open_at_end = {user: list(calls) for user, calls in self.open.items() if calls}
        return self.load


_SEPARATOR = re.compile(r"^-{20,} ")
_DIRECTION = re.compile(r"^(UDP|TCP|TLS|SCTP) message (received|sent)", re.IGNORECASE)


def iter_message_log(path: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(direction ``R``/``S``, first line, {lower-case header name: value}) of every message in
    SIPp's ``-trace_msg`` file (blocks: a dashed line, 'UDP message received/sent', the message).
    Compact header names are expanded for Call-ID, From, To and Via."""
    if not path.exists():
        return
    compact = {"i": "call-id", "f": "from", "t": "to", "v": "via"}
    block: list[str] = []

    def parse() -> tuple[str, str, dict[str, str]] | None:
        direction = None
        lines = iter(block)
        for line in lines:
            found = _DIRECTION.match(line.strip())
            if found:
                direction = "R" if found.group(2).lower() == "received" else "S"
                break
        if direction is None:
            return None
        message = [line.strip() for line in lines]
        message = [line for line in message if line]
        if not message:
            return None
        headers: dict[str, str] = {}
        for line in message[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                continue
            name = name.strip().lower()
            headers.setdefault(compact.get(name, name), value.strip())
        return direction, message[0], headers

    with open(path, errors="replace") as handle:
        for line in handle:
            if _SEPARATOR.match(line):
                parsed = parse()
                if parsed:
                    yield parsed
                block = []
            else:
                block.append(line)
    parsed = parse()
    if parsed:
        yield parsed


def _user_in(header_value: str) -> str | None:
    found = _USER_IN_HEADER.search(header_value or "")
    return found.group(1) if found else None


def load_from_message_log(path: Path) -> AgentLoad:
    """Parse an agent UAS's ``-trace_msg`` file into per-agent offers and concurrency."""
    tracker = _DialogTracker()
    for direction, first_line, headers in iter_message_log(path):
        cseq = headers.get("cseq", "").split()
        tracker.message(direction, first_line, headers.get("call-id", ""),
                        cseq[-1].upper() if cseq else "", _user_in(headers.get("from", "")))
    return tracker.finish()


def caller_numbers(path: Path) -> dict[str, str]:
    """Call-ID -> From user of every INVITE a caller SIPp sent (from its ``-trace_msg``)."""
    calls: dict[str, str] = {}
    for direction, first_line, headers in iter_message_log(path):
        if direction == "S" and first_line.upper().startswith("INVITE "):
            calls.setdefault(headers.get("call-id", ""), _user_in(headers.get("from", "")) or "")
    return calls


def load_from_short_log(path: Path) -> AgentLoad:
    """Parse SIPp's ``-trace_shortmsg`` file: tab-separated ``date, time, epoch, S|R, Call-ID,
    CSeq:N METHOD, first line`` rows (SIPp 3.6)."""
    tracker = _DialogTracker()
    if not path.exists():
        return tracker.finish()
    with open(path, errors="replace") as handle:
        for line in handle:
            row = line.rstrip("\n").split("\t")
            if len(row) < 7:
                continue
            cseq = row[5].split()
            tracker.message(row[3].strip()[:1].upper(), row[6].strip(), row[4].strip(),
                            cseq[-1].upper() if cseq else "")
    return tracker.finish()


# ---------------------------------------------------------------------- running agents

class AgentSetupError(RuntimeError):
    pass


@dataclass
class AgentGroup:
    port: int
    users: list[str]
    registration: sipp.SippResult
    uas: sipp.SippProcess
    workdir: Path
    result: sipp.SippResult | None = None


class SippAgents:
    """Agents on SIPp: ``with SippAgents(...) as agents: ...``; stop() returns the UAS results.

    ``talk_ms=None``: agents wait for the server's BYE; otherwise they hang up after ``talk_ms``.
    ``short_trace``: use ``-trace_shortmsg`` (cheap, for benchmarks) rather than ``-trace_msg``.
    """

    def __init__(self, server_address: str, accounts: Sequence[tuple[str, str]], workdir: Path,
                 *, processes: int = 1, talk_ms: int | None = None, short_trace: bool = False,
                 register_rate: float = 200.0) -> None:
        self.server_address = server_address
        self.accounts = list(accounts)
        self.workdir = Path(workdir)
        self.processes = max(1, min(processes, len(self.accounts)))
        self.talk_ms = talk_ms
        self.short_trace = short_trace
        self.register_rate = register_rate
        self.groups: list[AgentGroup] = []
        self._stopped = False

    def __enter__(self) -> SippAgents:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _chunks(self) -> list[list[tuple[str, str]]]:
        n = self.processes
        return [self.accounts[i::n] for i in range(n)]

    def start(self) -> None:
        try:
            for index, chunk in enumerate(self._chunks()):
                self.groups.append(self._start_group(index, chunk))
        except BaseException:
            self.stop()
            raise

    def _start_group(self, index: int, chunk: list[tuple[str, str]]) -> AgentGroup:
        last_error = ""
        for attempt in range(3):  # the port can be taken between probe and bind
            port = free_port(udp=True, tcp=True)
            reg_dir = self.workdir / f"agents{index}-register{attempt}"
            inject = [f"{user};[authentication username={user} password={password}]"
                      for user, password in chunk]
            registration = sipp.run(
                self.server_address, scenario=REGISTER_XML, workdir=reg_dir, calls=len(chunk),
                rate=self.register_rate, limit=50, inject=inject, local_port=port,
                auth_uri=self.server_address, timeout=max(30.0, len(chunk) / 20), trace_msg=True)
            if registration.returncode != 0 or registration.successful != len(chunk):
                last_error = registration.describe()
                if "bind" in registration.output.lower():
                    continue
                raise AgentSetupError(f"agents group {index}: registration failed:\n{last_error}")
            uas_dir = self.workdir / f"agents{index}-uas"
            extra: list[str] = ["-trace_shortmsg", "-shortmessage_file",
                                str(uas_dir / "short.log")] if self.short_trace else []
            extra += ["-max_socket", "60000"]
            try:
                uas = sipp.start(
                    None, workdir=uas_dir, port=port,
                    scenario=UAS_WAIT_BYE_XML if self.talk_ms is None else UAS_HANGUP_XML,
                    duration_ms=self.talk_ms, trace_msg=not self.short_trace, extra=extra)
            except RuntimeError as error:
                last_error = str(error)
                continue
            return AgentGroup(port, [user for user, _ in chunk], registration, uas, uas_dir)
        raise AgentSetupError(f"agents group {index}: could not start: {last_error}")

    @property
    def users(self) -> list[str]:
        return [user for user, _ in self.accounts]

    def alive(self) -> bool:
        return all(group.uas.process.poll() is None for group in self.groups)

    def stop(self) -> list[sipp.SippResult]:
        if not self._stopped:
            self._stopped = True
            for group in self.groups:
                group.result = group.uas.stop()
        return [group.result for group in self.groups if group.result is not None]

    def stats(self) -> dict[str, int]:
        """Live sums over the UAS processes of SIPp's cumulative counters (from the stat CSVs)."""
        totals: Counter = Counter()
        for group in self.groups:
            values = sipp.read_stats(group.workdir)
            for name in ("TotalCallCreated", "SuccessfulCall(C)", "FailedCall(C)",
                         "CurrentCall"):
                try:
                    totals[name] += int(float(values.get(name, "0") or 0))
                except ValueError:
                    pass
        return dict(totals)

    def load(self) -> AgentLoad:
        """Per-agent offers and peak simultaneous dialogs, from every group's trace."""
        total = AgentLoad()
        for group in self.groups:
            if self.short_trace:
                total.merge(load_from_short_log(group.workdir / "short.log"))
            else:
                total.merge(load_from_message_log(group.workdir / "messages.log"))
        return total

    def describe(self) -> str:
        parts = []
        for group in self.groups:
            result = group.result
            parts.append(f"agents on port {group.port} ({len(group.users)} agents): "
                         + (result.describe() if result else "running"))
        return "\n".join(parts)


def wait_for_agents(server, users: Sequence[str], state: str = "available",
                    timeout: float = 30.0) -> dict[str, str]:
    """Poll ``GET /api/v1/agents`` until every user is in ``state``; returns the last states."""
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while True:
        states = agent_states(server)
        if all(states.get(user) == state for user in users):
            return states
        if time.monotonic() > deadline:
            return states
        time.sleep(0.2)


def agent_states(server) -> dict[str, str]:
    """extension -> live state (``inactive`` when the agent has no live state)."""
    status, body = server.http_get("/api/v1/agents", timeout=10.0)
    if status != 200:
        raise AssertionError(f"GET /api/v1/agents answered {status}: {body[:300]}")
    document = json.loads(body)
    items = document if isinstance(document, list) else document.get("items", document.get("agents", []))
    return {item["extension"]: (item.get("live") or {}).get("state", "inactive") for item in items}
