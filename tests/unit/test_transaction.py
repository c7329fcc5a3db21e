"""RFC 3261 §17 / RFC 6026 transactions, driven with explicit times."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbx.sip.message import Request, Response, make_response, parse_message
from pbx.sip.transaction import (
    TABLES,
    AckReceived,
    AckTimedOut,
    Event,
    Input,
    RequestReceived,
    ResponseReceived,
    SendMessage,
    State,
    TimerConfig,
    TransactionKey,
    TransactionLayer,
    TransactionTimedOut,
    build_cancel,
    client_key,
    server_key,
)

PEER = ("192.0.2.10", 5060)
ME = ("192.0.2.1", 5060)
T1, T2, T4 = 0.5, 4.0, 5.0


def request(method: str = "INVITE", *, branch: str | None = "z9hG4bK776asdhds",
            to_tag: str | None = None, cseq: int = 1, cseq_method: str | None = None,
            uri: str = "sip:bob@biloxi.com", via_host: str = "pc33.atlanta.com",
            extra: str = "") -> Request:
    via = f"SIP/2.0/UDP {via_host}" + (f";branch={branch}" if branch is not None else "")
    to = "Bob <sip:bob@biloxi.com>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "Max-Forwards: 70\r\n"
        f"To: {to}\r\n"
        "From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n"
        "Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        "Contact: <sip:alice@pc33.atlanta.com>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def response(req: Request, status: int, to_tag: str | None = "a6c85cf") -> Response:
    return make_response(req, status, to_tag=to_tag if status != 100 else None)


def ack_for_2xx(invite: Request, resp: Response) -> Request:
    """The UAC's ACK for a 2xx: same CSeq number, a NEW branch (§13.2.2.4)."""
    return request("ACK", branch="z9hG4bKnewack", to_tag=resp.to.tag, cseq=invite.cseq[0])


def ack_for_failure(invite: Request, resp: Response) -> Request:
    """The UAC transaction's ACK for a non-2xx: the INVITE's branch (§17.1.1.3)."""
    return request("ACK", branch=invite.branch, to_tag=resp.to.tag, cseq=invite.cseq[0],
                   via_host=invite.top_via.host)


def describe(events: list[Event]) -> list[str]:
    out = []
    for event in events:
        if isinstance(event, SendMessage):
            message = event.message
            out.append(f"send {message.method if isinstance(message, Request) else message.status}")
        elif isinstance(event, RequestReceived):
            out.append(f"request {event.request.method}")
        elif isinstance(event, ResponseReceived):
            out.append(f"response {event.response.status}")
        elif isinstance(event, AckReceived):
            out.append("ack")
        elif isinstance(event, TransactionTimedOut):
            out.append("timeout")
        elif isinstance(event, AckTimedOut):
            out.append("ack timeout")
    return out


def drain(layer: TransactionLayer, until: float = 10_000.0) -> list[Event]:
    events: list[Event] = []
    while (deadline := layer.next_deadline()) is not None and deadline <= until:
        events += layer.poll(deadline)
    return events


def deadlines(layer: TransactionLayer, until: float) -> list[float]:
    """Times at which timers fire, polling exactly at each deadline."""
    times = []
    while (deadline := layer.next_deadline()) is not None and deadline <= until:
        times.append(deadline)
        layer.poll(deadline)
    return times


# -- every row of every table ------------------------------------------------
#
# A second, hand-written transcription of RFC 3261 figures 5-8 and RFC 6026
# figures 3 and 5: (machine, state, input) -> (state after, what the adapter/TU
# sees). None as the state means Terminated (the transaction is gone).

