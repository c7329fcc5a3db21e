"""The SIP endpoint: parse what the transports deliver, run the transaction
layer against the loop's clock, and hand requests to their method's handler.

It owns the only timer of the SIP stack: one `call_at` for the transaction
layer's next deadline, never one timer per transaction.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Iterable
from typing import Protocol

from events import (
    EventBus,
    SipMessageRejected,
    SipMessageThrottled,
    SipRequestReceived,
    SipResponseSent,
)
from pbx.edge.protection import SourceGuard, Verdict
from pbx.edge.transport import Address, Transports
from pbx.sip.address import NameAddress
from pbx.sip.errors import SipParseError
from pbx.sip.message import Request, Response, make_response, parse_message
from pbx.sip.transaction import (
    AckReceived,
    AckTimedOut,
    Event,
    RequestReceived,
    ResponseReceived,
    SendMessage,
    TimerConfig,
    TransactionKey,
    TransactionLayer,
    TransactionTimedOut,
)
from pbx.sip.uri import Uri

log = logging.getLogger("pbx.edge.endpoint")

SUPPORTED_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "REFER")
# Methods of other SIP extensions: we know them, so 405 rather than 501 (RFC 3261 §8.2.1).
KNOWN_METHODS = frozenset({"PRACK", "UPDATE", "SUBSCRIBE", "NOTIFY", "PUBLISH", "MESSAGE"})
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset()
ALLOW = ", ".join(SUPPORTED_METHODS)

ResponseCallback = Callable[[Response | None], None]
# Unparsable datagrams we cannot answer are logged once per source, then summed up per period:
# RTP or a scanner aimed at the SIP port must not flood the log.
DROP_SUMMARY_PERIOD = 60.0
DROP_SOURCES_TRACKED = 1024


class RequestHandler(Protocol):
    def __call__(self, key: TransactionKey, request: Request, source: Address, transport: str) -> None: ...


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


class SipEndpoint:
    def __init__(self, transports: Transports, events: EventBus, *, timers: TimerConfig,
                 user_agent: str, guard: SourceGuard | None = None) -> None:
        self.transports = transports
        self.guard = guard
        self.events = events
        self.transactions = TransactionLayer(timers)
        self.user_agent = user_agent
        self.handlers: dict[str, RequestHandler] = {}
        self.ack_handler: Callable[[Request, Address], None] | None = None
        # Whether a request that came through a front door is from a caller blocked behind
        # it: the guard, which sees only the front door's address, cannot tell (server.py).
        self.blocked_behind_front_door: Callable[[Request, Address], bool] | None = None
        self.ack_timeout_handler: Callable[[Request], None] | None = None
        self._client_callbacks: dict[TransactionKey, ResponseCallback] = {}
        self._server_methods: dict[TransactionKey, str] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dropped = DroppedMessageLog(self)

    # -- clock -------------------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def now(self) -> float:
        return self.loop.time()

    def _reschedule(self) -> None:
        deadline = self.transactions.next_deadline()
        if deadline is None:
            return
        if self._timer_at is not None and self._timer_at <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._process(self.transactions.poll(self.now()))

    # -- local identity ------------------------------------------------------------
    def local_address(self, transport: str) -> tuple[str, int]:
        local = self.transports.local.get(transport) or next(iter(self.transports.local.values()))
        return local.host, local.port

    def contact(self, transport: str, user: str | None = None, *, secure: bool = False) -> NameAddress:
        """Our Contact for a dialog on `transport`; `secure` when the dialog's request used a
        sips: URI (RFC 3261 §12.1.1 wants sips: back then). Otherwise TLS is said with
        transport=tls: deprecated by RFC 5630, but what phones such as baresip 1.0 accept
        in a sip: dialog (it refuses a sips: Contact there)."""
        host, port = self.local_address(transport)
        if secure and transport == "TLS":
            return NameAddress(Uri("sips", user=user, host=host, port=port))
        params: dict[str, str | None] = {} if transport == "UDP" else {"transport": transport.lower()}
        return NameAddress(Uri("sip", user=user, host=host, port=port, params=params))

    def via(self, transport: str) -> str:
        host, port = self.local_address(transport)
        return f"SIP/2.0/{transport} {host}:{port};branch={new_branch()};rport"

    # -- inbound -------------------------------------------------------------------
    def receive(self, data: bytes, source: Address, transport: str) -> None:
        """Transport callback: one whole message."""
        forbidden = False
        if self.guard is not None:
            verdict = self.guard.admit(source, data.startswith(b"INVITE "), self.now())
            if verdict is not Verdict.ADMIT:
                self.events.publish(SipMessageThrottled(verdict.value, transport))
                if verdict is not Verdict.FORBIDDEN:
                    return
                forbidden = True
        try:
            # A WebSocket message, like a datagram, is one whole message (RFC 7118 §5).
            message = parse_message(data, datagram=transport in ("UDP", "WS", "WSS"))
        except SipParseError as exc:
            if not forbidden:
                self.reject_unparsable(data, exc, source, transport)
            return
        if (not forbidden and isinstance(message, Request) and self.blocked_behind_front_door is not None
                and self.blocked_behind_front_door(message, source)):
            forbidden = True
        if forbidden:
            # Blocked after failed logins: no request is served, not even with the right password.
            if isinstance(message, Request) and message.method != "ACK":
                try:
                    refusal = make_response(message, 403, "Forbidden (blocked)", to_tag=new_tag())
                except SipParseError:
                    return
                self._send_stateless(refusal, source, transport)
            return
        try:
            if isinstance(message, Response):
                self._process(self.transactions.receive_response(message, source, self.now()))
            else:
                self.events.publish(SipRequestReceived(message.method, transport))
                self._process(self.transactions.receive_request(message, source, transport, self.now()))
        except SipParseError as exc:
            # A header parsed lazily turned out malformed: same answer as at parse time.
            if isinstance(message, Request) and message.method != "ACK":
                self._send_stateless(make_response(message, exc.status, exc.reason), source, transport)
            self.events.publish(SipMessageRejected(exc.reason, transport, True))

    def reject_unparsable(self, data: bytes, error: SipParseError, source: Address, transport: str) -> None:
        response = _error_response_from_raw(data, error)
        answered = response is not None
        if response is not None:
            self._send_stateless(response, source, transport)
        else:
            self.dropped.record(source, error.reason)
        self.events.publish(SipMessageRejected(error.reason, transport, answered))

    def _send_stateless(self, response: Response | bytes, destination: Address, transport: str) -> None:
        if isinstance(response, Response):
            self.events.publish(SipResponseSent(response.cseq[1] if _has_cseq(response) else "", response.status))
            response.set_header("Server", self.user_agent)
            data = response.to_bytes()
        else:
            data = response
        self.transports.send(data, destination, transport)

    def _process(self, events: Iterable[Event]) -> None:
        for event in events:
            if isinstance(event, SendMessage):
                self.transports.send(event.message.to_bytes(), event.destination, event.transport)
            elif isinstance(event, RequestReceived):
                self._dispatch(event)
            elif isinstance(event, ResponseReceived):
                callback = self._client_callbacks.get(event.key)
                if callback is not None:
                    if event.response.status >= 200 and event.response.cseq[1] != "INVITE":
                        del self._client_callbacks[event.key]
                    callback(event.response)
            elif isinstance(event, TransactionTimedOut):
                callback = self._client_callbacks.pop(event.key, None)
                if callback is not None:
                    callback(None)
            elif isinstance(event, AckReceived):
                if self.ack_handler is not None:
                    self.ack_handler(event.request, event.source)
            elif isinstance(event, AckTimedOut):
                if self.ack_timeout_handler is not None:
                    self.ack_timeout_handler(event.request)
        self._reschedule()

    def _dispatch(self, event: RequestReceived) -> None:
        request = event.request
        method = request.method
        self._server_methods[event.key] = method
        try:
            refusal = self._precheck(request)
            if refusal is not None:
                self.respond(event.key, refusal)
                return
            handler = self.handlers.get(method)
            if handler is None:
                self.respond(event.key, make_response(request, 501))
                return
            handler(event.key, request, event.source, event.transport)
        except SipParseError as exc:
            self.respond(event.key, make_response(request, exc.status, exc.reason))
        except Exception:
            log.exception("handler for %s failed", method)
            self.respond(event.key, make_response(request, 500))

    def _precheck(self, request: Request) -> Response | None:
        """Checks every request must pass before its handler sees it (RFC 3261 §8.2)."""
        method = request.method
        if method not in SUPPORTED_METHODS:
            if method in KNOWN_METHODS:
                response = make_response(request, 405)
                response.add_header("Allow", ALLOW)
                return response
            return make_response(request, 501)
        if request.uri.scheme not in ("sip", "sips", "tel"):
            response = make_response(request, 416)
            return response
        required = [r for r in request.headers.get_all("require") if r not in SUPPORTED_EXTENSIONS]
        if required and method not in ("CANCEL", "ACK"):
            response = make_response(request, 420)
            response.add_header("Unsupported", ", ".join(required))
            return response
        if method not in ("OPTIONS", "ACK", "CANCEL", "REGISTER"):
            max_forwards = request.int_header("max-forwards", 255)
            if max_forwards == 0:
                return make_response(request, 483)
        return None

    # -- outbound ------------------------------------------------------------------
    def respond(self, key: TransactionKey, response: Response) -> None:
        if response.status > 100 and response.to.tag is None:
            # RFC 3261 §8.2.6.2: every final or provisional answer but 100 tags the To.
            response.set_header("To", str(response.to.with_tag(new_tag())))
        if "server" not in response.headers:
            response.add_header("Server", self.user_agent)
        method = self._server_methods.get(key, "")
        if response.status >= 200:
            self._server_methods.pop(key, None)
        self.events.publish(SipResponseSent(method, response.status))
        self._process(self.transactions.respond(key, response, self.now()))

    def send_request(self, request: Request, destination: Address, transport: str,
                     callback: ResponseCallback | None) -> TransactionKey:
        if "user-agent" not in request.headers:
            request.add_header("User-Agent", self.user_agent)
        key, events = self.transactions.send_request(request, destination, transport, self.now())
        if callback is not None:
            self._client_callbacks[key] = callback
        self._process(events)
        return key

    def cancel(self, key: TransactionKey) -> None:
        """CANCEL our INVITE `key` (sent once a provisional response has come, §9.1)."""
        _, events = self.transactions.cancel_request(key, self.now())
        self._process(events)

    @property
    def requests_awaiting_answers(self) -> int:
        """Our requests whose answers someone still waits for (their callbacks)."""
        return len(self._client_callbacks)

    def forget_client(self, key: TransactionKey) -> None:
        self._client_callbacks.pop(key, None)

    def send_raw(self, message: Request | Response, destination: Address, transport: str) -> None:
        """Send outside any transaction: ACK for a 2xx and 2xx retransmission belong to the dialog."""
        self.transports.send(message.to_bytes(), destination, transport)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.dropped.flush()


class DroppedMessageLog:
    """Logs unparsable messages that got no answer: the first from each source address,
    then one summary line per source and period ("N ... dropped from X in the last minute")."""

    def __init__(self, endpoint: SipEndpoint) -> None:
        self._endpoint = endpoint
        self._suppressed: dict[str, int] = {}  # source host -> drops since its last line
        self._overflow = 0  # drops from sources beyond DROP_SOURCES_TRACKED
        self._timer: asyncio.TimerHandle | None = None

    def record(self, source: Address, reason: str) -> None:
        host = source[0]
        seen = self._suppressed.get(host)
        if seen is not None:
            self._suppressed[host] = seen + 1
        elif len(self._suppressed) >= DROP_SOURCES_TRACKED:
            self._overflow += 1
        else:
            self._suppressed[host] = 0
            log.warning("dropped unparsable message from %s:%d: %s (further ones from %s are "
                        "summed up every %.0f s)", host, source[1], reason, host, DROP_SUMMARY_PERIOD)
        if self._timer is None:
            self._timer = self._endpoint.loop.call_later(DROP_SUMMARY_PERIOD, self.flush)

    def flush(self) -> None:
        """Write the summaries of the period; sources that sent nothing since are forgotten,
        so their next drop is logged in full again."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        quiet = [host for host, count in self._suppressed.items() if count == 0]
        for host, count in self._suppressed.items():
            if count:
                log.warning("%d unparsable messages dropped from %s in the last %.0f s", count, host,
                            DROP_SUMMARY_PERIOD)
                self._suppressed[host] = 0
        for host in quiet:
            del self._suppressed[host]
        if self._overflow:
            log.warning("%d unparsable messages dropped from other sources in the last %.0f s",
                        self._overflow, DROP_SUMMARY_PERIOD)
            self._overflow = 0
        if self._suppressed:
            self._timer = self._endpoint.loop.call_later(DROP_SUMMARY_PERIOD, self.flush)


