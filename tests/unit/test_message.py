"""The SIP message parser (pbx/sip/message.py, address.py, uri.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbx.sip.address import parse_name_address, parse_via
from pbx.sip.errors import SipParseError
from pbx.sip.message import (
    MAX_HEADER_FIELDS,
    MAX_MESSAGE_SIZE,
    Headers,
    Request,
    Response,
    StreamFramer,
    make_response,
    parse_message,
)
from pbx.sip.uri import Uri, parse_uri

HEAD = (
    "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds\r\n"
    "To: Bob <sip:bob@biloxi.com>\r\n"
    "From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n"
    "Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n"
    "CSeq: 314159 {method}\r\n"
)


def raw(method: str = "OPTIONS", extra: str = "", body: str = "", *, head: str = HEAD,
        start: str | None = None) -> bytes:
    start = start or f"{method} sip:bob@biloxi.com SIP/2.0"
    return f"{start}\r\n{head.format(method=method)}{extra}\r\n{body}".encode()


def req(data: bytes, **kwargs: bool) -> Request:
    message = parse_message(data, **kwargs)
    assert isinstance(message, Request)
    return message


def rejects(data: bytes, status: int = 400, **kwargs: bool) -> str:
    with pytest.raises(SipParseError) as info:
        parse_message(data, **kwargs)
    assert info.value.status == status
    return info.value.reason


# -- header names and values ---------------------------------------------------


def test_compact_forms_expand_to_canonical_names() -> None:
    data = (
        b"INVITE sip:bob@biloxi.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKa\r\n"
        b"t: <sip:bob@biloxi.com>\r\n"
        b"f: <sip:alice@atlanta.com>;tag=1\r\n"
        b"i: abc@x\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"m: <sip:alice@pc33>\r\n"
        b"c: application/sdp\r\n"
        b"k: timer\r\n"
        b"s: hello\r\n"
        b"l: 4\r\n\r\nv=0\n"
    )
    message = req(data)
    assert message.call_id == "abc@x"
    assert message.branch == "z9hG4bKa"
    assert message.content_type == "application/sdp"
    assert message.headers.get("supported") == "timer"
    assert message.headers.get("subject") == "hello"
    assert message.body == b"v=0\n"
    names = [name for name, _ in message.headers.items()]
    assert names[:7] == ["Via", "To", "From", "Call-ID", "CSeq", "Contact", "Content-Type"]


def test_header_names_are_case_insensitive() -> None:
    message = req(raw(extra="mAX-fORWARDS: 69\r\nX-Custom: 1\r\n").replace(b"Call-ID", b"CALL-id"))
    assert message.headers.get("call-id") == message.headers.get("CALL-ID") == message.headers.get("i")
    assert message.int_header("Max-Forwards", 255) == 69
    assert message.headers.get("x-custom") == "1"
    assert "X-CUSTOM" in message.headers
    # Known headers are written back in their canonical spelling.
    assert b"\r\nCall-ID: " in message.to_bytes() and b"Max-Forwards: 69" in message.to_bytes()


def test_line_folding_is_unfolded() -> None:
    message = req(raw(extra="Subject: I know you're there,\r\n  pick up the phone\r\n\tand talk to me!\r\n"))
    assert message.headers.get("subject") == "I know you're there, pick up the phone and talk to me!"


def test_bare_lf_line_endings_are_accepted() -> None:
    message = req(raw(body="hi").replace(b"\r\n", b"\n"))
    assert message.call_id == "a84b4c76e66710@pc33.atlanta.com" and message.body == b"hi"


def test_whitespace_around_colon_and_values() -> None:
    message = req(raw(extra="Subject   :    spaced out   \r\n"))
    assert message.headers.get("subject") == "spaced out"


def test_list_headers_split_outside_quotes_and_brackets() -> None:
    extra = ('Contact: "Doe, John" <sip:john@a.com;x=1,2>;q=0.5, <sip:j2@b.com>\r\n'
             "Contact: sip:j3@c.com\r\n"
             "Route: <sip:p1.example.com;lr>,<sip:p2.example.com;lr>\r\n")
    message = req(raw(extra=extra))
    assert message.headers.get_all("contact") == [
        '"Doe, John" <sip:john@a.com;x=1,2>;q=0.5', "<sip:j2@b.com>", "sip:j3@c.com"]
    assert len(message.headers.values("contact")) == 2
    contacts = message.contacts
    assert contacts[0].display_name == '"Doe, John"' and contacts[0].params == {"q": "0.5"}
    assert contacts[0].uri.params == {"x": "1,2"}
    assert [str(c.uri) for c in contacts[1:]] == ["sip:j2@b.com", "sip:j3@c.com"]
    assert message.headers.get_all("route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]


def test_non_list_header_keeps_commas() -> None:
    message = req(raw(extra="Subject: a, b, c\r\nDate: Sat, 13 Nov 2010 23:29:00 GMT\r\n"))
    assert message.headers.get_all("subject") == ["a, b, c"]
    assert message.headers.get_all("date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]


def test_multiple_vias_in_one_field_and_across_fields() -> None:
    extra = "Via: SIP/2.0/TCP [2001:db8::9]:5070;branch=z9hG4bKb;received=192.0.2.9, SIP/2.0/UDP c.example.com\r\n"
    message = req(raw(extra=extra))
    assert [v.sent_by for v in message.vias] == [
        "pc33.atlanta.com", "[2001:db8::9]:5070", "c.example.com"]
    second = message.vias[1]
    assert second.transport == "TCP" and second.port == 5070
    assert second.params == {"branch": "z9hG4bKb", "received": "192.0.2.9"}


def test_via_with_spaces_everywhere() -> None:
    via = parse_via("SIP / 2.0 / UDP host.example.com : 5060 ; branch = z9hG4bKq ; rport")
    assert via.transport == "UDP" and via.host == "host.example.com" and via.port == 5060
    assert via.branch == "z9hG4bKq" and via.params["rport"] is None


def test_quoted_display_names_with_escapes() -> None:
    address = parse_name_address('"\\"Boss\\", Inc. <VIP>" <sip:boss@example.com>;tag=9')
    assert address.display_name == '"\\"Boss\\", Inc. <VIP>"'
    assert str(address.uri) == "sip:boss@example.com" and address.tag == "9"
    plain = parse_name_address("sip:x@example.com;tag=abc")
    assert plain.tag == "abc" and plain.uri.params == {}  # addr-spec: params are the header's
    assert parse_name_address("Bob Smith <sip:b@example.com>").display_name == "Bob Smith"


def test_headers_editing_invalidates_cached_fields() -> None:
    message = req(raw())
    assert message.to.tag is None
    message.set_header("To", "<sip:bob@biloxi.com>;tag=x")
    assert message.to.tag == "x"
    message.add_header("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp", first=True)
    assert message.branch == "z9hG4bKp"
    message.remove_header("Via")
    with pytest.raises(SipParseError):
        message.top_via  # noqa: B018


def test_headers_set_replaces_all_occurrences_in_place() -> None:
    headers = Headers()
    headers.add("Route", "a")
    headers.add("To", "t")
    headers.add("route", "b")
    headers.set("ROUTE", "c")
    assert list(headers.items()) == [("Route", "c"), ("To", "t")]


# -- URIs ------------------------------------------------------------------------


def test_sip_uri_with_everything() -> None:
    uri = parse_uri("sip:alice:secret@atlanta.com:5061;transport=TCP;lr;maddr=239.255.255.1?subject=project%20x&priority=urgent")
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sip", "alice", "secret", "atlanta.com", 5061)
    assert uri.params == {"transport": "TCP", "lr": None, "maddr": "239.255.255.1"}
    assert uri.transport == "tcp"
    assert uri.headers == {"subject": "project%20x", "priority": "urgent"}


def test_escaped_user_part() -> None:
    uri = parse_uri("sip:sips%3Auser%40example.com@example.net")
    assert uri.user == "sips%3Auser%40example.com"  # kept as on the wire
    assert uri.user_unescaped == "sips:user@example.com"
    assert str(uri) == "sip:sips%3Auser%40example.com@example.net"
    assert parse_uri("sip:%61lice@ATLANTA.com").address_of_record() == "sip:alice@atlanta.com"


def test_user_part_with_semicolons() -> None:
    uri = parse_uri("sip:user;par=u%40example.net@example.com;p=1")
    assert uri.user == "user;par=u%40example.net" and uri.host == "example.com"
    assert uri.params == {"p": "1"}


def test_sips_ipv6_and_tel_uris() -> None:
    sips = parse_uri("SIPS:[2001:db8::10]:5061;transport=tcp")
    assert sips.scheme == "sips" and sips.host == "[2001:db8::10]" and sips.port == 5061
    tel = parse_uri("tel:+1-201-555-0123;phone-context=example.com;ext=22")
    assert tel.scheme == "tel" and tel.user == "+1-201-555-0123"
    assert tel.params == {"phone-context": "example.com", "ext": "22"}
    assert str(tel) == "tel:+1-201-555-0123;phone-context=example.com;ext=22"
    other = parse_uri("mailto:bob@example.com")
    assert other.opaque == "bob@example.com" and str(other) == "mailto:bob@example.com"


@pytest.mark.parametrize("text", [
    "bob@example.com",  # no scheme
    "sip:",  # no host
    "sip:bob@",  # no host
    "sip:@example.com",  # empty user
    "sip:bob@exa mple.com",
    "sip:bob@example.com:99999",
    "sip:bob@example.com:50a",
    "sip:bob@[2001:db8::1",
    "sip:bob@example.com;;lr",
    "sip:bob@example.com?noequals",
    "tel:",
])
def test_bad_uris_rejected(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


# -- start lines, required headers, limits ----------------------------------------


def test_response_start_line() -> None:
    message = parse_message(raw(start="SIP/2.0 180 Ringing Now"))
    assert isinstance(message, Response)
    assert (message.status, message.reason) == (180, "Ringing Now")


@pytest.mark.parametrize("start,status", [
    ("OPTIONS sip:bob@biloxi.com SIP/3.0", 505),
    ("OPTIONS sip:bob@biloxi.com HTTP/1.1", 400),
    ("OPTIONS  sip:bob@biloxi.com SIP/2.0", 400),
    ("OPTIONS <sip:bob@biloxi.com> SIP/2.0", 400),
    ("OPTIONS sip:bob@biloxi.com?subject=x SIP/2.0", 400),
    ("OPT@IONS sip:bob@biloxi.com SIP/2.0", 400),
    ("SIP/2.0 99 Too Low", 400),
    ("SIP/2.0 700 Too High", 400),
    ("SIP/2.0 2000 OK", 400),
    ("SIP/7.0 200 OK", 505),
])
def test_bad_start_lines(start: str, status: int) -> None:
    rejects(raw(start=start), status)


@pytest.mark.parametrize("missing", ["Via", "To", "From", "Call-ID", "CSeq"])
def test_missing_required_header(missing: str) -> None:
    head = "".join(line + "\r\n" for line in HEAD.split("\r\n") if line and not line.startswith(missing + ":"))
    assert "Missing" in rejects(raw(head=head))


@pytest.mark.parametrize("duplicate", ["Call-ID: other", "CSeq: 1 OPTIONS", "To: <sip:x@y>",
                                       "From: <sip:x@y>;tag=2",
                                       "Max-Forwards: 1\r\nMax-Forwards: 2"])
def test_duplicate_single_valued_header(duplicate: str) -> None:
    assert "Multiple" in rejects(raw(extra=duplicate + "\r\n"))


@pytest.mark.parametrize("cseq", ["abc OPTIONS", "1", "1 OPTIONS extra", "2147483648 OPTIONS",
                                  "-1 OPTIONS", "1 INVITE"])
def test_bad_cseq(cseq: str) -> None:
    rejects(raw(head=HEAD.replace("CSeq: 314159 {method}", f"CSeq: {cseq}")))


def test_max_forwards_range() -> None:
    assert req(raw(extra="Max-Forwards: 0\r\n")).int_header("max-forwards", 255) == 0
    rejects(raw(extra="Max-Forwards: 256\r\n"))
    rejects(raw(extra="Max-Forwards: ten\r\n"))


def test_content_length_rules() -> None:
    assert req(raw(extra="Content-Length: 3\r\n", body="abcdef")).body == b"abc"
    assert req(raw(body="abcdef")).body == b"abcdef"  # datagram without length: the rest
    rejects(raw(extra="Content-Length: 10\r\n", body="abc"))
    rejects(raw(extra="Content-Length: x\r\n"))
    rejects(raw(extra="Content-Length: 1\r\nl: 1\r\n", body="a"))
    rejects(raw(), datagram=False)  # stream needs Content-Length


def test_size_and_field_limits() -> None:
    assert rejects(b"X" * (MAX_MESSAGE_SIZE + 1), 513)
    rejects(raw(extra="Subject: x\r\n" * MAX_HEADER_FIELDS))
    req(raw(extra="Subject: x\r\n" * (MAX_HEADER_FIELDS - 10)))


@pytest.mark.parametrize("line", ["NoColonHere", ": empty name", "Bad Name: x", 'Sub"ject: x'])
def test_malformed_header_lines(line: str) -> None:
    rejects(raw(extra=line + "\r\n"))


@pytest.mark.parametrize("value", ["<sip:a@b", "sip:a@b?x=y", '"unterminated <sip:a@b>',
                                   "<sip:a@b> garbage", "<sip:a@b>;", "a b c <sip:a@b>;x="])
def test_malformed_to_rejected(value: str) -> None:
    rejects(raw(head=HEAD.replace("To: Bob <sip:bob@biloxi.com>", f"To: {value}")))


def test_leading_crlf_and_keepalives() -> None:
    assert req(b"\r\n\r\n" + raw()).method == "OPTIONS"
    framer = StreamFramer()
    one = raw(extra="l: 3\r\n", body="abc")
    out = framer.feed(b"\r\n\r\n" + one + one[:20])
    assert out == [None, one]
    assert framer.feed(one[20:]) == [one]


def test_make_response_copies_the_right_headers() -> None:
    request = req(raw(extra="Contact: <sip:alice@pc33>\r\nMax-Forwards: 70\r\n"))
    response = make_response(request, 200, to_tag="abc", body=b"v=0", content_type="application/sdp")
    assert [name for name, _ in response.headers.items()] == [
        "Via", "To", "From", "Call-ID", "CSeq", "Content-Type"]
    assert response.to.tag == "abc" and response.reason == "OK"
    assert make_response(request, 100, to_tag="abc").to.tag is None
    parsed = parse_message(response.to_bytes())
    assert isinstance(parsed, Response) and parsed.body == b"v=0"


def test_dialog_creating_responses_carry_the_record_route_back() -> None:
    """RFC 3261 §12.1.1: a proxy that record-routed stays on the dialog's path."""
    extra = ("Record-Route: <sip:127.0.0.1:5080;lr>\r\n"
             "Record-Route: <sip:edge.example;lr>\r\n")
    request = req(raw("INVITE", extra=extra))
    for status in (180, 200):
        assert make_response(request, status, to_tag="t").headers.values("record-route") == [
            "<sip:127.0.0.1:5080;lr>", "<sip:edge.example;lr>"]
    for status in (100, 486, 503):
        assert make_response(request, status, to_tag="t").headers.values("record-route") == []


