"""SIP transactions: RFC 3261 §17 with RFC 6026's Accepted states, sans-I/O.

Rules of this file (everything that moves a transaction lives here):

* Four machines: INVITE client (ICT), non-INVITE client (NICT), INVITE server
  (IST), non-INVITE server (NIST). Each is a transition table
  ``(state, input) -> (new state, actions)`` copied from the RFC figure cited
  above it. A pair missing from a table is discarded (a late timer, a stray
  response, a 1xx after a final): nothing happens.
* Timers belong to states: leaving a state disarms every timer not listed for
  the new state in ``_LIVE_TIMERS``. Timers live in one heap with lazy
  deletion: a popped entry whose token no longer matches is dropped.
* A timer whose RFC value is 0 on a reliable transport fires at once, inside
  the same call, so a terminated transaction never outlives the call that
  terminated it.
* Time is the ``now`` argument; nothing here reads a clock or touches a socket.
  Every public method returns the events the adapter must act on, in order.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from pbx.sip.message import Headers, Request, Response, make_response

Address = tuple[str, int]

MAGIC_COOKIE = "z9hG4bK"


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """RFC 3261 §17.1.1.1 / Table 4. ``timer_d`` is "at least 32 s" for UDP."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0


class TransactionKey(NamedTuple):
    """Identifies one transaction.

    ``method`` is the method that created the transaction (INVITE for an ACK).
    RFC 3261 branches key on (branch, sent-by, method) for servers (§17.2.3)
    and (branch, method) for clients (§17.1.3). Requests without the magic
    cookie key on ``legacy`` instead: the RFC 2543 fields of §17.2.3.

    A named tuple, not a frozen dataclass: every message looks one up in a few dicts,
    and a tuple hashes and compares in C where the dataclass ran Python for each.
    """

    server: bool
    method: str
    branch: str
    sent_by: str = ""
    legacy: tuple[str, ...] = ()


# -- events handed to the adapter / transaction user ------------------------


@dataclass(frozen=True, slots=True)
class SendMessage:
    message: Request | Response
    destination: Address
    transport: str


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request: the TU must answer it with ``respond(key, ...)``."""

    key: TransactionKey
    request: Request
    source: Address
    transport: str


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK for a 2xx (ours, or one matching no transaction): the dialog decides."""

    request: Request
    source: Address


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    key: TransactionKey
    response: Response


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """Client: Timer B/F (or §9.1's wait after CANCEL) fired, act as on a 408.
    Server (``key.server``): Timer H fired, our non-2xx final was never ACKed."""

    key: TransactionKey
    request: Request


@dataclass(frozen=True, slots=True)
class AckTimedOut:
    """We answered an INVITE with 2xx and no ACK came within 64*T1: send BYE."""

    key: TransactionKey
    request: Request


Event = SendMessage | RequestReceived | AckReceived | ResponseReceived | TransactionTimedOut | AckTimedOut


# -- states, inputs, actions -------------------------------------------------


class State(StrEnum):
    INIT = "Init"  # before the first input; the figures' entry arrow
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    # IST Accepted after the ACK came: same as RFC 6026 Accepted, but the
    # 2xx is no longer retransmitted and Timer L means no AckTimedOut.
    ACCEPTED_ACKED = "Accepted+ACK"
    TERMINATED = "Terminated"


class Input(StrEnum):
    TU_REQUEST = "request from TU"
    REQUEST = "request from network"  # the creating request or a retransmission
    ACK = "ACK from network"
    R1XX = "1xx"  # from the TU (server) or the network (client)
    R2XX = "2xx"
    R3XX_6XX = "300-699"
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"
    TIMER_2XX = "2xx retransmit"  # RFC 3261 §13.3.1.4, folded into the IST
    TIMER_CANCEL = "CANCEL wait"  # RFC 3261 §9.1: 64*T1 after CANCEL