EXPECTED: dict[tuple[str, State, Input], tuple[State | None, list[str]]] = {
    # Figure 5 + RFC 6026 Figure 3 + §9.1
    ("ICT", State.INIT, Input.TU_REQUEST): (State.CALLING, ["send INVITE"]),
    ("ICT", State.CALLING, Input.TIMER_A): (State.CALLING, ["send INVITE"]),
    ("ICT", State.CALLING, Input.TIMER_B): (None, ["timeout"]),
    ("ICT", State.CALLING, Input.R1XX): (State.PROCEEDING, ["response 180"]),
    ("ICT", State.CALLING, Input.R2XX): (State.ACCEPTED, ["response 200"]),
    ("ICT", State.CALLING, Input.R3XX_6XX): (State.COMPLETED, ["send ACK", "response 486"]),
    ("ICT", State.PROCEEDING, Input.R1XX): (State.PROCEEDING, ["response 180"]),
    ("ICT", State.PROCEEDING, Input.R2XX): (State.ACCEPTED, ["response 200"]),
    ("ICT", State.PROCEEDING, Input.R3XX_6XX): (State.COMPLETED, ["send ACK", "response 486"]),
    ("ICT", State.PROCEEDING, Input.TIMER_CANCEL): (None, ["timeout"]),
    ("ICT", State.COMPLETED, Input.R3XX_6XX): (State.COMPLETED, ["send ACK"]),
    ("ICT", State.COMPLETED, Input.TIMER_D): (None, []),
    ("ICT", State.ACCEPTED, Input.R2XX): (State.ACCEPTED, ["response 200"]),
    ("ICT", State.ACCEPTED, Input.TIMER_M): (None, []),
    # Figure 6
    ("NICT", State.INIT, Input.TU_REQUEST): (State.TRYING, ["send OPTIONS"]),
    ("NICT", State.TRYING, Input.TIMER_E): (State.TRYING, ["send OPTIONS"]),
    ("NICT", State.TRYING, Input.TIMER_F): (None, ["timeout"]),
    ("NICT", State.TRYING, Input.R1XX): (State.PROCEEDING, ["response 180"]),
    ("NICT", State.TRYING, Input.R2XX): (State.COMPLETED, ["response 200"]),
    ("NICT", State.TRYING, Input.R3XX_6XX): (State.COMPLETED, ["response 486"]),
    ("NICT", State.PROCEEDING, Input.TIMER_E): (State.PROCEEDING, ["send OPTIONS"]),
    ("NICT", State.PROCEEDING, Input.TIMER_F): (None, ["timeout"]),
    ("NICT", State.PROCEEDING, Input.R1XX): (State.PROCEEDING, ["response 180"]),
    ("NICT", State.PROCEEDING, Input.R2XX): (State.COMPLETED, ["response 200"]),
    ("NICT", State.PROCEEDING, Input.R3XX_6XX): (State.COMPLETED, ["response 486"]),
    ("NICT", State.COMPLETED, Input.R1XX): (State.COMPLETED, []),
    ("NICT", State.COMPLETED, Input.R2XX): (State.COMPLETED, []),
    ("NICT", State.COMPLETED, Input.R3XX_6XX): (State.COMPLETED, []),
    ("NICT", State.COMPLETED, Input.TIMER_K): (None, []),
    # Figure 7 + RFC 6026 Figure 5 + §13.3.1.4
    ("IST", State.INIT, Input.REQUEST): (State.PROCEEDING, ["request INVITE"]),
    ("IST", State.PROCEEDING, Input.REQUEST): (State.PROCEEDING, ["send 100"]),
    ("IST", State.PROCEEDING, Input.R1XX): (State.PROCEEDING, ["send 180"]),
    ("IST", State.PROCEEDING, Input.R2XX): (State.ACCEPTED, ["send 200"]),
    ("IST", State.PROCEEDING, Input.R3XX_6XX): (State.COMPLETED, ["send 486"]),
    ("IST", State.COMPLETED, Input.REQUEST): (State.COMPLETED, ["send 486"]),
    ("IST", State.COMPLETED, Input.TIMER_G): (State.COMPLETED, ["send 486"]),
    ("IST", State.COMPLETED, Input.TIMER_H): (None, ["timeout"]),
    ("IST", State.COMPLETED, Input.ACK): (State.CONFIRMED, []),
    ("IST", State.CONFIRMED, Input.REQUEST): (State.CONFIRMED, []),
    ("IST", State.CONFIRMED, Input.ACK): (State.CONFIRMED, []),
    ("IST", State.CONFIRMED, Input.TIMER_I): (None, []),
    ("IST", State.ACCEPTED, Input.REQUEST): (State.ACCEPTED, []),
    ("IST", State.ACCEPTED, Input.R2XX): (State.ACCEPTED, ["send 200"]),
    ("IST", State.ACCEPTED, Input.TIMER_2XX): (State.ACCEPTED, ["send 200"]),
    ("IST", State.ACCEPTED, Input.ACK): (State.ACCEPTED_ACKED, ["ack"]),
    ("IST", State.ACCEPTED, Input.TIMER_L): (None, ["ack timeout"]),
    ("IST", State.ACCEPTED_ACKED, Input.REQUEST): (State.ACCEPTED_ACKED, []),
    ("IST", State.ACCEPTED_ACKED, Input.R2XX): (State.ACCEPTED_ACKED, ["send 200"]),
    ("IST", State.ACCEPTED_ACKED, Input.ACK): (State.ACCEPTED_ACKED, ["ack"]),
    ("IST", State.ACCEPTED_ACKED, Input.TIMER_L): (None, []),
    # Figure 8
    ("NIST", State.INIT, Input.REQUEST): (State.TRYING, ["request OPTIONS"]),
    ("NIST", State.TRYING, Input.REQUEST): (State.TRYING, []),
    ("NIST", State.TRYING, Input.R1XX): (State.PROCEEDING, ["send 180"]),
    ("NIST", State.TRYING, Input.R2XX): (State.COMPLETED, ["send 200"]),
    ("NIST", State.TRYING, Input.R3XX_6XX): (State.COMPLETED, ["send 486"]),
    ("NIST", State.PROCEEDING, Input.REQUEST): (State.PROCEEDING, ["send 180"]),
    ("NIST", State.PROCEEDING, Input.R1XX): (State.PROCEEDING, ["send 180"]),
    ("NIST", State.PROCEEDING, Input.R2XX): (State.COMPLETED, ["send 200"]),
    ("NIST", State.PROCEEDING, Input.R3XX_6XX): (State.COMPLETED, ["send 486"]),
    ("NIST", State.COMPLETED, Input.REQUEST): (State.COMPLETED, ["send 200"]),
    ("NIST", State.COMPLETED, Input.TIMER_J): (None, []),
}