# -- defects found while writing these tests, fixed in message.py ----------------


def test_bare_lf_inside_crlf_block_cannot_smuggle_a_header() -> None:
    # A lone LF ends a header line for us exactly as for any LF-tolerant peer:
    # the value never carries it, so what we parse is what we would write out.
    data = raw(extra="Subject: x\nVia: SIP/2.0/UDP evil.example.com;branch=z9hG4bKevil\r\n")
    message = req(data)
    assert message.headers.get("subject") == "x"
    assert [v.host for v in message.vias][-1] == "evil.example.com"
    assert all("\n" not in value for _, value in message.headers.items())


def test_non_ascii_digits_rejected() -> None:
    rejects(raw(head=HEAD.replace("CSeq: 314159", "CSeq: \u0663")))


def test_via_ipv6_port_separator_checked() -> None:
    with pytest.raises(SipParseError):
        parse_via("SIP/2.0/UDP [2001:db8::1]x5060;branch=z9hG4bKa")


def test_empty_call_id_rejected() -> None:
    rejects(raw(head=HEAD.replace("Call-ID: a84b4c76e66710@pc33.atlanta.com", "Call-ID:")))


# -- round trip --------------------------------------------------------------------

TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
                min_size=1, max_size=12)
WORD = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)
HOST = st.one_of(
    st.lists(WORD, min_size=1, max_size=3).map(".".join),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
)
PORT = st.one_of(st.none(), st.integers(1, 65535))
URI_PARAMS = st.dictionaries(WORD, st.one_of(st.none(), WORD), max_size=3)
USER = st.one_of(st.none(), WORD, st.tuples(WORD, WORD).map(lambda t: f"{t[0]}%40{t[1]}"))
URIS = st.builds(lambda scheme, user, host, port, params: Uri(scheme, user, None, host, port, params),
                 st.sampled_from(["sip", "sips"]), USER, HOST, PORT, URI_PARAMS)