class Action(StrEnum):
    SEND_REQUEST = "send request"
    PASS_REQUEST = "pass request to TU"
    PASS_ACK = "pass ACK to TU"
    PASS_RESPONSE = "pass response to TU"
    SEND_RESPONSE = "send TU's response"
    RESEND_RESPONSE = "resend last response"
    RESEND_PROVISIONAL = "resend last 1xx, or 100 Trying if none"
    SEND_ACK = "send ACK"
    REPORT_TIMEOUT = "inform TU: timeout"
    REPORT_ACK_TIMEOUT = "inform TU: 2xx never ACKed"
    START_A = "start A = T1"
    DOUBLE_A = "A = 2*A"
    START_B = "start B = 64*T1"
    START_D = "start D"
    START_E = "start E = T1"
    DOUBLE_E = "E = min(2*E, T2)"
    E_T2 = "E = T2"
    START_F = "start F = 64*T1"
    START_G = "start G = T1"
    DOUBLE_G = "G = min(2*G, T2)"
    START_H = "start H = 64*T1"
    START_I = "start I = T4"
    START_J = "start J = 64*T1"
    START_K = "start K = T4"
    START_L = "start L = 64*T1"
    START_M = "start M = 64*T1"
    START_2XX = "start 2xx retransmit = T1"
    DOUBLE_2XX = "2xx retransmit = min(2*i, T2)"


S, In, A = State, Input, Action
Table = dict[tuple[State, Input], tuple[State, tuple[Action, ...]]]

# RFC 3261 §17.1.1, Figure 5 (INVITE client transaction), with RFC 6026 §8.4
# Figure 3 (2xx: Calling/Proceeding -> Accepted, Timer M) and §9.1's limit on
# waiting for the INVITE's final response after a CANCEL.
ICT_TABLE: Table = {
    (S.INIT, In.TU_REQUEST): (S.CALLING, (A.SEND_REQUEST, A.START_A, A.START_B)),
    (S.CALLING, In.TIMER_A): (S.CALLING, (A.SEND_REQUEST, A.DOUBLE_A)),
    (S.CALLING, In.TIMER_B): (S.TERMINATED, (A.REPORT_TIMEOUT,)),
    (S.CALLING, In.R1XX): (S.PROCEEDING, (A.PASS_RESPONSE,)),
    (S.CALLING, In.R2XX): (S.ACCEPTED, (A.PASS_RESPONSE, A.START_M)),
    (S.CALLING, In.R3XX_6XX): (S.COMPLETED, (A.SEND_ACK, A.PASS_RESPONSE, A.START_D)),
    (S.PROCEEDING, In.R1XX): (S.PROCEEDING, (A.PASS_RESPONSE,)),
    (S.PROCEEDING, In.R2XX): (S.ACCEPTED, (A.PASS_RESPONSE, A.START_M)),
    (S.PROCEEDING, In.R3XX_6XX): (S.COMPLETED, (A.SEND_ACK, A.PASS_RESPONSE, A.START_D)),
    (S.PROCEEDING, In.TIMER_CANCEL): (S.TERMINATED, (A.REPORT_TIMEOUT,)),
    (S.COMPLETED, In.R3XX_6XX): (S.COMPLETED, (A.SEND_ACK,)),
    (S.COMPLETED, In.TIMER_D): (S.TERMINATED, ()),
    (S.ACCEPTED, In.R2XX): (S.ACCEPTED, (A.PASS_RESPONSE,)),
    (S.ACCEPTED, In.TIMER_M): (S.TERMINATED, ()),
}

