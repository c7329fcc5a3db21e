"""SDP parsing and serialization (RFC 4566) and audio offer/answer (RFC 3264)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbx.sip.sdp import (
    STATIC_PAYLOAD_TYPES,
    WARN_ADDRESS_FORMAT,
    WARN_MEDIA_FORMAT,
    WARN_MEDIA_TYPE,
    WARN_NETWORK_PROTOCOL,
    WARN_TRANSPORT_PROTOCOL,
    Attribute,
    Connection,
    Direction,
    MediaDescription,
    NoAcceptableMedia,
    Origin,
    RtpMap,
    SdpError,
    SessionDescription,
    Timing,
    accept_answer,
    build_answer,
    build_offer,
    negotiate_audio,
    parse_sdp,
)


def sdp(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


HEADER = ("v=0", "o=alice 2890844526 2890844527 IN IP4 198.51.100.7", "s=-")

TYPICAL_OFFER = sdp(
    *HEADER,
    "c=IN IP4 198.51.100.7",
    "t=0 0",
    "m=audio 49170 RTP/AVP 8 0 101",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=sendrecv",
)


def offer_with(*media_lines: str, connection: str = "c=IN IP4 198.51.100.7") -> bytes:
    return sdp(*HEADER, connection, "t=0 0", *media_lines)


# --- parsing


def test_parse_typical_offer() -> None:
    description = parse_sdp(TYPICAL_OFFER)
    assert description.origin == Origin(
        "alice", 2890844526, 2890844527, "IN", "IP4", "198.51.100.7"
    )
    assert description.session_name == "-"
    assert description.connection == Connection("IN", "IP4", "198.51.100.7")
    assert description.timing == [Timing(0, 0)]
    (audio,) = description.media
    assert (audio.media, audio.port, audio.proto) == ("audio", 49170, "RTP/AVP")
    assert audio.formats == [8, 0, 101]
    assert audio.rtpmap[101] == RtpMap("telephone-event", 8000)
    assert audio.fmtp == {101: "0-16"}
    assert audio.ptime == 20
    assert audio.direction == "sendrecv"
    assert audio.connection is None
    assert audio.attributes == []


def test_static_payload_types_need_no_rtpmap_and_lf_line_ends_are_fine() -> None:
    text = (
        "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=x\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 4000 RTP/AVP 0 8 18\n"
    )
    audio = parse_sdp(text).media[0]
    assert audio.rtpmap == {
        0: RtpMap("PCMU", 8000),
        8: RtpMap("PCMA", 8000),
        18: RtpMap("G729", 8000),
    }


def test_blank_lines_and_crlf_mixes_are_tolerated() -> None:
    text = TYPICAL_OFFER.replace(b"\r\nt=0 0", b"\n\r\nt=0 0") + b"\r\n\r\n"
    assert parse_sdp(text) == parse_sdp(TYPICAL_OFFER)


def test_session_level_direction_is_inherited_unless_media_overrides() -> None:
    description = parse_sdp(
        sdp(
            *HEADER,
            "c=IN IP4 10.0.0.1",
            "t=0 0",
            "a=sendonly",
            "m=audio 4000 RTP/AVP 0",
            "m=audio 4002 RTP/AVP 0",
            "a=inactive",
        )
    )
    assert description.direction == "sendonly"
    assert [m.direction for m in description.media] == ["sendonly", "inactive"]
    assert parse_sdp(description.to_bytes()) == description


def test_media_level_connection_and_other_lines_are_kept() -> None:
    description = parse_sdp(
        sdp(
            *HEADER,
            "i=support line",
            "t=0 0",
            "m=audio 4000 RTP/AVP 0",
            "c=IN IP6 2001:db8::1",
            "b=AS:64",
            "a=rtcp:4001",
            "a=rtcp-mux",
        )
    )
    audio = description.media[0]
    assert description.connection is None
    assert audio.connection == Connection("IN", "IP6", "2001:db8::1")
    assert description.connection_for(audio) == audio.connection
    assert audio.other_lines == [("b", "AS:64")]
    assert description.other_lines == [("i", "support line")]
    assert audio.attributes == [Attribute("rtcp", "4001"), Attribute("rtcp-mux")]
    assert audio.attribute("rtcp") == "4001" and audio.attribute("rtcp-mux") == ""
    assert audio.attribute("absent") is None


def test_non_rtp_stream_keeps_its_formats() -> None:
    description = parse_sdp(offer_with("m=image 4002 udptl t38", "a=T38FaxVersion:0"))
    image = description.media[0]
    assert image.formats == [] and image.other_formats == ["t38"]
    assert image.attributes == [Attribute("T38FaxVersion", "0")]


def test_to_bytes_uses_crlf_and_round_trips() -> None:
    description = parse_sdp(TYPICAL_OFFER)
    data = description.to_bytes()
    assert data.endswith(b"\r\n") and b"\n" not in data.replace(b"\r\n", b"")
    assert parse_sdp(data) == description


def test_non_utf8_session_name_round_trips_byte_for_byte() -> None:
    data = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=caf\xe9\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    assert parse_sdp(data).to_bytes() == data


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "v=0"),
        (b"o=- 1 1 IN IP4 10.0.0.1\r\n", "v=0"),
        (sdp("v=1", *HEADER[1:], "t=0 0"), "v=0"),
        (sdp("v=0", "s=-", "t=0 0"), "o="),
        (sdp(*HEADER[:2], "t=0 0"), "s="),
        (sdp(*HEADER), "t="),
        (sdp(*HEADER, HEADER[1], "t=0 0"), "more than one o="),
        (sdp("v=0", "o=- x 1 IN IP4 10.0.0.1", "s=-", "t=0 0"), "session id"),
        (sdp("v=0", "o=- 1 IN IP4 10.0.0.1", "s=-", "t=0 0"), "6 fields"),
        (sdp(*HEADER, "t=0"), "t= line"),
        (sdp(*HEADER, "t=0 0", "X=1"), "<type>=<value>"),
        (sdp(*HEADER, "t=0 0", "q=1"), "unexpected q="),
        (sdp(*HEADER, "t=0 0", "garbage"), "<type>=<value>"),
        (offer_with("m=audio 4000 RTP/AVP"), "m= line"),
        (offer_with("m=audio port RTP/AVP 0"), "port"),
        (offer_with("m=audio 70000 RTP/AVP 0"), "out of range"),
        (offer_with("m=audio 4000 RTP/AVP 128"), "payload type"),
        (offer_with("m=audio 4000 RTP/AVP PCMU"), "payload type"),
        (offer_with("m=audio 4000 RTP/AVP 96", "a=rtpmap:96 opus"), "rtpmap"),
        (offer_with("m=audio 4000 RTP/AVP 96", "a=rtpmap:96 opus/x"), "clock rate"),
        (offer_with("m=audio 4000 RTP/AVP 0", "t=0 0"), "unexpected t="),
        (offer_with("m=audio 4000 RTP/AVP 0", connection="b=AS:64"), "no c= line"),
        (offer_with("m=audio 4000 RTP/AVP 0", "c=IN IP4 a", "c=IN IP4 b"), "more than one c="),
    ],
)
def test_malformed_sdp_is_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(SdpError, match=reason):
        parse_sdp(data)


def test_error_reason_is_safe_for_a_status_line() -> None:
    with pytest.raises(SdpError) as caught:
        parse_sdp(sdp(*HEADER, "t=0 0", "m=au\x01dio 4000 RTP/AVP 0"))
    reason = str(caught.value)
    assert reason.isprintable() and "au?dio" in reason


def test_rejected_stream_needs_no_connection() -> None:
    description = parse_sdp(sdp(*HEADER, "t=0 0", "m=video 0 RTP/AVP 31"))
    assert description.media[0].port == 0


# --- round trip property

_TOKEN = st.text(string.ascii_letters + string.digits + "-._+", min_size=1, max_size=10)
_RESERVED = {"rtpmap", "fmtp", "ptime", "sendrecv", "sendonly", "recvonly", "inactive"}
_ATTRIBUTE_NAME = _TOKEN.filter(lambda name: name not in _RESERVED)
_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
_DIRECTIONS: list[Direction] = ["sendrecv", "sendonly", "recvonly", "inactive"]
_DIRECTION = st.sampled_from(_DIRECTIONS)
_ATTRIBUTE = st.builds(Attribute, _ATTRIBUTE_NAME, st.none() | _TEXT)
_CONNECTION = st.builds(Connection, st.just("IN"), st.sampled_from(["IP4", "IP6"]), _TOKEN)


def _ordered(lines: list[tuple[str, str]], order: str) -> list[tuple[str, str]]:
    return sorted(lines, key=lambda line: order.index(line[0]))


@st.composite
def _media(draw: st.DrawFn, inherited: Direction) -> MediaDescription:
    proto = draw(st.sampled_from(["RTP/AVP", "RTP/SAVP", "udptl", "TCP/BFCP"]))
    media = MediaDescription(
        media=draw(_TOKEN),
        port=draw(st.integers(0, 65535)),
        proto=proto,
        direction=draw(st.just(inherited) | _DIRECTION),
        connection=draw(st.none() | _CONNECTION),
        ptime=draw(st.none() | st.integers(1, 500)),
        attributes=draw(st.lists(_ATTRIBUTE, max_size=3)),
        port_count=draw(st.integers(1, 4)),
        other_lines=_ordered(
            draw(st.lists(st.tuples(st.sampled_from("ibk"), _TEXT), max_size=3)), "ibk"
        ),
    )
    if media.is_rtp:
        pts = st.integers(0, 127)
        media.formats = draw(st.lists(pts, min_size=1, max_size=5))
        encoding = st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=10)
        codec = st.builds(RtpMap, encoding, st.integers(1, 96000), st.integers(1, 8))
        media.rtpmap = draw(st.dictionaries(pts, codec, max_size=4))
        for pt in media.formats:
            if pt in STATIC_PAYLOAD_TYPES:
                media.rtpmap.setdefault(pt, STATIC_PAYLOAD_TYPES[pt])
        media.fmtp = draw(st.dictionaries(pts, _TEXT.map(str.strip), max_size=2))
    else:
        media.other_formats = draw(st.lists(_TOKEN, min_size=1, max_size=3))
    return media


@st.composite
def _descriptions(draw: st.DrawFn) -> SessionDescription:
    direction = draw(st.none() | _DIRECTION)
    description = SessionDescription(
        origin=Origin(
            draw(_TOKEN),
            draw(st.integers(0, 2**63)),
            draw(st.integers(0, 2**63)),
            "IN",
            "IP4",
            draw(_TOKEN),
        ),
        session_name=draw(_TEXT),
        connection=draw(st.none() | _CONNECTION),
        timing=draw(
            st.lists(
                st.builds(
                    Timing,
                    st.integers(0, 2**40),
                    st.integers(0, 2**40),
                    st.lists(_TEXT, max_size=2),
                ),
                min_size=1,
                max_size=2,
            )
        ),
        attributes=draw(st.lists(_ATTRIBUTE, max_size=3)),
        direction=direction,
        other_lines=_ordered(
            draw(st.lists(st.tuples(st.sampled_from("iuepbzk"), _TEXT), max_size=4)), "iuepbzk"
        ),
    )
    description.media = draw(st.lists(_media(direction or "sendrecv"), max_size=3))
    if description.connection is None:
        for media in description.media:
            if media.port != 0 and media.connection is None:
                media.connection = Connection("IN", "IP4", "192.0.2.1")
    return description


@settings(max_examples=200, deadline=None)
@given(_descriptions())
def test_round_trip_property(description: SessionDescription) -> None:
    assert parse_sdp(description.to_bytes()) == description


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda text: "v=0\r\n" + text))
def test_arbitrary_input_raises_only_sdp_error(data: bytes | str) -> None:
    try:
        parse_sdp(data)
    except SdpError:
        pass


# --- answering an offer


def test_offerer_preference_wins_over_ours() -> None:
    negotiation = negotiate_audio(parse_sdp(TYPICAL_OFFER), supported=("PCMU", "PCMA"))
    assert negotiation.payload_type == 8
    assert negotiation.codec == RtpMap("PCMA", 8000)
    assert negotiation.telephone_event_pt == negotiation.inbound_telephone_event_pt == 101
    assert (negotiation.remote_address, negotiation.remote_port) == ("198.51.100.7", 49170)
    assert negotiation.direction == "sendrecv" and not negotiation.on_hold
    assert negotiation.remote_ptime == 20
    assert negotiation.sends and negotiation.receives


def test_unsupported_codecs_are_skipped_case_insensitively() -> None:
    offer = parse_sdp(
        offer_with(
            "m=audio 4000 RTP/AVP 96 18 0",
            "a=rtpmap:96 opus/48000/2",
            "a=rtpmap:0 pcmu/8000",
        )
    )
    negotiation = negotiate_audio(offer)
    assert (negotiation.payload_type, negotiation.codec.encoding) == (0, "pcmu")
    assert negotiation.telephone_event_pt is None


def test_pcmu_at_the_wrong_clock_rate_is_not_pcmu() -> None:
    offer = parse_sdp(offer_with("m=audio 4000 RTP/AVP 97 8", "a=rtpmap:97 PCMU/16000"))
    assert negotiate_audio(offer).payload_type == 8


def test_telephone_event_must_be_8000_hz() -> None:
    offer = parse_sdp(
        offer_with(
            "m=audio 4000 RTP/AVP 0 100 101",
            "a=rtpmap:100 telephone-event/48000",
            "a=rtpmap:101 TELEPHONE-EVENT/8000",
        )
    )
    assert negotiate_audio(offer).telephone_event_pt == 101


@pytest.mark.parametrize(
    ("offered", "answered", "on_hold"),
    [
        ("sendrecv", "sendrecv", False),
        ("sendonly", "recvonly", True),
        ("recvonly", "sendonly", False),
        ("inactive", "inactive", True),
    ],
)
def test_answer_direction_mirrors_the_offer(offered: str, answered: str, on_hold: bool) -> None:
    offer = parse_sdp(offer_with("m=audio 4000 RTP/AVP 0", f"a={offered}"))
    negotiation = negotiate_audio(offer)
    assert negotiation.direction == answered
    assert negotiation.remote_direction == offered
    assert negotiation.on_hold is on_hold


def test_rfc2543_hold_by_zero_address() -> None:
    offer = parse_sdp(offer_with("m=audio 4000 RTP/AVP 0", connection="c=IN IP4 0.0.0.0"))
    negotiation = negotiate_audio(offer)
    assert negotiation.on_hold
    assert negotiation.direction == "recvonly"  # never send media to 0.0.0.0
    assert not negotiation.sends


def test_media_level_connection_beats_session_level() -> None:
    offer = parse_sdp(offer_with("m=audio 4000 RTP/AVP 0", "c=IN IP4 203.0.113.9/127"))
    assert negotiate_audio(offer).remote_address == "203.0.113.9"


def test_rejected_and_secure_audio_streams_are_passed_over() -> None:
    offer = parse_sdp(
        offer_with(
            "m=audio 0 RTP/AVP 0",
            "m=audio 5000 RTP/SAVP 0",
            "m=video 5002 RTP/AVP 31",
            "m=audio 5004 RTP/AVP 8",
        )
    )
    negotiation = negotiate_audio(offer)
    assert negotiation.media_index == 3 and negotiation.remote_port == 5004


def test_answer_has_one_m_line_per_offered_stream_in_order() -> None:
    offer = parse_sdp(
        offer_with(
            "m=video 5002 RTP/AVP 31",
            "m=audio 5000 RTP/AVP 0 8 101",
            "a=rtpmap:101 telephone-event/8000",
            "m=image 5006 udptl t38",
        )
    )
    negotiation = negotiate_audio(offer)
    answer = build_answer(offer, negotiation, "203.0.113.5", 20000, 42, 1)
    assert [(m.media, m.port) for m in answer.media] == [
        ("video", 0),
        ("audio", 20000),
        ("image", 0),
    ]
    video, audio, image = answer.media
    assert video.formats == [31] and image.other_formats == ["t38"]
    assert audio.formats == [0, 101]
    assert audio.fmtp == {101: "0-15"}
    assert audio.direction == "sendrecv"
    assert answer.origin.session_id == 42 and answer.origin.address == "203.0.113.5"
    assert answer.connection == Connection("IN", "IP4", "203.0.113.5")
    assert parse_sdp(answer.to_bytes()) == answer


def test_ipv6_answer() -> None:
    offer = parse_sdp(offer_with("m=audio 4000 RTP/AVP 0", connection="c=IN IP6 2001:db8::7"))
    answer = build_answer(offer, negotiate_audio(offer), "2001:db8::1", 20000, 1, 1)
    assert answer.connection == Connection("IN", "IP6", "2001:db8::1")
    assert answer.origin.addrtype == "IP6"


@pytest.mark.parametrize(
    ("media_lines", "reason"),
    [
        (("m=audio 4000 RTP/AVP 18 3",), "no common audio codec"),
        (("m=video 4000 RTP/AVP 31",), "no audio stream"),
        (("m=audio 0 RTP/AVP 0",), "no audio stream"),
        ((), "no audio stream"),
        (("m=audio 4000 RTP/SAVP 0",), "another transport than RTP/AVP"),
    ],
)
def test_nothing_acceptable(media_lines: tuple[str, ...], reason: str) -> None:
    with pytest.raises(NoAcceptableMedia, match=reason):
        negotiate_audio(parse_sdp(offer_with(*media_lines)))


@pytest.mark.parametrize(
    ("media_lines", "warn_code"),
    [
        (("m=audio 4000 RTP/AVP 18 3",), WARN_MEDIA_FORMAT),
        (("m=video 4000 RTP/AVP 31",), WARN_MEDIA_TYPE),
        (("m=audio 4000 RTP/SAVP 0",), WARN_TRANSPORT_PROTOCOL),
    ],
)
def test_refusals_carry_their_warn_code(media_lines: tuple[str, ...], warn_code: int) -> None:
    with pytest.raises(NoAcceptableMedia) as refusal:
        negotiate_audio(parse_sdp(offer_with(*media_lines)))
    assert refusal.value.warn_code == warn_code


@pytest.mark.parametrize(
    ("connection", "warn_code", "reason"),
    [
        ("c=IN IP4 localhost", WARN_ADDRESS_FORMAT, "not an IP4 literal"),
        ("c=IN IP4 pbx.example.com", WARN_ADDRESS_FORMAT, "host names are not resolved"),
        ("c=IN IP4 127.1", WARN_ADDRESS_FORMAT, "not an IP4 literal"),
        ("c=IN IP4 2001:db8::1", WARN_ADDRESS_FORMAT, "not an IP4 address"),
        ("c=IN IP6 192.0.2.1", WARN_ADDRESS_FORMAT, "not an IP6 address"),
        ("c=IN IP7 192.0.2.1", WARN_ADDRESS_FORMAT, "address type 'IP7'"),
        ("c=AF IP4 192.0.2.1", WARN_NETWORK_PROTOCOL, "network type 'AF'"),
        ("c=ATM NSAP 47.0091.8100", WARN_NETWORK_PROTOCOL, "network type 'ATM'"),
        ("c=IN IP4 224.2.1.1/127", WARN_ADDRESS_FORMAT, "multicast"),
        ("c=IN IP6 ff15::101", WARN_ADDRESS_FORMAT, "multicast"),
    ],
)
def test_unusable_connection_data_is_refused(connection: str, warn_code: int, reason: str) -> None:
    offer = parse_sdp(offer_with("m=audio 4000 RTP/AVP 0", connection=connection))
    with pytest.raises(NoAcceptableMedia, match=reason) as refusal:
        negotiate_audio(offer)
    assert refusal.value.warn_code == warn_code


@pytest.mark.parametrize("connection", ["c=IN IP4 192.0.2.1", "c=IN IP6 2001:db8::7",
                                        "c=IN IP4 0.0.0.0", "c=IN IP6 ::"])
def test_literal_unicast_and_hold_addresses_are_accepted(connection: str) -> None:
    offer = parse_sdp(offer_with("m=audio 4000 RTP/AVP 0", connection=connection))
    assert negotiate_audio(offer).remote_address == connection.split()[-1]


def test_the_media_level_connection_is_the_one_checked() -> None:
    offer = parse_sdp(offer_with("m=audio 4000 RTP/AVP 0", "c=IN IP4 192.0.2.9",
                                 connection="c=IN IP4 localhost"))
    assert negotiate_audio(offer).remote_address == "192.0.2.9"


def test_an_answer_naming_a_host_is_refused() -> None:
    offer = build_offer("192.0.2.1", 20000, session_id=1, session_version=1)
    answer = parse_sdp(sdp(*HEADER, "c=IN IP4 phone.example.com", "t=0 0", "m=audio 5004 RTP/AVP 0"))
    with pytest.raises(NoAcceptableMedia, match="host names") as refusal:
        accept_answer(offer, answer)
    assert refusal.value.warn_code == WARN_ADDRESS_FORMAT


def test_no_acceptable_media_is_an_sdp_error() -> None:
    assert issubclass(NoAcceptableMedia, SdpError)
    assert issubclass(SdpError, ValueError)


# --- offering, and accepting the answer


def test_build_offer() -> None:
    offer = build_offer("192.0.2.10", 30000, ("PCMA", "pcmu"), session_id=7, session_version=1)
    audio = offer.media[0]
    assert audio.formats == [8, 0, 101]
    assert audio.rtpmap[101] == RtpMap("telephone-event", 8000)
    assert audio.fmtp == {101: "0-15"}
    assert audio.ptime == 20 and audio.direction == "sendrecv"
    assert parse_sdp(offer.to_bytes()) == offer


def test_build_offer_refuses_what_it_cannot_carry() -> None:
    with pytest.raises(ValueError, match="static"):
        build_offer("192.0.2.10", 30000, ("opus",), session_id=1, session_version=1)
    with pytest.raises(ValueError, match="dynamic"):
        build_offer("192.0.2.10", 30000, telephone_event_pt=8, session_id=1, session_version=1)


def test_offer_answer_round_trip_between_two_ends() -> None:
    offer = build_offer("192.0.2.10", 30000, session_id=1, session_version=1)
    received = parse_sdp(offer.to_bytes())
    answer = build_answer(received, negotiate_audio(received), "192.0.2.20", 40000, 9, 1)
    negotiation = accept_answer(offer, parse_sdp(answer.to_bytes()))
    assert negotiation.codec == RtpMap("PCMU", 8000)
    assert (negotiation.remote_address, negotiation.remote_port) == ("192.0.2.20", 40000)
    assert negotiation.telephone_event_pt == negotiation.inbound_telephone_event_pt == 101
    assert negotiation.direction == "sendrecv"


def answer_to_offer(*media_lines: str) -> SessionDescription:
    return parse_sdp(sdp(*HEADER, "c=IN IP4 192.0.2.20", "t=0 0", *media_lines))


def test_answer_with_different_telephone_event_payload_type() -> None:
    offer = build_offer("192.0.2.10", 30000, session_id=1, session_version=1)
    answer = answer_to_offer("m=audio 40000 RTP/AVP 8 96", "a=rtpmap:96 telephone-event/8000")
    negotiation = accept_answer(offer, answer)
    assert negotiation.payload_type == 8
    assert negotiation.telephone_event_pt == 96  # what the phone expects from us
    assert negotiation.inbound_telephone_event_pt == 101  # what it sends us, per our offer


@pytest.mark.parametrize(
    ("ours", "theirs", "result", "on_hold"),
    [
        ("sendrecv", "recvonly", "sendonly", False),
        ("sendrecv", "sendonly", "recvonly", True),
        ("sendrecv", "inactive", "inactive", True),
        ("sendonly", "recvonly", "sendonly", False),
        ("recvonly", "sendonly", "recvonly", True),
    ],
)
def test_accepted_direction(ours: str, theirs: str, result: str, on_hold: bool) -> None:
    offer = build_offer(
        "192.0.2.10",
        30000,
        session_id=1,
        session_version=1,
        direction=ours,  # type: ignore[arg-type]
    )
    negotiation = accept_answer(offer, answer_to_offer("m=audio 40000 RTP/AVP 0", f"a={theirs}"))
    assert negotiation.direction == result
    assert negotiation.on_hold is on_hold


def test_answer_direction_the_offer_did_not_allow() -> None:
    offer = build_offer("192.0.2.10", 30000, session_id=1, session_version=1, direction="sendonly")
    with pytest.raises(SdpError, match="does not fit"):
        accept_answer(offer, answer_to_offer("m=audio 40000 RTP/AVP 0", "a=sendonly"))


@pytest.mark.parametrize(
    ("media_lines", "error", "reason"),
    [
        (("m=audio 40000 RTP/AVP 18",), NoAcceptableMedia, "no codec we offered"),
        (("m=audio 0 RTP/AVP 0",), NoAcceptableMedia, "rejected"),
        (("m=audio 40000 RTP/AVP 0", "m=video 0 RTP/AVP 31"), SdpError, "2 m= lines for 1"),
        (("m=video 40000 RTP/AVP 31",), SdpError, "is video, not audio"),
    ],
)
def test_bad_answers(media_lines: tuple[str, ...], error: type[SdpError], reason: str) -> None:
    offer = build_offer("192.0.2.10", 30000, session_id=1, session_version=1)
    with pytest.raises(error, match=reason):
        accept_answer(offer, answer_to_offer(*media_lines))