DISPLAY = st.one_of(
    st.none(), TOKEN,
    st.text(st.characters(codec="ascii", exclude_characters='\r\n\\"\x00'), max_size=15).map(
        lambda s: '"' + s + '"'),
    st.tuples(WORD, WORD).map(lambda t: f'"{t[0]} \\"{t[1]}\\""'),
)
VALUE = st.text(st.characters(codec="ascii", min_codepoint=32, max_codepoint=126), max_size=30).map(
    str.strip)
EXTENSION = st.tuples(TOKEN.map(lambda t: "X-" + t), VALUE)


@st.composite
def messages(draw: st.DrawFn) -> tuple[Request | Response, dict[str, object]]:
    is_request = draw(st.booleans())
    method = draw(st.sampled_from(["INVITE", "OPTIONS", "BYE", "REGISTER", "FOOBAR"]))
    uri = draw(URIS)
    branch = "z9hG4bK" + draw(WORD)
    via_host, via_port = draw(HOST), draw(PORT)
    from_display, to_display = draw(DISPLAY), draw(DISPLAY)
    from_uri, to_uri = draw(URIS), draw(URIS)
    tag = draw(WORD)
    call_id = draw(WORD) + "@" + draw(HOST)
    cseq = draw(st.integers(0, 2**31 - 1))
    extensions = draw(st.lists(EXTENSION, max_size=5))
    contacts = draw(st.lists(st.tuples(DISPLAY, URIS), max_size=3))
    body = draw(st.binary(max_size=50))
    headers = Headers()
    sent_by = via_host if via_port is None else f"{via_host}:{via_port}"
    headers.add("Via", f"SIP/2.0/UDP {sent_by};branch={branch}")
    headers.add("From", f"{from_display + ' ' if from_display else ''}<{from_uri}>;tag={tag}")
    headers.add("To", f"{to_display + ' ' if to_display else ''}<{to_uri}>")
    headers.add("Call-ID", call_id)
    headers.add("CSeq", f"{cseq} {method}")
    if contacts:
        headers.add("Contact", ", ".join(f"{d + ' ' if d else ''}<{u}>" for d, u in contacts))
    for name, value in extensions:
        headers.add(name, value)
    message: Request | Response
    if is_request:
        message = Request(method, uri, headers, body)
    else:
        message = Response(draw(st.integers(100, 699)), draw(VALUE.filter(bool)), headers, body)
    expected = dict(branch=branch, sent_by=sent_by, from_uri=str(from_uri), from_display=from_display,
                    to_uri=str(to_uri), to_display=to_display, tag=tag, call_id=call_id,
                    cseq=(cseq, method), extensions=extensions, body=body,
                    contacts=[(d, str(u)) for d, u in contacts])
    return message, expected