# RFC 3261 §17.1.2, Figure 6 (non-INVITE client transaction).
NICT_TABLE: Table = {
    (S.INIT, In.TU_REQUEST): (S.TRYING, (A.SEND_REQUEST, A.START_E, A.START_F)),
    (S.TRYING, In.TIMER_E): (S.TRYING, (A.SEND_REQUEST, A.DOUBLE_E)),
    (S.TRYING, In.TIMER_F): (S.TERMINATED, (A.REPORT_TIMEOUT,)),
    (S.TRYING, In.R1XX): (S.PROCEEDING, (A.PASS_RESPONSE,)),
    (S.TRYING, In.R2XX): (S.COMPLETED, (A.PASS_RESPONSE, A.START_K)),
    (S.TRYING, In.R3XX_6XX): (S.COMPLETED, (A.PASS_RESPONSE, A.START_K)),
    (S.PROCEEDING, In.TIMER_E): (S.PROCEEDING, (A.SEND_REQUEST, A.E_T2)),
    (S.PROCEEDING, In.TIMER_F): (S.TERMINATED, (A.REPORT_TIMEOUT,)),
    (S.PROCEEDING, In.R1XX): (S.PROCEEDING, (A.PASS_RESPONSE,)),
    (S.PROCEEDING, In.R2XX): (S.COMPLETED, (A.PASS_RESPONSE, A.START_K)),
    (S.PROCEEDING, In.R3XX_6XX): (S.COMPLETED, (A.PASS_RESPONSE, A.START_K)),
    (S.COMPLETED, In.R1XX): (S.COMPLETED, ()),
    (S.COMPLETED, In.R2XX): (S.COMPLETED, ()),
    (S.COMPLETED, In.R3XX_6XX): (S.COMPLETED, ()),
    (S.COMPLETED, In.TIMER_K): (S.TERMINATED, ()),
}

# RFC 3261 §17.2.1, Figure 7 (INVITE server transaction), with RFC 6026 §8.5
# Figure 5 (2xx: Proceeding -> Accepted, Timer L; INVITEs absorbed, ACKs and
# further 2xx passed through). The UAS core's 2xx retransmission until ACK
# (§13.3.1.4) is folded in: TIMER_2XX, and ACCEPTED_ACKED once the ACK came.
IST_TABLE: Table = {
    (S.INIT, In.REQUEST): (S.PROCEEDING, (A.PASS_REQUEST,)),
    (S.PROCEEDING, In.REQUEST): (S.PROCEEDING, (A.RESEND_PROVISIONAL,)),
    (S.PROCEEDING, In.R1XX): (S.PROCEEDING, (A.SEND_RESPONSE,)),
    (S.PROCEEDING, In.R2XX): (S.ACCEPTED, (A.SEND_RESPONSE, A.START_2XX, A.START_L)),
    (S.PROCEEDING, In.R3XX_6XX): (S.COMPLETED, (A.SEND_RESPONSE, A.START_G, A.START_H)),
    (S.COMPLETED, In.REQUEST): (S.COMPLETED, (A.RESEND_RESPONSE,)),
    (S.COMPLETED, In.TIMER_G): (S.COMPLETED, (A.RESEND_RESPONSE, A.DOUBLE_G)),
    (S.COMPLETED, In.TIMER_H): (S.TERMINATED, (A.REPORT_TIMEOUT,)),
    (S.COMPLETED, In.ACK): (S.CONFIRMED, (A.START_I,)),
    (S.CONFIRMED, In.REQUEST): (S.CONFIRMED, ()),
    (S.CONFIRMED, In.ACK): (S.CONFIRMED, ()),
    (S.CONFIRMED, In.TIMER_I): (S.TERMINATED, ()),
    (S.ACCEPTED, In.REQUEST): (S.ACCEPTED, ()),
    (S.ACCEPTED, In.R2XX): (S.ACCEPTED, (A.SEND_RESPONSE,)),
    (S.ACCEPTED, In.TIMER_2XX): (S.ACCEPTED, (A.RESEND_RESPONSE, A.DOUBLE_2XX)),
    (S.ACCEPTED, In.ACK): (S.ACCEPTED_ACKED, (A.PASS_ACK,)),
    (S.ACCEPTED, In.TIMER_L): (S.TERMINATED, (A.REPORT_ACK_TIMEOUT,)),
    (S.ACCEPTED_ACKED, In.REQUEST): (S.ACCEPTED_ACKED, ()),
    (S.ACCEPTED_ACKED, In.R2XX): (S.ACCEPTED_ACKED, (A.SEND_RESPONSE,)),
    (S.ACCEPTED_ACKED, In.ACK): (S.ACCEPTED_ACKED, (A.PASS_ACK,)),
    (S.ACCEPTED_ACKED, In.TIMER_L): (S.TERMINATED, ()),
}

