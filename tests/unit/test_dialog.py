"""RFC 3261 §12 dialogs."""

from __future__ import annotations

import pytest

from pbx.sip.address import parse_name_address
from pbx.sip.dialog import Dialog, DialogKey, DialogTable, dialog_key_of
from pbx.sip.message import Request, Response, make_response, parse_message

LOCAL_CONTACT = parse_name_address("<sip:pbx@192.0.2.1:5060>")


def invite(record_route: str = "", contact: str = "<sip:alice@pc33.atlanta.com>",
           uri: str = "sip:bob@biloxi.com", cseq: int = 314159) -> Request:
    text = (
        f"INVITE {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds\r\n"
        "Max-Forwards: 70\r\n"
        "To: Bob <sip:bob@biloxi.com>\r\n"
        "From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n"
        "Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n"
        f"CSeq: {cseq} INVITE\r\n"
        f"Contact: {contact}\r\n"
        f"{record_route}"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


RR = ("Record-Route: <sip:p2.biloxi.com;lr>\r\n"
      "Record-Route: <sip:p1.atlanta.com;lr>\r\n")


def answer(request: Request, status: int = 200, *, record_route: bool = True,
           contact: str = "<sip:bob@192.0.2.4>") -> Response:
    resp = make_response(request, status, to_tag="a6c85cf")  # copies Record-Route (§12.1.1)
    if not record_route:
        resp.remove_header("Record-Route")
    resp.add_header("Contact", contact)
    return resp


def incoming(method: str, cseq: int, *, contact: str | None = None) -> Request:
    """An in-dialog request from Alice to us (Bob, the UAS)."""
    text = (
        f"{method} sip:pbx@192.0.2.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnext\r\n"
        "To: Bob <sip:bob@biloxi.com>;tag=ourtag\r\n"
        "From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n"
        "Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n"
        f"CSeq: {cseq} {method}\r\n"
        + (f"Contact: {contact}\r\n" if contact else "")
        + "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def test_uas_dialog_from_invite() -> None:
    req = invite(RR)
    dialog = Dialog.as_uas(req, "ourtag", LOCAL_CONTACT)
    assert dialog.key == DialogKey("a84b4c76e66710@pc33.atlanta.com", "ourtag", "1928301774")
    assert [str(r.uri) for r in dialog.route_set] == ["sip:p2.biloxi.com;lr", "sip:p1.atlanta.com;lr"]
    assert str(dialog.remote_target) == "sip:alice@pc33.atlanta.com"
    assert dialog.remote_seq == 314159 and dialog.local_seq is None
    assert dialog.state == "early" and not dialog.secure
    assert str(dialog.local_uri.uri) == "sip:bob@biloxi.com" and dialog.local_uri.tag is None
    assert str(dialog.remote_uri.uri) == "sip:alice@atlanta.com"
    dialog.confirm()
    assert dialog.state == "confirmed"


def test_uac_dialog_route_set_is_reversed() -> None:
    req = invite(RR)
    dialog = Dialog.as_uac(req, answer(req))
    assert dialog.key == DialogKey("a84b4c76e66710@pc33.atlanta.com", "1928301774", "a6c85cf")
    assert [str(r.uri) for r in dialog.route_set] == ["sip:p1.atlanta.com;lr", "sip:p2.biloxi.com;lr"]
    assert str(dialog.remote_target) == "sip:bob@192.0.2.4"
    assert dialog.local_seq == 314159 and dialog.remote_seq is None
    assert dialog.state == "confirmed"


def test_uac_early_dialog_confirmed_by_2xx_recomputes_route_and_target() -> None:
    req = invite(RR)
    early = Dialog.as_uac(req, answer(req, 180, record_route=False, contact="<sip:bob@early>"))
    assert early.state == "early" and early.route_set == []
    early.confirm(answer(req, 200))
    assert early.state == "confirmed"
    assert [str(r.uri) for r in early.route_set] == ["sip:p1.atlanta.com;lr", "sip:p2.biloxi.com;lr"]
    assert str(early.remote_target) == "sip:bob@192.0.2.4"


def test_uac_response_without_to_tag_creates_no_dialog() -> None:
    req = invite()
    with pytest.raises(ValueError):
        Dialog.as_uac(req, make_response(req, 180))


def test_secure_for_sips_request_uri() -> None:
    req = invite(uri="sips:bob@biloxi.com")
    assert Dialog.as_uas(req, "t", LOCAL_CONTACT).secure


def test_loose_routing_request() -> None:
    dialog = Dialog.as_uas(invite(RR), "ourtag", LOCAL_CONTACT)
    dialog.confirm()
    bye = dialog.create_request("BYE")
    assert bye.method == "BYE"
    assert str(bye.uri) == "sip:alice@pc33.atlanta.com"
    assert bye.headers.get_all("route") == ["<sip:p2.biloxi.com;lr>", "<sip:p1.atlanta.com;lr>"]
    assert bye.to.tag == "1928301774" and str(bye.to.uri) == "sip:alice@atlanta.com"
    assert bye.from_.tag == "ourtag" and str(bye.from_.uri) == "sip:bob@biloxi.com"
    assert bye.call_id == dialog.call_id
    assert bye.cseq == (1, "BYE")
    assert bye.headers.get("max-forwards") == "70"
    assert bye.headers.get("contact") is None  # BYE refreshes no target
    assert bye.headers.get("via") is None  # the caller adds it


def test_strict_routing_request() -> None:
    rr = ("Record-Route: <sip:strict.example.com;transport=udp>\r\n"
          "Record-Route: <sip:p1.atlanta.com;lr>\r\n")
    dialog = Dialog.as_uas(invite(rr), "ourtag", LOCAL_CONTACT)
    req = dialog.create_request("INFO")
    assert str(req.uri) == "sip:strict.example.com;transport=udp"
    assert req.headers.get_all("route") == ["<sip:p1.atlanta.com;lr>", "<sip:alice@pc33.atlanta.com>"]


def test_no_route_set_no_route_header() -> None:
    dialog = Dialog.as_uas(invite(), "ourtag", LOCAL_CONTACT)
    req = dialog.create_request("OPTIONS")
    assert str(req.uri) == "sip:alice@pc33.atlanta.com"
    assert "route" not in req.headers


def test_cseq_increments_and_reinvite_carries_contact_and_body() -> None:
    req = invite()
    dialog = Dialog.as_uac(req, answer(req))
    reinvite = dialog.create_request("INVITE", body=b"v=0\r\n", content_type="application/sdp",
                                     extra_headers=[("Subject", "hold")])
    assert reinvite.cseq == (314160, "INVITE")
    assert reinvite.contacts[0].uri == req.contacts[0].uri
    assert reinvite.body == b"v=0\r\n" and reinvite.content_type == "application/sdp"
    assert reinvite.headers.get("subject") == "hold"
    assert dialog.create_request("BYE").cseq == (314161, "BYE")
    parsed = parse_message(_with_via(dialog.create_request("UPDATE")).to_bytes())
    assert isinstance(parsed, Request) and parsed.cseq == (314162, "UPDATE")


def _with_via(request: Request) -> Request:
    request.add_header("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx", first=True)
    return request


def test_ack_for_2xx_uses_the_invite_cseq() -> None:
    req = invite(RR)
    dialog = Dialog.as_uac(req, answer(req))
    ack = dialog.create_ack(314159)
    assert ack.method == "ACK" and ack.cseq == (314159, "ACK")
    assert str(ack.uri) == "sip:bob@192.0.2.4"
    assert ack.headers.get_all("route") == ["<sip:p1.atlanta.com;lr>", "<sip:p2.biloxi.com;lr>"]
    assert dialog.local_seq == 314159  # an ACK consumes no sequence number
    with pytest.raises(ValueError):
        dialog.create_request("ACK")


def test_lower_cseq_is_answered_500() -> None:
    dialog = Dialog.as_uas(invite(cseq=10), "ourtag", LOCAL_CONTACT)
    assert dialog.receive_request(incoming("INFO", 11)) is None
    assert dialog.remote_seq == 11
    assert dialog.receive_request(incoming("INFO", 9)) == 500
    assert dialog.remote_seq == 11
    # ACK and CANCEL reuse the INVITE's number and are never "out of order".
    assert dialog.receive_request(incoming("ACK", 10)) is None
    assert dialog.remote_seq == 11


def test_uac_dialog_takes_first_remote_cseq() -> None:
    req = invite()
    dialog = Dialog.as_uac(req, answer(req))
    assert dialog.receive_request(incoming("BYE", 1)) is None
    assert dialog.remote_seq == 1


def test_target_refresh_updates_remote_target() -> None:
    dialog = Dialog.as_uas(invite(), "ourtag", LOCAL_CONTACT)
    dialog.receive_request(incoming("INFO", 314160, contact="<sip:alice@elsewhere>"))
    assert str(dialog.remote_target) == "sip:alice@pc33.atlanta.com"  # INFO refreshes nothing
    dialog.receive_request(incoming("INVITE", 314161, contact="<sip:alice@moved.example.com>"))
    assert str(dialog.remote_target) == "sip:alice@moved.example.com"
    dialog.receive_request(incoming("UPDATE", 314162, contact="<sip:alice@again.example.com>"))
    assert str(dialog.remote_target) == "sip:alice@again.example.com"
    # Out of order: rejected, and the target is untouched.
    assert dialog.receive_request(incoming("UPDATE", 1, contact="<sip:evil@x>")) == 500
    assert str(dialog.remote_target) == "sip:alice@again.example.com"


def test_dialog_key_of_and_table_lookups() -> None:
    table = DialogTable()
    dialog = Dialog.as_uas(invite(), "ourtag", LOCAL_CONTACT)
    table.add(dialog)
    assert len(table) == 1
    bye = incoming("BYE", 314160)
    assert dialog_key_of(bye, we_are_uas=True) == dialog.key
    assert table.find(bye, we_are_uas=True) is dialog
    assert table.get(dialog.key) is dialog
    # A response to our own BYE: From tag is ours.
    ours = _with_via(dialog.create_request("BYE"))
    assert dialog_key_of(make_response(ours, 200), we_are_uas=False) == dialog.key
    unknown = DialogKey(dialog.call_id, "ourtag", "someone-else")
    assert table.get(unknown) is None  # the TU answers 481
    assert table.remove(dialog.key) is dialog
    assert table.get(dialog.key) is None and len(table) == 0
    assert table.remove(dialog.key) is None


def test_terminate() -> None:
    dialog = Dialog.as_uas(invite(), "ourtag", LOCAL_CONTACT)
    dialog.terminate()
    dialog.confirm()
    assert dialog.state == "terminated"