@settings(max_examples=300, deadline=None)
@given(messages())
def test_round_trip(case: tuple[Request | Response, dict[str, object]]) -> None:
    message, expected = case
    parsed = parse_message(message.to_bytes())
    assert type(parsed) is type(message)
    if isinstance(message, Request):
        assert isinstance(parsed, Request)
        assert parsed.method == message.method and str(parsed.uri) == str(message.uri)
        assert parsed.uri == message.uri
    else:
        assert isinstance(parsed, Response)
        assert (parsed.status, parsed.reason) == (message.status, message.reason)
    assert parsed.branch == expected["branch"]
    assert parsed.top_via.sent_by == expected["sent_by"]
    assert str(parsed.from_.uri) == expected["from_uri"]
    assert parsed.from_.display_name == expected["from_display"]
    assert parsed.from_.tag == expected["tag"]
    assert str(parsed.to.uri) == expected["to_uri"]
    assert parsed.to.display_name == expected["to_display"] and parsed.to.tag is None
    assert parsed.call_id == expected["call_id"]
    assert parsed.cseq == expected["cseq"]
    assert [(c.display_name, str(c.uri)) for c in parsed.contacts] == expected["contacts"]
    for name, value in expected["extensions"]:  # type: ignore[attr-defined]
        assert value in parsed.headers.values(name)
    assert parsed.body == expected["body"]
    # Serialising the parsed message again is stable.
    assert parsed.to_bytes() == message.to_bytes()