# RFC 3261 §17.2.2, Figure 8 (non-INVITE server transaction).
NIST_TABLE: Table = {
    (S.INIT, In.REQUEST): (S.TRYING, (A.PASS_REQUEST,)),
    (S.TRYING, In.REQUEST): (S.TRYING, ()),
    (S.TRYING, In.R1XX): (S.PROCEEDING, (A.SEND_RESPONSE,)),
    (S.TRYING, In.R2XX): (S.COMPLETED, (A.SEND_RESPONSE, A.START_J)),
    (S.TRYING, In.R3XX_6XX): (S.COMPLETED, (A.SEND_RESPONSE, A.START_J)),
    (S.PROCEEDING, In.REQUEST): (S.PROCEEDING, (A.RESEND_RESPONSE,)),
    (S.PROCEEDING, In.R1XX): (S.PROCEEDING, (A.SEND_RESPONSE,)),
    (S.PROCEEDING, In.R2XX): (S.COMPLETED, (A.SEND_RESPONSE, A.START_J)),
    (S.PROCEEDING, In.R3XX_6XX): (S.COMPLETED, (A.SEND_RESPONSE, A.START_J)),
    (S.COMPLETED, In.REQUEST): (S.COMPLETED, (A.RESEND_RESPONSE,)),
    (S.COMPLETED, In.TIMER_J): (S.TERMINATED, ()),
}

_NO_TIMERS: frozenset[Input] = frozenset()

# Which timers may stay armed in each state (anything else is disarmed on entry).
_LIVE_TIMERS: dict[str, dict[State, frozenset[Input]]] = {
    "ICT": {
        S.CALLING: frozenset({In.TIMER_A, In.TIMER_B}),
        S.PROCEEDING: frozenset({In.TIMER_CANCEL}),
        S.COMPLETED: frozenset({In.TIMER_D}),
        S.ACCEPTED: frozenset({In.TIMER_M}),
    },
    "NICT": {
        S.TRYING: frozenset({In.TIMER_E, In.TIMER_F}),
        S.PROCEEDING: frozenset({In.TIMER_E, In.TIMER_F}),
        S.COMPLETED: frozenset({In.TIMER_K}),
    },
    "IST": {
        S.COMPLETED: frozenset({In.TIMER_G, In.TIMER_H}),
        S.CONFIRMED: frozenset({In.TIMER_I}),
        S.ACCEPTED: frozenset({In.TIMER_2XX, In.TIMER_L}),
        S.ACCEPTED_ACKED: frozenset({In.TIMER_L}),
    },
    "NIST": {S.COMPLETED: frozenset({In.TIMER_J})},
}

TABLES: dict[str, Table] = {"ICT": ICT_TABLE, "NICT": NICT_TABLE, "IST": IST_TABLE, "NIST": NIST_TABLE}


def _response_input(status: int) -> Input:
    if status < 200:
        return In.R1XX
    if status < 300:
        return In.R2XX
    return In.R3XX_6XX


def is_rfc3261_branch(branch: str | None) -> bool:
    """A branch made unique per RFC 3261 §8.1.1.7 (cookie plus something)."""
    return branch is not None and len(branch) > len(MAGIC_COOKIE) and branch.startswith(MAGIC_COOKIE)


def server_key(request: Request) -> TransactionKey:
    """§17.2.3 key of the server transaction `request` belongs to (INVITE's for an ACK)."""
    method = "INVITE" if request.method == "ACK" else request.method
    return _server_key(request, method, request.to.tag)