def _has_cseq(message: Response) -> bool:
    try:
        message.cseq  # noqa: B018
    except SipParseError:
        return False
    return True


_ECHOED = {b"via": b"Via", b"v": b"Via", b"from": b"From", b"f": b"From", b"to": b"To",
           b"t": b"To", b"call-id": b"Call-ID", b"i": b"Call-ID", b"cseq": b"CSeq"}


def _error_response_from_raw(data: bytes, error: SipParseError) -> bytes | None:
    """A 4xx/5xx for a request we could not parse, echoing its raw Via, From, To,
    Call-ID and CSeq lines (RFC 3261 §8.2.6.2) so the client can match it.
    None when it is a response or has no Via: nothing can be sent back then."""
    data = data.lstrip(b"\r\n")
    if data[:4].upper() == b"SIP/":
        return None
    # Lines may end in a bare LF (RFC 3261 §7.5 asks for CRLF; some senders do not).
    head = data.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].replace(b"\n ", b" ").replace(b"\n\t", b" ")
    echoed: list[bytes] = []
    has_via = False
    for line in head.split(b"\n")[1:]:
        name, sep, value = line.partition(b":")
        canonical = _ECHOED.get(name.strip().lower())
        if sep and canonical is not None:
            has_via = has_via or canonical == b"Via"
            echoed.append(canonical + b": " + value.strip())
    if not has_via:
        return None
    reason = error.reason.encode("ascii", "replace").replace(b"\r", b" ").replace(b"\n", b" ")
    status = str(error.status).encode()
    return (b"SIP/2.0 " + status + b" " + reason + b"\r\n" + b"\r\n".join(echoed)
            + b"\r\nServer: Centralita\r\nContent-Length: 0\r\n\r\n")