# When each timer fires, counted from the moment the transaction entered the
# state (every path below runs at now=0).
TIMER_AT = {
    Input.TIMER_A: T1, Input.TIMER_B: 64 * T1, Input.TIMER_D: 32.0, Input.TIMER_E: T1,
    Input.TIMER_F: 64 * T1, Input.TIMER_G: T1, Input.TIMER_H: 64 * T1, Input.TIMER_I: T4,
    Input.TIMER_J: 64 * T1, Input.TIMER_K: T4, Input.TIMER_L: 64 * T1, Input.TIMER_M: 64 * T1,
    Input.TIMER_2XX: T1, Input.TIMER_CANCEL: 64 * T1,
}


class Harness:
    """Brings one transaction of a given machine into a given state at now=0."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.layer = TransactionLayer()
        self.method = "INVITE" if kind in ("ICT", "IST") else "OPTIONS"
        self.req = request(self.method)
        self.key: TransactionKey = (client_key(self.req) if kind in ("ICT", "NICT")
                                    else server_key(self.req))
        self.last_final: Response | None = None

    @property
    def client(self) -> bool:
        return self.kind in ("ICT", "NICT")

    def apply(self, event: Input, now: float = 0.0) -> list[Event]:
        layer = self.layer
        if event is Input.TU_REQUEST:
            key, events = layer.send_request(self.req, PEER, "UDP", now)
            assert key == self.key
            return events
        if event is Input.REQUEST:
            return layer.receive_request(self.req, PEER, "UDP", now)
        if event is Input.ACK:
            final = self.last_final
            assert final is not None
            ack = ack_for_2xx(self.req, final) if final.status < 300 else ack_for_failure(self.req, final)
            return layer.receive_request(ack, PEER, "UDP", now)
        if event in (Input.R1XX, Input.R2XX, Input.R3XX_6XX):
            status = {Input.R1XX: 180, Input.R2XX: 200, Input.R3XX_6XX: 486}[event]
            resp = response(self.req, status)
            if status >= 200:
                self.last_final = resp
            if self.client:
                return layer.receive_response(resp, PEER, now)
            return layer.respond(self.key, resp, now)
        # A timer: flush what fires earlier, then poll exactly at its deadline.
        at = now + TIMER_AT[event]
        layer.poll(at - 0.01)
        return [e for e in layer.poll(at) if getattr(e, "key", self.key) == self.key]

    def reach(self, state: State) -> None:
        paths: dict[tuple[str, State], list[Input]] = {
            ("ICT", State.CALLING): [Input.TU_REQUEST],
            ("ICT", State.PROCEEDING): [Input.TU_REQUEST, Input.R1XX],
            ("ICT", State.COMPLETED): [Input.TU_REQUEST, Input.R3XX_6XX],
            ("ICT", State.ACCEPTED): [Input.TU_REQUEST, Input.R2XX],
            ("NICT", State.TRYING): [Input.TU_REQUEST],
            ("NICT", State.PROCEEDING): [Input.TU_REQUEST, Input.R1XX],
            ("NICT", State.COMPLETED): [Input.TU_REQUEST, Input.R2XX],
            ("IST", State.PROCEEDING): [Input.REQUEST],
            ("IST", State.COMPLETED): [Input.REQUEST, Input.R3XX_6XX],
            ("IST", State.CONFIRMED): [Input.REQUEST, Input.R3XX_6XX, Input.ACK],
            ("IST", State.ACCEPTED): [Input.REQUEST, Input.R2XX],
            ("IST", State.ACCEPTED_ACKED): [Input.REQUEST, Input.R2XX, Input.ACK],
            ("NIST", State.TRYING): [Input.REQUEST],
            ("NIST", State.PROCEEDING): [Input.REQUEST, Input.R1XX],
            ("NIST", State.COMPLETED): [Input.REQUEST, Input.R2XX],
        }
        for step in paths.get((self.kind, state), []):
            self.apply(step)
        assert self.state() == (None if state is State.INIT else state)
        if (self.kind, state) == ("ICT", State.PROCEEDING):
            # Arms §9.1's wait; the CANCEL's own transaction is another key.
            self.layer.cancel_request(self.key, 0.0)

    def state(self) -> State | None:
        return self.layer.state_of(self.key)


def test_expected_covers_every_table_row() -> None:
    rows = {(kind, state, event) for kind, table in TABLES.items() for (state, event) in table}
    assert rows == set(EXPECTED)


@pytest.mark.parametrize("row", sorted(EXPECTED, key=str), ids=lambda r: f"{r[0]}-{r[1]}-{r[2]}")
def test_table_row(row: tuple[str, State, Input]) -> None:
    kind, state, event = row
    harness = Harness(kind)
    harness.reach(state)
    events = harness.apply(event)
    new_state, seen = EXPECTED[row]
    assert describe(events) == seen
    assert harness.state() == new_state


@pytest.mark.parametrize("kind", ["ICT", "NICT", "IST", "NIST"])
def test_inputs_missing_from_a_table_change_nothing(kind: str) -> None:
    table = TABLES[kind]
    for state in {s for (s, _) in table} - {State.INIT}:
        for event in (Input.R1XX, Input.R2XX, Input.R3XX_6XX):
            if (state, event) in table:
                continue
            harness = Harness(kind)
            harness.reach(state)
            assert harness.apply(event) == []
            assert harness.state() == state


# -- retransmission schedules ------------------------------------------------


def test_invite_client_timer_a_doubles_until_timer_b() -> None:
    layer = TransactionLayer()
    key, events = layer.send_request(request(), PEER, "UDP", 0.0)
    assert describe(events) == ["send INVITE"]
    sent: list[tuple[float, list[str]]] = []
    while (deadline := layer.next_deadline()) is not None:
        sent.append((deadline, describe(layer.poll(deadline))))
    assert sent == [(0.5, ["send INVITE"]), (1.5, ["send INVITE"]), (3.5, ["send INVITE"]),
                    (7.5, ["send INVITE"]), (15.5, ["send INVITE"]), (31.5, ["send INVITE"]),
                    (32.0, ["timeout"])]
    assert len(layer) == 0


def test_non_invite_client_timer_e_caps_at_t2_then_t2_in_proceeding() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    layer.send_request(req, PEER, "UDP", 0.0)
    assert deadlines(layer, 12.0) == [0.5, 1.5, 3.5, 7.5, 11.5]
    layer.receive_response(response(req, 100), PEER, 12.0)
    # Proceeding: the pending E (15.5) fires, then every T2.
    assert deadlines(layer, 25.0) == [15.5, 19.5, 23.5]
    # Polled late, the 27.5 retransmission fires once and the next one is
    # counted from now (no burst after a stall); then Timer F.
    assert describe(layer.poll(32.0)) == ["send OPTIONS", "timeout"]
    assert len(layer) == 0


def test_custom_timer_config_scales_schedules() -> None:
    layer = TransactionLayer(TimerConfig(t1=0.1, t2=0.4, t4=1.0))
    layer.send_request(request("OPTIONS"), PEER, "UDP", 0.0)
    assert deadlines(layer, 100.0) == pytest.approx(
        [0.1, 0.3, 0.7, 1.1, 1.5, 1.9, 2.3, 2.7, 3.1, 3.5, 3.9, 4.3, 4.7, 5.1, 5.5, 5.9, 6.3, 6.4])


def test_invite_server_timer_g_capped_at_t2_until_timer_h() -> None:
    layer = TransactionLayer()
    inv = request()
    (received,) = layer.receive_request(inv, PEER, "UDP", 0.0)
    assert isinstance(received, RequestReceived)
    layer.respond(received.key, response(inv, 486), 0.0)
    fired: list[tuple[float, list[str]]] = []
    while (deadline := layer.next_deadline()) is not None:
        fired.append((deadline, describe(layer.poll(deadline))))
    times = [t for t, _ in fired]
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5, 32.0]
    assert all(seen == ["send 486"] for _, seen in fired[:-1])
    assert fired[-1][1] == ["timeout"]
    assert len(layer) == 0


def test_2xx_retransmitted_until_ack_then_only_timer_l() -> None:
    layer = TransactionLayer()
    inv = request()
    (received,) = layer.receive_request(inv, PEER, "UDP", 0.0)
    ok = response(inv, 200)
    assert describe(layer.respond(received.key, ok, 0.0)) == ["send 200"]
    assert describe(layer.poll(0.5)) == ["send 200"]
    assert describe(layer.poll(1.5)) == ["send 200"]
    events = layer.receive_request(ack_for_2xx(inv, ok), PEER, "UDP", 2.0)
    assert describe(events) == ["ack"]
    assert layer.next_deadline() == 32.0  # Timer L only
    # A retransmitted INVITE is absorbed; a second ACK still reaches the TU.
    assert layer.receive_request(inv, PEER, "UDP", 3.0) == []
    assert describe(layer.receive_request(ack_for_2xx(inv, ok), PEER, "UDP", 3.0)) == ["ack"]
    assert layer.poll(32.0) == []
    assert len(layer) == 0


def test_2xx_never_acked_reports_ack_timeout() -> None:
    layer = TransactionLayer()
    inv = request()
    (received,) = layer.receive_request(inv, PEER, "UDP", 0.0)
    layer.respond(received.key, response(inv, 200), 0.0)
    events = drain(layer)
    assert describe(events).count("send 200") == 10  # 0.5 1.5 3.5 7.5 ... 31.5
    assert events[-1] == AckTimedOut(received.key, inv)
    assert len(layer) == 0


def test_ack_for_2xx_reusing_invite_branch_also_stops_retransmission() -> None:
    layer = TransactionLayer()
    inv = request()
    (received,) = layer.receive_request(inv, PEER, "UDP", 0.0)
    ok = response(inv, 200)
    layer.respond(received.key, ok, 0.0)
    assert describe(layer.receive_request(ack_for_failure(inv, ok), PEER, "UDP", 0.1)) == ["ack"]
    assert layer.state_of(received.key) is State.ACCEPTED_ACKED


# -- reliable transports -------------------------------------------------------


def test_reliable_invite_client_has_no_timer_a() -> None:
    layer = TransactionLayer()
    inv = request()
    key, _ = layer.send_request(inv, PEER, "TCP", 0.0)
    assert deadlines(layer, 100.0) == [32.0]
    assert len(layer) == 0


def test_reliable_invite_client_failure_acks_and_terminates_at_once() -> None:
    layer = TransactionLayer()
    inv = request()
    key, _ = layer.send_request(inv, PEER, "TCP", 0.0)
    events = layer.receive_response(response(inv, 486), PEER, 0.1)
    assert describe(events) == ["send ACK", "response 486"]
    assert len(layer) == 0 and layer.next_deadline() is None


def test_reliable_non_invite_client_no_timer_e_and_k_is_zero() -> None:
    layer = TransactionLayer()
    req = request("BYE")
    layer.send_request(req, PEER, "TCP", 0.0)
    assert layer.next_deadline() == 32.0
    assert describe(layer.receive_response(response(req, 200), PEER, 1.0)) == ["response 200"]
    assert len(layer) == 0


def test_reliable_invite_server_no_timer_g_and_i_is_zero() -> None:
    layer = TransactionLayer()
    inv = request()
    (received,) = layer.receive_request(inv, PEER, "TCP", 0.0)
    fail = response(inv, 486)
    layer.respond(received.key, fail, 0.0)
    assert layer.next_deadline() == 32.0  # Timer H, no G
    assert layer.receive_request(ack_for_failure(inv, fail), PEER, "TCP", 1.0) == []
    assert len(layer) == 0


def test_reliable_invite_server_2xx_not_retransmitted() -> None:
    layer = TransactionLayer()
    inv = request()
    (received,) = layer.receive_request(inv, PEER, "TCP", 0.0)
    layer.respond(received.key, response(inv, 200), 0.0)
    assert deadlines(layer, 100.0) == [32.0]


def test_reliable_non_invite_server_terminates_on_final() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    (received,) = layer.receive_request(req, PEER, "TCP", 0.0)
    assert describe(layer.respond(received.key, response(req, 200), 0.0)) == ["send 200"]
    assert len(layer) == 0


# -- server matching -----------------------------------------------------------


def test_request_retransmission_absorbed_and_final_resent() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    (received,) = layer.receive_request(req, PEER, "UDP", 0.0)
    assert received.source == PEER and received.transport == "UDP"
    assert layer.receive_request(req, PEER, "UDP", 0.1) == []
    ok = response(req, 200)
    layer.respond(received.key, ok, 0.2)
    (resent,) = layer.receive_request(req, PEER, "UDP", 0.3)
    assert resent == SendMessage(ok, PEER, "UDP")
    # A second final from the TU is discarded in Completed.
    assert layer.respond(received.key, response(req, 500), 0.4) == []


def test_responses_go_to_the_request_source() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS", via_host="10.0.0.99:5070")  # Via says one thing ...
    nat = ("203.0.113.7", 40000)  # ... the packet came from another
    (received,) = layer.receive_request(req, nat, "UDP", 0.0)
    (sent,) = layer.respond(received.key, response(req, 200), 0.0)
    assert isinstance(sent, SendMessage) and sent.destination == nat


def test_invite_retransmission_before_any_response_gets_100_trying() -> None:
    layer = TransactionLayer()
    inv = request()
    layer.receive_request(inv, PEER, "UDP", 0.0)
    (sent,) = layer.receive_request(inv, PEER, "UDP", 0.5)
    assert isinstance(sent, SendMessage)
    trying = sent.message
    assert isinstance(trying, Response) and trying.status == 100 and trying.to.tag is None


def test_same_branch_different_method_or_sent_by_are_different_transactions() -> None:
    layer = TransactionLayer()
    layer.receive_request(request("INVITE"), PEER, "UDP", 0.0)
    cancel = request("CANCEL", cseq_method="CANCEL")
    assert describe(layer.receive_request(cancel, PEER, "UDP", 0.1)) == ["request CANCEL"]
    other_host = request("INVITE", via_host="other.example.com")
    assert describe(layer.receive_request(other_host, PEER, "UDP", 0.2)) == ["request INVITE"]
    assert len(layer) == 3


def test_ack_matching_nothing_goes_to_tu() -> None:
    layer = TransactionLayer()
    ack = request("ACK", branch="z9hG4bKlost", to_tag="x")
    assert layer.receive_request(ack, PEER, "UDP", 0.0) == [AckReceived(ack, PEER)]
    assert len(layer) == 0


def test_cancel_matching_per_9_2() -> None:
    layer = TransactionLayer()
    inv = request()
    (received,) = layer.receive_request(inv, PEER, "UDP", 0.0)
    cancel = build_cancel(inv)
    assert layer.find_invite_for_cancel(cancel) == received.key
    (cancel_received,) = layer.receive_request(cancel, PEER, "UDP", 0.1)
    assert isinstance(cancel_received, RequestReceived)
    assert cancel_received.key != received.key
    stray = request("CANCEL", branch="z9hG4bKother", cseq_method="CANCEL")
    assert layer.find_invite_for_cancel(stray) is None
    # Once the INVITE is gone, the TU answers the CANCEL with 481.
    layer.respond(received.key, response(inv, 487), 0.2)
    layer.receive_request(ack_for_failure(inv, response(inv, 487)), PEER, "UDP", 0.3)
    drain(layer)
    assert layer.find_invite_for_cancel(cancel) is None


# -- RFC 2543 peers (RFC 4475 §3.4.? inv2543, badbranch) ----------------------


@pytest.mark.parametrize("branch", [None, "z9hG4bK", "1234abcd"])
def test_rfc2543_matching(branch: str | None) -> None:
    layer = TransactionLayer()
    inv = request(branch=branch)
    (received,) = layer.receive_request(inv, PEER, "UDP", 0.0)
    assert received.key.legacy and received.key.branch == ""
    assert describe(layer.receive_request(request(branch=branch), PEER, "UDP", 0.1)) == ["send 100"]
    # A different CSeq is a new transaction.
    assert describe(layer.receive_request(request(branch=branch, cseq=2), PEER, "UDP", 0.2)) == [
        "request INVITE"]
    fail = response(inv, 486)
    layer.respond(received.key, fail, 0.3)
    # ACK with a wrong To tag does not match; the right one is absorbed.
    wrong = request("ACK", branch=branch, to_tag="not-ours")
    assert layer.receive_request(wrong, PEER, "UDP", 0.4) == [AckReceived(wrong, PEER)]
    assert layer.receive_request(request("ACK", branch=branch, to_tag=fail.to.tag), PEER, "UDP",
                                 0.5) == []
    assert layer.state_of(received.key) is State.CONFIRMED
    cancel = request("CANCEL", branch=branch, cseq_method="CANCEL")
    assert layer.find_invite_for_cancel(cancel) == received.key


def test_rfc4475_inv2543_message_is_accepted() -> None:
    # RFC 4475 §3.4.4 (abridged): no branch, no From tag.
    text = (
        "INVITE sip:UserB@example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.15\r\n"
        "From: <sip:UserA@example.com>\r\n"
        "To: <sip:UserB@example.com>\r\n"
        "Call-ID: 98asdh@192.0.2.15\r\n"
        "CSeq: 63104 INVITE\r\n"
        "Contact: <sip:UserA@192.0.2.15>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    inv = parse_message(text.encode())
    assert isinstance(inv, Request)
    layer = TransactionLayer()
    (received,) = layer.receive_request(inv, PEER, "UDP", 0.0)
    assert isinstance(received, RequestReceived)
    again = layer.receive_request(parse_message(text.encode()), PEER, "UDP", 0.1)
    assert describe(again) == ["send 100"]
    assert len(layer) == 1


# -- client side -------------------------------------------------------------


def test_ack_for_non_2xx_built_per_17_1_1_3() -> None:
    layer = TransactionLayer()
    route = "Route: <sip:proxy1.example.com;lr>, <sip:proxy2.example.com;lr>\r\n"
    inv = request(extra=route)
    layer.send_request(inv, PEER, "UDP", 0.0)
    fail = response(inv, 486)
    (sent, passed) = layer.receive_response(fail, PEER, 0.1)
    assert isinstance(sent, SendMessage) and isinstance(passed, ResponseReceived)
    ack = sent.message
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert str(ack.uri) == str(inv.uri)
    assert ack.call_id == inv.call_id
    assert ack.from_.tag == inv.from_.tag
    assert ack.to.tag == fail.to.tag
    assert ack.cseq == (inv.cseq[0], "ACK")
    assert [str(v) for v in ack.vias] == [str(inv.top_via)]
    assert ack.headers.get_all("route") == inv.headers.get_all("route")
    reparsed = parse_message(ack.to_bytes())
    assert isinstance(reparsed, Request) and reparsed.branch == inv.branch
    # A retransmitted 486 is answered with the same ACK and not passed up.
    assert layer.receive_response(fail, PEER, 0.2) == [SendMessage(ack, PEER, "UDP")]


def test_2xx_retransmissions_passed_up_in_accepted() -> None:
    layer = TransactionLayer()
    inv = request()
    key, _ = layer.send_request(inv, PEER, "UDP", 0.0)
    ok = response(inv, 200)
    assert layer.receive_response(ok, PEER, 0.1) == [ResponseReceived(key, ok)]
    assert layer.receive_response(ok, PEER, 0.6) == [ResponseReceived(key, ok)]
    assert deadlines(layer, 100.0) == [0.1 + 64 * T1]
    assert len(layer) == 0


def test_stray_responses_are_dropped() -> None:
    layer = TransactionLayer()
    inv = request()
    layer.send_request(inv, PEER, "UDP", 0.0)
    other = request(branch="z9hG4bKother")
    assert layer.receive_response(response(other, 200), PEER, 0.1) == []
    wrong_method = request("OPTIONS", branch=inv.branch)
    assert layer.receive_response(response(wrong_method, 200), PEER, 0.1) == []


def test_cancel_waits_for_provisional_then_is_sent() -> None:
    layer = TransactionLayer()
    inv = request(extra="Route: <sip:proxy.example.com;lr>\r\n")
    key, _ = layer.send_request(inv, PEER, "UDP", 0.0)
    cancel_key, events = layer.cancel_request(key, 0.1)
    assert events == [] and cancel_key is not None
    events = layer.receive_response(response(inv, 180), PEER, 0.2)
    assert describe(events) == ["response 180", "send CANCEL"]
    cancel = events[1].message  # type: ignore[union-attr]
    assert isinstance(cancel, Request)
    assert str(cancel.uri) == str(inv.uri) and cancel.call_id == inv.call_id
    assert cancel.headers.get("to") == inv.headers.get("to")
    assert cancel.headers.get("from") == inv.headers.get("from")
    assert cancel.cseq == (inv.cseq[0], "CANCEL")
    assert [str(v) for v in cancel.vias] == [str(inv.top_via)]
    assert cancel.headers.get_all("route") == inv.headers.get_all("route")
    assert client_key(cancel) == cancel_key
    assert describe(layer.receive_response(response(cancel, 200), PEER, 0.3)) == ["response 200"]
    assert describe(layer.receive_response(response(inv, 487), PEER, 0.4)) == [
        "send ACK", "response 487"]
    drain(layer)
    assert len(layer) == 0


def test_cancel_in_proceeding_is_sent_at_once_and_nothing_after_final() -> None:
    layer = TransactionLayer()
    inv = request()
    key, _ = layer.send_request(inv, PEER, "UDP", 0.0)
    layer.receive_response(response(inv, 183), PEER, 0.1)
    cancel_key, events = layer.cancel_request(key, 0.2)
    assert describe(events) == ["send CANCEL"]
    assert layer.cancel_request(key, 0.3) == (None, [])  # only once
    layer.receive_response(response(inv, 200), PEER, 0.4)  # the answer won the race
    assert layer.cancel_request(key, 0.5) == (None, [])


def test_cancel_with_no_final_times_out_after_64_t1() -> None:
    layer = TransactionLayer()
    inv = request()
    key, _ = layer.send_request(inv, PEER, "UDP", 0.0)
    layer.receive_response(response(inv, 180), PEER, 1.0)
    layer.cancel_request(key, 2.0)
    events = layer.poll(2.0 + 64 * T1)
    assert TransactionTimedOut(key, inv) in events
    drain(layer)
    assert len(layer) == 0


def test_ack_for_2xx_is_sent_without_a_transaction() -> None:
    layer = TransactionLayer()
    ack = request("ACK", branch="z9hG4bKack1", to_tag="t")
    _, events = layer.send_request(ack, PEER, "UDP", 0.0)
    assert events == [SendMessage(ack, PEER, "UDP")]
    assert len(layer) == 0 and layer.next_deadline() is None


# -- property: random retransmissions and polls --------------------------------

Op = tuple[str, int, float]


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["request", "ack", "1xx", "2xx", "486", "poll"]),
                  st.integers(0, 2), st.floats(0.0, 5.0, allow_nan=False)),
        max_size=40),
    reliable=st.booleans(),
)
def test_random_interleavings_no_duplicate_delivery_no_leak(ops: list[Op], reliable: bool) -> None:
    layer = TransactionLayer()
    transport = "TCP" if reliable else "UDP"
    requests = [request("INVITE", branch="z9hG4bKa", cseq=1), request("OPTIONS", branch="z9hG4bKb", cseq=2),
                request("INVITE", branch=None, cseq=3)]
    keys: dict[int, TransactionKey] = {}
    finals: dict[int, Response] = {}
    now = 0.0
    handlers: dict[str, Callable[[int], list[Event]]] = {}

    def on_request(i: int) -> list[Event]:
        return layer.receive_request(requests[i], PEER, transport, now)

    def on_ack(i: int) -> list[Event]:
        final = finals.get(i)
        if final is None or requests[i].method != "INVITE":
            return []
        req = requests[i]
        ack = (ack_for_2xx(req, final) if final.status < 300
               else request("ACK", branch=req.branch, to_tag=final.to.tag, cseq=req.cseq[0]))
        return layer.receive_request(ack, PEER, transport, now)

    def on_response(status: int) -> Callable[[int], list[Event]]:
        def send(i: int) -> list[Event]:
            if i not in keys:
                return []
            resp = response(requests[i], status)
            events = layer.respond(keys[i], resp, now)
            if status >= 200 and events:
                finals[i] = resp
            return events
        return send

    handlers.update(request=on_request, ack=on_ack, poll=lambda i: layer.poll(now))
    handlers.update({"1xx": on_response(180), "2xx": on_response(200), "486": on_response(486)})
    for name, i, dt in ops:
        now += dt
        live = {j for j, key in keys.items() if layer.state_of(key) is not None}
        for event in handlers[name](i):
            if isinstance(event, RequestReceived):
                index = next(j for j, r in enumerate(requests) if r is event.request)
                # Never twice while the first transaction is alive.
                assert index not in live
                live.add(index)
                keys[index] = event.key
            if isinstance(event, SendMessage):
                assert event.destination == PEER
    # Answer whatever is still open, then let every timer run out.
    for index, key in keys.items():
        layer.respond(key, response(requests[index], 486), now)
    drain(layer)
    assert len(layer) == 0
    assert layer.next_deadline() is None