def _server_key(request: Request, method: str, to_tag: str | None) -> TransactionKey:
    via = request.top_via
    branch = via.branch
    if is_rfc3261_branch(branch):
        assert branch is not None
        return TransactionKey(True, method, branch, f"{via.host.lower()}:{via.port or ''}")
    # RFC 2543 fallback (§17.2.3, last paragraphs): Request-URI, To tag, From
    # tag, Call-ID, CSeq number and top Via identify the transaction.
    legacy = (str(request.uri), to_tag or "", request.from_.tag or "", request.call_id,
              str(request.cseq[0]), str(via))
    return TransactionKey(True, method, "", "", legacy)


def client_key(message: Request | Response) -> TransactionKey:
    """§17.1.3: the top Via branch plus the CSeq method."""
    return TransactionKey(False, message.cseq[1], message.top_via.branch or "")


class _Transaction:
    __slots__ = ("key", "kind", "table", "live", "state", "request", "peer", "transport",
                 "reliable", "last_response", "ack", "interval", "armed", "pending_cancel",
                 "dialog_index")

    def __init__(self, key: TransactionKey, kind: str, request: Request, peer: Address,
                 transport: str) -> None:
        self.key = key
        self.kind = kind
        self.table = TABLES[kind]
        self.live = _LIVE_TIMERS[kind]
        self.state = S.INIT
        self.request = request
        self.peer = peer  # destination (client) or source of the request (server)
        self.transport = transport
        self.reliable = transport.upper() != "UDP"
        self.last_response: Response | None = None
        self.ack: Request | None = None  # ICT: the ACK for a non-2xx, built once
        self.interval = 0.0  # current retransmission interval (A, E, G or 2xx)
        self.armed: dict[Input, int] = {}
        self.pending_cancel: tuple[Request, str] | None = None  # ICT: CANCEL awaiting a 1xx
        self.dialog_index: tuple[str, str, int] | None = None  # IST in Accepted


class TransactionLayer:
    """All transactions of one endpoint, fed messages and time, returning events."""

    def __init__(self, timers: TimerConfig = TimerConfig()) -> None:
        self.timers = timers
        self._server: dict[TransactionKey, _Transaction] = {}
        self._client: dict[TransactionKey, _Transaction] = {}
        # ACKs for 2xx carry a new branch (§13.2.2.4): find the Accepted INVITE
        # by (Call-ID, From tag, CSeq number) to stop retransmitting the 2xx.
        self._accepted: dict[tuple[str, str, int], _Transaction] = {}
        self._heap: list[tuple[float, int, _Transaction, Input, int]] = []
        self._seq = itertools.count()
        self._out: list[Event] = []

    def __len__(self) -> int:
        return len(self._server) + len(self._client)

    def state_of(self, key: TransactionKey) -> State | None:
        """Current state of a live transaction (for tests, metrics and logs)."""
        tx = (self._server if key.server else self._client).get(key)
        return None if tx is None else tx.state

    # -- server side --------------------------------------------------------

    def receive_request(self, request: Request, source: Address, transport: str,
                        now: float) -> list[Event]:
        out: list[Event] = []
        self._out = out
        if request.method == "ACK":
            tx = self._match_ack(request)
            if tx is None:
                return [AckReceived(request, source)]
            self._step(tx, In.ACK, now, ack=request, source=source)
            return out
        key = _server_key(request, request.method, request.to.tag)
        tx = self._server.get(key)
        if tx is None:
            kind = "IST" if request.method == "INVITE" else "NIST"
            tx = _Transaction(key, kind, request, source, transport)
            self._server[key] = tx
        self._step(tx, In.REQUEST, now)
        return out

    def _match_ack(self, ack: Request) -> _Transaction | None:
        to_tag = ack.to.tag
        key = _server_key(ack, "INVITE", to_tag)
        tx = self._server.get(key)
        if tx is None and key.legacy:
            # The INVITE had no To tag if it created the dialog; the ACK
            # carries the tag of our response (§17.2.3).
            tx = self._server.get(_server_key(ack, "INVITE", None))
        if tx is not None and key.legacy:
            sent = tx.last_response
            if sent is None or sent.to.tag != to_tag:
                tx = None
        if tx is None or tx.state not in (S.COMPLETED, S.CONFIRMED, S.ACCEPTED, S.ACCEPTED_ACKED):
            tx = self._accepted.get((ack.call_id, ack.from_.tag or "", ack.cseq[0]))
        return tx

    def find_invite_for_cancel(self, cancel: Request) -> TransactionKey | None:
        """RFC 3261 §9.2: the INVITE server transaction a CANCEL targets, if live."""
        key = _server_key(cancel, "INVITE", cancel.to.tag)
        return key if key in self._server else None

    def respond(self, key: TransactionKey, response: Response, now: float) -> list[Event]:
        """Send the TU's response on a server transaction. Unknown or
        terminated keys, and responses the state does not allow (a second
        final), are discarded: the result is []."""
        out: list[Event] = []
        self._out = out
        tx = self._server.get(key)
        if tx is not None:
            self._step(tx, _response_input(response.status), now, response=response)
        return out

    # -- client side --------------------------------------------------------

    def send_request(self, request: Request, destination: Address, transport: str,
                     now: float) -> tuple[TransactionKey, list[Event]]:
        """Start a client transaction for `request` (its top Via already holds
        a fresh z9hG4bK branch). An ACK (for a 2xx) is no transaction: it is
        sent once and its key is not stored."""
        key = client_key(request)
        if request.method == "ACK":
            return key, [SendMessage(request, destination, transport)]
        out: list[Event] = []
        self._out = out
        kind = "ICT" if request.method == "INVITE" else "NICT"
        tx = _Transaction(key, kind, request, destination, transport)
        self._client[key] = tx
        self._step(tx, In.TU_REQUEST, now)
        return key, out

    def receive_response(self, response: Response, source: Address, now: float) -> list[Event]:
        """Match by top Via branch and CSeq method (§17.1.3); strays give []."""
        out: list[Event] = []
        self._out = out
        tx = self._client.get(client_key(response))
        if tx is not None:
            self._step(tx, _response_input(response.status), now, response=response)
        return out

    def cancel_request(self, key: TransactionKey, now: float) -> tuple[TransactionKey | None, list[Event]]:
        """CANCEL the client INVITE `key` (§9.1). The CANCEL is sent now if a
        provisional response came, else when the first one comes (its
        SendMessage is then among receive_response's events); if a final
        response already came there is nothing to cancel: (None, []).
        Returns the CANCEL transaction's key for matching its 200."""
        tx = self._client.get(key)
        if tx is None or tx.kind != "ICT" or tx.state not in (S.CALLING, S.PROCEEDING) \
                or tx.pending_cancel is not None:
            return None, []
        cancel = build_cancel(tx.request)
        cancel_key = client_key(cancel)
        if cancel_key in self._client:  # already sent
            return None, []
        if tx.state is S.CALLING:
            tx.pending_cancel = (cancel, tx.transport)
            return cancel_key, []
        out: list[Event] = []
        self._out = out
        self._arm(tx, In.TIMER_CANCEL, 64 * self.timers.t1, now)
        _, events = self.send_request(cancel, tx.peer, tx.transport, now)
        out.extend(events)
        return cancel_key, out

    # -- time ---------------------------------------------------------------

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            _, _, tx, timer, token = heap[0]
            if tx.armed.get(timer) == token:
                return heap[0][0]
            heapq.heappop(heap)
        return None

    def poll(self, now: float) -> list[Event]:
        """Fire every timer due at `now`."""
        out: list[Event] = []
        self._out = out
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, tx, timer, token = heapq.heappop(heap)
            if tx.armed.get(timer) == token:
                del tx.armed[timer]
                self._step(tx, timer, now)
        return out

    # -- the machine --------------------------------------------------------

    def _step(self, tx: _Transaction, event: Input, now: float, *,
              response: Response | None = None, ack: Request | None = None,
              source: Address | None = None) -> None:
        row = tx.table.get((tx.state, event))
        if row is None:
            return
        new_state, actions = row
        if new_state is not tx.state:
            live = tx.live.get(new_state, _NO_TIMERS)
            if tx.armed:
                tx.armed = {t: token for t, token in tx.armed.items() if t in live}
            tx.state = new_state
        out = self._out
        timers = self.timers
        for action in actions:
            if action is A.SEND_REQUEST:
                out.append(SendMessage(tx.request, tx.peer, tx.transport))
            elif action is A.PASS_REQUEST:
                out.append(RequestReceived(tx.key, tx.request, tx.peer, tx.transport))
            elif action is A.PASS_RESPONSE:
                assert response is not None
                out.append(ResponseReceived(tx.key, response))
                if tx.pending_cancel is not None and event is In.R1XX:
                    self._send_pending_cancel(tx, now)
            elif action is A.PASS_ACK:
                assert ack is not None
                out.append(AckReceived(ack, source if source is not None else tx.peer))
            elif action is A.SEND_RESPONSE:
                assert response is not None
                tx.last_response = response
                out.append(SendMessage(response, tx.peer, tx.transport))
            elif action is A.RESEND_RESPONSE:
                if tx.last_response is not None:
                    out.append(SendMessage(tx.last_response, tx.peer, tx.transport))
            elif action is A.RESEND_PROVISIONAL:
                # §17.2.1: the TU is slow; a 100 stops the client's Timer A.
                if tx.last_response is None:
                    tx.last_response = _trying(tx.request)
                out.append(SendMessage(tx.last_response, tx.peer, tx.transport))
            elif action is A.SEND_ACK:
                assert response is not None
                if tx.ack is None:
                    tx.ack = build_ack_for_failure(tx.request, response)
                out.append(SendMessage(tx.ack, tx.peer, tx.transport))
            elif action is A.REPORT_TIMEOUT:
                out.append(TransactionTimedOut(tx.key, tx.request))
            elif action is A.REPORT_ACK_TIMEOUT:
                out.append(AckTimedOut(tx.key, tx.request))
            elif action is A.START_A or action is A.START_E or action is A.START_G \
                    or action is A.START_2XX:
                if not tx.reliable:
                    tx.interval = timers.t1
                    self._arm(tx, _RETRANSMIT_TIMER[action], timers.t1, now)
            elif action is A.DOUBLE_A:
                tx.interval *= 2
                self._arm(tx, In.TIMER_A, tx.interval, now)
            elif action is A.DOUBLE_E or action is A.DOUBLE_G or action is A.DOUBLE_2XX:
                tx.interval = min(2 * tx.interval, timers.t2)
                self._arm(tx, _RETRANSMIT_TIMER[action], tx.interval, now)
            elif action is A.E_T2:
                tx.interval = timers.t2
                self._arm(tx, In.TIMER_E, timers.t2, now)
            elif action is A.START_B:
                self._arm(tx, In.TIMER_B, 64 * timers.t1, now)
            elif action is A.START_F:
                self._arm(tx, In.TIMER_F, 64 * timers.t1, now)
            elif action is A.START_H:
                self._arm(tx, In.TIMER_H, 64 * timers.t1, now)
            elif action is A.START_L:
                self._arm(tx, In.TIMER_L, 64 * timers.t1, now)
            elif action is A.START_M:
                self._arm(tx, In.TIMER_M, 64 * timers.t1, now)
            elif action is A.START_D:
                self._arm(tx, In.TIMER_D, 0.0 if tx.reliable else max(timers.timer_d, 64 * timers.t1), now)
            elif action is A.START_I:
                self._arm(tx, In.TIMER_I, 0.0 if tx.reliable else timers.t4, now)
            elif action is A.START_J:
                self._arm(tx, In.TIMER_J, 0.0 if tx.reliable else 64 * timers.t1, now)
            elif action is A.START_K:
                self._arm(tx, In.TIMER_K, 0.0 if tx.reliable else timers.t4, now)
            else:  # pragma: no cover - every Action is handled above
                raise AssertionError(action)
        if new_state is S.ACCEPTED and tx.kind == "IST" and tx.dialog_index is None:
            request = tx.request
            tx.dialog_index = (request.call_id, request.from_.tag or "", request.cseq[0])
            self._accepted[tx.dialog_index] = tx
        if new_state is S.TERMINATED:
            self._remove(tx)
        elif tx.armed:
            self._fire_zero_timers(tx, now)

    def _arm(self, tx: _Transaction, timer: Input, delay: float, now: float) -> None:
        if delay <= 0:
            tx.armed[timer] = -1  # due now: _step fires it before returning
            return
        token = next(self._seq)
        tx.armed[timer] = token
        heapq.heappush(self._heap, (now + delay, token, tx, timer, token))

    def _fire_zero_timers(self, tx: _Transaction, now: float) -> None:
        for timer, token in list(tx.armed.items()):
            if token == -1 and tx.armed.get(timer) == -1:
                del tx.armed[timer]
                self._step(tx, timer, now)

    def _send_pending_cancel(self, tx: _Transaction, now: float) -> None:
        assert tx.pending_cancel is not None
        cancel, transport = tx.pending_cancel
        tx.pending_cancel = None
        self._arm(tx, In.TIMER_CANCEL, 64 * self.timers.t1, now)
        saved = self._out
        _, events = self.send_request(cancel, tx.peer, transport, now)
        self._out = saved
        saved.extend(events)

    def _remove(self, tx: _Transaction) -> None:
        tx.armed.clear()
        table = self._server if tx.key.server else self._client
        if table.get(tx.key) is tx:
            del table[tx.key]
        if tx.dialog_index is not None and self._accepted.get(tx.dialog_index) is tx:
            del self._accepted[tx.dialog_index]
        # Lazy deletion leaves dead entries in the heap; rebuild when they dominate.
        if len(self._heap) > 256 and len(self._heap) > 4 * len(self):
            self._heap = [e for e in self._heap if e[2].armed.get(e[3]) == e[4]]
            heapq.heapify(self._heap)


_RETRANSMIT_TIMER = {
    A.START_A: In.TIMER_A, A.START_E: In.TIMER_E, A.START_G: In.TIMER_G,
    A.START_2XX: In.TIMER_2XX, A.DOUBLE_E: In.TIMER_E, A.DOUBLE_G: In.TIMER_G,
    A.DOUBLE_2XX: In.TIMER_2XX,
}


def _trying(request: Request) -> Response:
    return make_response(request, 100)


def _copy_fields(request: Request, keys: tuple[str, ...]) -> list[tuple[str, str, str]]:
    return [f for f in request.headers._fields if f[0] in keys]


def build_ack_for_failure(invite: Request, response: Response) -> Request:
    """RFC 3261 §17.1.1.3: the ACK for a non-2xx final response."""
    via = str(invite.top_via)
    fields: list[tuple[str, str, str]] = [("via", "Via", via)]
    fields += _copy_fields(invite, ("from", "call-id"))
    fields.append(("to", "To", response.headers.get("to") or invite.headers.get("to") or ""))
    fields.append(("cseq", "CSeq", f"{invite.cseq[0]} ACK"))
    fields += _copy_fields(invite, ("route",))
    fields.append(("max-forwards", "Max-Forwards", "70"))
    return Request("ACK", invite.uri, Headers(fields))


def build_cancel(invite: Request) -> Request:
    """RFC 3261 §9.1: Request-URI, Call-ID, From, To, CSeq number and the top
    Via of the INVITE, CSeq method CANCEL, the INVITE's Route headers."""
    fields: list[tuple[str, str, str]] = [("via", "Via", str(invite.top_via))]
    fields += _copy_fields(invite, ("from", "to", "call-id"))
    fields.append(("cseq", "CSeq", f"{invite.cseq[0]} CANCEL"))
    fields += _copy_fields(invite, ("route",))
    fields.append(("max-forwards", "Max-Forwards", "70"))
    return Request("CANCEL", invite.uri, Headers(fields))
