"""SDP (RFC 4566) parsing and serialization, and RFC 3264 offer/answer for one audio stream.

Sans-I/O and stdlib only. The model keeps what the server interprets (codecs, direction,
addresses, ptime) as typed fields, and every other line verbatim, so a description survives
``parse_sdp(sd.to_bytes()) == sd``.

Text is decoded as UTF-8 with ``surrogateescape``: a session name in some other charset
round-trips byte for byte instead of failing the call.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

__all__ = [
    "Attribute",
    "AudioNegotiation",
    "Connection",
    "Direction",
    "MediaDescription",
    "NoAcceptableMedia",
    "Origin",
    "RtpMap",
    "SdpError",
    "SessionDescription",
    "Timing",
    "WARN_ADDRESS_FORMAT",
    "WARN_MEDIA_FORMAT",
    "WARN_MEDIA_TYPE",
    "WARN_NETWORK_PROTOCOL",
    "WARN_TRANSPORT_PROTOCOL",
    "accept_answer",
    "media_address",
    "build_answer",
    "build_offer",
    "negotiate_audio",
    "parse_sdp",
]

Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]

_DIRECTIONS: frozenset[str] = frozenset(("sendrecv", "sendonly", "recvonly", "inactive"))
# What the other side does when one side declares a direction (RFC 3264 §6.1).
_MIRRORED: dict[str, Direction] = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}
_SENDS: frozenset[str] = frozenset(("sendrecv", "sendonly"))
_RECEIVES: frozenset[str] = frozenset(("sendrecv", "recvonly"))

# RFC 4566 §5: the order of the optional lines this model keeps verbatim.
_SESSION_LINES_BEFORE_CONNECTION = "iuep"
_SESSION_LINES_BEFORE_TIMING = "b"
_SESSION_LINES_AFTER_TIMING = "zk"
_MEDIA_LINES_BEFORE_CONNECTION = "i"
_MEDIA_LINES_AFTER_CONNECTION = "bk"

_AUDIO_PROFILE = "RTP/AVP"
_TELEPHONE_EVENT = "TELEPHONE-EVENT"
_DTMF_EVENTS = "0-15"
_HOLD_ADDRESSES: frozenset[str] = frozenset(("0.0.0.0", "::"))


# RFC 3261 §20.43 warn-codes for an offer or answer we cannot use.
WARN_NETWORK_PROTOCOL = 300
WARN_ADDRESS_FORMAT = 301
WARN_TRANSPORT_PROTOCOL = 302
WARN_MEDIA_TYPE = 304
WARN_MEDIA_FORMAT = 305


class SdpError(ValueError):
    """A session description is malformed; ``str(error)`` is fit for a SIP reason phrase."""

    def __init__(self, reason: str) -> None:
        # Reasons quote the peer's text; keep control characters out of our status line.
        printable = "".join(c if c.isprintable() else "?" for c in reason)
        super().__init__(printable[:120])


class NoAcceptableMedia(SdpError):
    """Nothing in the offer or answer can be used; the server answers 488 Not Acceptable Here.

    ``warn_code`` is the RFC 3261 §20.43 Warning code that says why: 300 network type,
    301 address, 302 transport protocol, 304 media type, 305 media format.
    """

    def __init__(self, reason: str, warn_code: int = WARN_MEDIA_TYPE) -> None:
        super().__init__(reason)
        self.warn_code = warn_code


@dataclass(frozen=True, slots=True)
class RtpMap:
    encoding: str
    clock_rate: int
    channels: int = 1

    def __str__(self) -> str:
        if self.channels == 1:
            return f"{self.encoding}/{self.clock_rate}"
        return f"{self.encoding}/{self.clock_rate}/{self.channels}"


# RFC 3551 table 4: static payload types a peer may use without an a=rtpmap line.
STATIC_PAYLOAD_TYPES: dict[int, RtpMap] = {
    0: RtpMap("PCMU", 8000),
    3: RtpMap("GSM", 8000),
    4: RtpMap("G723", 8000),
    8: RtpMap("PCMA", 8000),
    9: RtpMap("G722", 8000),  # 8000 by RFC 3551's deliberate historical error
    13: RtpMap("CN", 8000),
    18: RtpMap("G729", 8000),
}
_STATIC_PAYLOAD_TYPE_BY_NAME: dict[str, int] = {
    codec.encoding: pt for pt, codec in STATIC_PAYLOAD_TYPES.items()
}


@dataclass(slots=True)
class Origin:
    username: str
    session_id: int
    session_version: int
    nettype: str
    addrtype: str
    address: str

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(slots=True)
class Connection:
    nettype: str
    addrtype: str
    address: str  # may carry "/ttl[/count]" for multicast, kept as written

    @property
    def host(self) -> str:
        """The address without any multicast TTL or address count."""
        return self.address.partition("/")[0]

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(slots=True)
class Timing:
    start: int = 0
    stop: int = 0
    repeats: list[str] = field(default_factory=list)  # r= lines, verbatim


@dataclass(slots=True)
class Attribute:
    name: str
    value: str | None = None  # None for a property attribute such as a=rtcp-mux

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(slots=True)
class MediaDescription:
    media: str
    port: int
    proto: str
    formats: list[int] = field(default_factory=list)
    rtpmap: dict[int, RtpMap] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    # Effective direction: the media-level attribute, else the session-level one, else sendrecv.
    direction: Direction = "sendrecv"
    # The media-level c= line only; see SessionDescription.connection_for().
    connection: Connection | None = None
    ptime: int | None = None
    attributes: list[Attribute] = field(default_factory=list)
    # Formats of a non-RTP transport (e.g. "t38" over udptl), which are not payload types.
    other_formats: list[str] = field(default_factory=list)
    port_count: int = 1
    # i=, b= and k= lines as (type, value), kept verbatim.
    other_lines: list[tuple[str, str]] = field(default_factory=list)

    @property
    def is_rtp(self) -> bool:
        return "RTP/" in self.proto.upper()

    def attribute(self, name: str) -> str | None:
        """The value of the first uninterpreted attribute called ``name`` (``""`` if valueless)."""
        for attribute in self.attributes:
            if attribute.name == name:
                return "" if attribute.value is None else attribute.value
        return None


@dataclass(slots=True)
class SessionDescription:
    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    timing: list[Timing] = field(default_factory=lambda: [Timing()])
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    direction: Direction | None = None  # session-level direction attribute, if any
    version: int = 0
    # i=, u=, e=, p=, b=, z= and k= lines as (type, value), kept verbatim.
    other_lines: list[tuple[str, str]] = field(default_factory=list)

    def connection_for(self, media: MediaDescription) -> Connection | None:
        """The c= line that applies to ``media``: its own, else the session's."""
        return media.connection if media.connection is not None else self.connection

    def to_bytes(self) -> bytes:
        return self.to_text().encode("utf-8", "surrogateescape")

    def to_text(self) -> str:
        out = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        _append_other_lines(out, self.other_lines, _SESSION_LINES_BEFORE_CONNECTION)
        if self.connection is not None:
            out.append(f"c={self.connection}")
        _append_other_lines(out, self.other_lines, _SESSION_LINES_BEFORE_TIMING)
        for timing in self.timing:
            out.append(f"t={timing.start} {timing.stop}")
            out.extend(f"r={repeat}" for repeat in timing.repeats)
        _append_other_lines(out, self.other_lines, _SESSION_LINES_AFTER_TIMING)
        if self.direction is not None:
            out.append(f"a={self.direction}")
        out.extend(f"a={attribute}" for attribute in self.attributes)
        inherited_direction = self.direction or "sendrecv"
        for media in self.media:
            _append_media(out, media, inherited_direction)
        out.append("")
        return "\r\n".join(out)


def _append_other_lines(out: list[str], lines: list[tuple[str, str]], types: str) -> None:
    for kind in types:
        out.extend(f"{line_type}={value}" for line_type, value in lines if line_type == kind)


def _append_media(out: list[str], media: MediaDescription, inherited_direction: str) -> None:
    port = str(media.port) if media.port_count == 1 else f"{media.port}/{media.port_count}"
    formats = " ".join(map(str, media.formats)) if media.is_rtp else " ".join(media.other_formats)
    out.append(f"m={media.media} {port} {media.proto} {formats}")
    _append_other_lines(out, media.other_lines, _MEDIA_LINES_BEFORE_CONNECTION)
    if media.connection is not None:
        out.append(f"c={media.connection}")
    _append_other_lines(out, media.other_lines, _MEDIA_LINES_AFTER_CONNECTION)
    rtpmap = media.rtpmap
    for pt in media.formats:
        codec = rtpmap.get(pt)
        if codec is not None:
            out.append(f"a=rtpmap:{pt} {codec}")
    out.extend(f"a=rtpmap:{pt} {codec}" for pt, codec in rtpmap.items() if pt not in media.formats)
    out.extend(f"a=fmtp:{pt} {parameters}" for pt, parameters in media.fmtp.items())
    if media.ptime is not None:
        out.append(f"a=ptime:{media.ptime}")
    if media.is_rtp or media.direction != inherited_direction:
        out.append(f"a={media.direction}")
    out.extend(f"a={attribute}" for attribute in media.attributes)


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse a session description; raise :class:`SdpError` naming the first defect.

    Accepts CRLF or bare LF line ends and blank lines; requires v=0 first, then exactly one
    o= and s=, at least one t=, and a c= line for every active media stream.
    """
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    lines = [line.rstrip("\r") for line in text.split("\n")]
    lines = [line for line in lines if line]
    if not lines or lines[0] != "v=0":
        raise SdpError("SDP must start with v=0")

    origin: Origin | None = None
    session_name: str | None = None
    session_connection: Connection | None = None
    timing: list[Timing] = []
    session_attributes: list[Attribute] = []
    session_direction: Direction | None = None
    session_other: list[tuple[str, str]] = []
    media_blocks: list[list[str]] = []

    index = 1
    count = len(lines)
    while index < count:
        kind, value = _split_line(lines[index])
        if kind == "m":
            break
        index += 1
        if kind == "a":
            name, has_value, attr_value = value.partition(":")
            if name in _DIRECTIONS and not has_value:
                session_direction = cast(Direction, name)
            else:
                session_attributes.append(Attribute(name, attr_value if has_value else None))
        elif kind == "o":
            if origin is not None:
                raise SdpError("SDP has more than one o= line")
            origin = _parse_origin(value)
        elif kind == "s":
            if session_name is not None:
                raise SdpError("SDP has more than one s= line")
            session_name = value
        elif kind == "c":
            if session_connection is not None:
                raise SdpError("SDP has more than one session-level c= line")
            session_connection = _parse_connection(value)
        elif kind == "t":
            timing.append(_parse_timing(value))
        elif kind == "r":
            if not timing:
                raise SdpError("SDP r= line before any t= line")
            timing[-1].repeats.append(value)
        elif kind in "iuepbzk":
            session_other.append((kind, value))
        else:
            raise SdpError(f"SDP has an unexpected {kind}= line at session level")

    if origin is None:
        raise SdpError("SDP lacks an o= line")
    if session_name is None:
        raise SdpError("SDP lacks an s= line")
    if not timing:
        raise SdpError("SDP lacks a t= line")

    while index < count:
        block = [lines[index][2:]]
        index += 1
        while index < count and not lines[index].startswith("m="):
            block.append(lines[index])
            index += 1
        media_blocks.append(block)

    inherited_direction: Direction = session_direction or "sendrecv"
    media = [_parse_media(block, inherited_direction) for block in media_blocks]
    if session_connection is None:
        for description in media:
            if description.connection is None and description.port != 0:
                raise SdpError(f"SDP {description.media} stream has no c= line")

    return SessionDescription(
        origin=origin,
        session_name=session_name,
        connection=session_connection,
        timing=timing,
        attributes=session_attributes,
        media=media,
        direction=session_direction,
        version=0,
        other_lines=session_other,
    )


def _split_line(line: str) -> tuple[str, str]:
    if line[1:2] != "=" or not ("a" <= line[0] <= "z"):
        raise _malformed_line(line)
    return line[0], line[2:]


def _malformed_line(line: str) -> SdpError:
    return SdpError(f"SDP line is not <type>=<value>: {line[:40]!r}")


def _parse_int(text: str, what: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise SdpError(f"SDP {what} is not a number: {text[:40]!r}")
    return int(text)


def _parse_origin(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise SdpError("SDP o= line needs 6 fields")
    username, session_id, session_version, nettype, addrtype, address = parts
    return Origin(
        username,
        _parse_int(session_id, "o= session id"),
        _parse_int(session_version, "o= session version"),
        nettype,
        addrtype,
        address,
    )


def _parse_connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise SdpError("SDP c= line needs 3 fields")
    return Connection(parts[0], parts[1], parts[2])


def _parse_timing(value: str) -> Timing:
    parts = value.split()
    if len(parts) != 2:
        raise SdpError("SDP t= line needs 2 fields")
    return Timing(_parse_int(parts[0], "t= start"), _parse_int(parts[1], "t= stop"))


def _parse_media(block: list[str], inherited_direction: Direction) -> MediaDescription:
    parts = block[0].split()
    if len(parts) < 4:
        raise SdpError("SDP m= line needs media, port, proto and at least one format")
    media_type, port_text, proto = parts[0], parts[1], parts[2]
    port_part, slash, count_part = port_text.partition("/")
    port = _parse_int(port_part, "m= port")
    port_count = _parse_int(count_part, "m= port count") if slash else 1
    if port > 65535:
        raise SdpError(f"SDP m= port out of range: {port}")
    description = MediaDescription(
        media_type, port, proto, direction=inherited_direction, port_count=port_count
    )
    if description.is_rtp:
        description.formats = [_parse_payload_type(token) for token in parts[3:]]
    else:
        description.other_formats = parts[3:]

    rtpmap = description.rtpmap
    for line in block[1:]:
        if line[1:2] != "=":
            raise _malformed_line(line)
        kind = line[0]
        value = line[2:]
        if kind == "a":
            name, has_value, attr_value = value.partition(":")
            if name == "rtpmap" and description.is_rtp:
                pt, codec = _parse_rtpmap(attr_value)
                rtpmap[pt] = codec
            elif name == "fmtp" and description.is_rtp:
                pt_text, _, parameters = attr_value.partition(" ")
                description.fmtp[_parse_payload_type(pt_text)] = parameters.strip()
            elif name in _DIRECTIONS and not has_value:
                description.direction = cast(Direction, name)
            elif name == "ptime" and attr_value.isdigit() and attr_value.isascii():
                description.ptime = int(attr_value)
            else:
                description.attributes.append(Attribute(name, attr_value if has_value else None))
        elif kind == "c":
            if description.connection is not None:
                raise SdpError(f"SDP {media_type} stream has more than one c= line")
            description.connection = _parse_connection(value)
        elif kind in "ibk":
            description.other_lines.append((kind, value))
        else:
            raise SdpError(f"SDP has an unexpected {kind}= line in a {media_type} stream")

    for pt in description.formats:
        if pt not in rtpmap:
            static = STATIC_PAYLOAD_TYPES.get(pt)
            if static is not None:
                rtpmap[pt] = static
    return description


# Lookup tables instead of int() plus validation: one dict probe per token on the hot path.
_PAYLOAD_TYPE_BY_TEXT: dict[str, int] = {str(pt): pt for pt in range(128)}
_COMMON_CLOCK_RATES: dict[str, int] = {
    str(rate): rate for rate in (8000, 16000, 11025, 22050, 24000, 32000, 44100, 48000, 90000)
}


def _parse_payload_type(text: str) -> int:
    pt = _PAYLOAD_TYPE_BY_TEXT.get(text)
    if pt is None:
        raise SdpError(f"SDP payload type is not 0-127: {text[:40]!r}")
    return pt


def _parse_rtpmap(value: str) -> tuple[int, RtpMap]:
    pt_text, _, codec_text = value.partition(" ")
    pt = _parse_payload_type(pt_text)
    fields = codec_text.strip().split("/")
    if len(fields) not in (2, 3) or not fields[0]:
        raise SdpError(f"SDP rtpmap is not <encoding>/<clock rate>[/<channels>]: {value[:40]!r}")
    clock_rate = _COMMON_CLOCK_RATES.get(fields[1]) or _parse_int(fields[1], "rtpmap clock rate")
    channels = _parse_int(fields[2], "rtpmap channels") if len(fields) == 3 else 1
    return pt, RtpMap(fields[0], clock_rate, channels)


# ---------------------------------------------------------------------------------------------
# Offer/answer


@dataclass(frozen=True, slots=True)
class AudioNegotiation:
    """The outcome of offer/answer for the one audio stream this server carries."""

    media_index: int  # position of the audio stream among the m= lines
    payload_type: int  # the payload type to send the codec with
    codec: RtpMap
    telephone_event_pt: int | None  # the payload type to send RFC 4733 events with
    # The payload type the peer sends events with: ours from the offer when we offered.
    inbound_telephone_event_pt: int | None
    remote_address: str
    remote_port: int
    direction: Direction  # what we do: sendrecv means we both send and receive
    remote_direction: Direction  # what the peer declared in its description
    on_hold: bool  # the peer will not receive our media (sendonly/inactive or c=0.0.0.0)
    remote_ptime: int | None

    @property
    def sends(self) -> bool:
        return self.direction in _SENDS

    @property
    def receives(self) -> bool:
        return self.direction in _RECEIVES


def _audio_codec_matches(codec: RtpMap, wanted_upper: str) -> bool:
    if codec.encoding.upper() != wanted_upper or codec.channels != 1:
        return False
    static_pt = _STATIC_PAYLOAD_TYPE_BY_NAME.get(wanted_upper)
    return static_pt is None or codec.clock_rate == STATIC_PAYLOAD_TYPES[static_pt].clock_rate


def _telephone_event_pt(media: MediaDescription) -> int | None:
    for pt in media.formats:
        codec = media.rtpmap.get(pt)
        if (
            codec is not None
            and codec.clock_rate == 8000
            and codec.encoding.upper() == _TELEPHONE_EVENT
        ):
            return pt
    return None


def _peer_direction(declared: Direction, address: str) -> Direction:
    # RFC 3264 §8.4: c=0.0.0.0 is the RFC 2543 way to say "do not send to me".
    if address in _HOLD_ADDRESSES:
        return "sendonly" if declared in _SENDS else "inactive"
    return declared


def negotiate_audio(
    offer: SessionDescription, supported: Sequence[str] = ("PCMU", "PCMA")
) -> AudioNegotiation:
    """Pick the audio stream and codec to answer ``offer`` with (RFC 3264 §6.1).

    The first active RTP/AVP audio stream offering a supported codec is accepted, with the
    codec the offerer listed first among those ``supported``; every other stream is rejected
    in the answer. Raises :class:`NoAcceptableMedia` if no stream qualifies.
    """
    wanted = [name.upper() for name in supported]
    saw_audio = False
    saw_rtp = False
    for index, media in enumerate(offer.media):
        if media.media != "audio" or media.port == 0:
            continue
        saw_audio = True
        if media.proto.upper() != _AUDIO_PROFILE:
            continue
        saw_rtp = True
        chosen = _choose_offered_codec(media, wanted)
        if chosen is None:
            continue
        address = media_address(offer.connection_for(media))
        remote_direction = _peer_direction(media.direction, address)
        telephone_event_pt = _telephone_event_pt(media)
        pt, codec = chosen
        return AudioNegotiation(
            media_index=index,
            payload_type=pt,
            codec=codec,
            telephone_event_pt=telephone_event_pt,
            inbound_telephone_event_pt=telephone_event_pt,
            remote_address=address,
            remote_port=media.port,
            direction=_MIRRORED[remote_direction],
            remote_direction=media.direction,
            on_hold=remote_direction not in _RECEIVES,
            remote_ptime=media.ptime,
        )
    if not saw_audio:
        raise NoAcceptableMedia("no audio stream offered", WARN_MEDIA_TYPE)
    if not saw_rtp:
        raise NoAcceptableMedia(f"audio is only offered over another transport than {_AUDIO_PROFILE}",
                                WARN_TRANSPORT_PROTOCOL)
    raise NoAcceptableMedia("no common audio codec", WARN_MEDIA_FORMAT)


def media_address(connection: Connection | None) -> str:
    """The unicast IP literal media goes to, from the c= line that applies to a stream.

    Only ``IN IP4``/``IN IP6`` with a literal address of that family is usable: the server
    never resolves a host name for media (a lookup per call is an amplifier, and its answer
    is the peer's to choose), and it does not join multicast groups. Raises
    :class:`NoAcceptableMedia` with the fitting warn-code otherwise.
    """
    if connection is None:  # parse_sdp guarantees one for an active stream
        raise NoAcceptableMedia("SDP audio stream has no c= line", WARN_ADDRESS_FORMAT)
    if connection.nettype != "IN":
        raise NoAcceptableMedia(f"network type {connection.nettype!r} is not IN", WARN_NETWORK_PROTOCOL)
    version = _ADDRESS_VERSIONS.get(connection.addrtype)
    if version is None:
        raise NoAcceptableMedia(f"address type {connection.addrtype!r} is not IP4 or IP6",
                                WARN_ADDRESS_FORMAT)
    text = connection.host
    try:
        address_version, multicast = _address_facts(text)
    except ValueError:
        raise NoAcceptableMedia(f"connection address {text!r} is not an {connection.addrtype} literal"
                                " (host names are not resolved)", WARN_ADDRESS_FORMAT) from None
    if address_version != version:
        raise NoAcceptableMedia(f"connection address {text!r} is not an {connection.addrtype} address",
                                WARN_ADDRESS_FORMAT)
    if multicast:
        raise NoAcceptableMedia(f"multicast connection address {text!r} is not supported",
                                WARN_ADDRESS_FORMAT)
    return text


_ADDRESS_VERSIONS: dict[str, int] = {"IP4": 4, "IP6": 6}


@functools.lru_cache(maxsize=1024)
def _address_facts(text: str) -> tuple[int, bool]:
    """(IP version, multicast) of an address literal; ValueError if it is none. Cached: the
    same few peers' addresses come in every offer, and parsing one is ~30 Python calls."""
    address = ipaddress.ip_address(text)
    return address.version, address.is_multicast


def _choose_offered_codec(media: MediaDescription, wanted: list[str]) -> tuple[int, RtpMap] | None:
    for pt in media.formats:  # the offerer's order of preference
        codec = media.rtpmap.get(pt)
        if codec is None:
            continue
        for name in wanted:
            if _audio_codec_matches(codec, name):
                return pt, codec
    return None


def _address_type(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def build_answer(
    offer: SessionDescription,
    negotiation: AudioNegotiation,
    local_address: str,
    local_port: int,
    session_id: int,
    session_version: int,
    *,
    ptime: int = 20,
    session_name: str = "-",
) -> SessionDescription:
    """The answer to ``offer``: one m= line per offered stream, in order (RFC 3264 §6).

    The negotiated audio stream gets our address, the chosen codec and telephone-event;
    every other stream is rejected with port 0 and the offered formats echoed.
    """
    addrtype = _address_type(local_address)
    media: list[MediaDescription] = []
    for index, offered in enumerate(offer.media):
        if index != negotiation.media_index:
            media.append(_rejected(offered))
            continue
        formats = [negotiation.payload_type]
        rtpmap = {negotiation.payload_type: negotiation.codec}
        fmtp: dict[int, str] = {}
        if negotiation.telephone_event_pt is not None:
            formats.append(negotiation.telephone_event_pt)
            rtpmap[negotiation.telephone_event_pt] = RtpMap("telephone-event", 8000)
            fmtp[negotiation.telephone_event_pt] = _DTMF_EVENTS
        media.append(
            MediaDescription(
                media=offered.media,
                port=local_port,
                proto=offered.proto,
                formats=formats,
                rtpmap=rtpmap,
                fmtp=fmtp,
                direction=negotiation.direction,
                ptime=ptime,
            )
        )
    return SessionDescription(
        origin=Origin("-", session_id, session_version, "IN", addrtype, local_address),
        session_name=session_name,
        connection=Connection("IN", addrtype, local_address),
        media=media,
    )


def _rejected(offered: MediaDescription) -> MediaDescription:
    return MediaDescription(
        media=offered.media,
        port=0,
        proto=offered.proto,
        formats=list(offered.formats),
        other_formats=list(offered.other_formats),
        direction=offered.direction,
    )


def build_offer(
    local_address: str,
    local_port: int,
    codecs: Sequence[str] = ("PCMU", "PCMA"),
    telephone_event_pt: int | None = 101,
    *,
    session_id: int,
    session_version: int,
    direction: Direction = "sendrecv",
    ptime: int = 20,
    session_name: str = "-",
) -> SessionDescription:
    """An offer of one audio stream with ``codecs`` (static payload types) in preference order."""
    formats: list[int] = []
    rtpmap: dict[int, RtpMap] = {}
    for name in codecs:
        pt = _STATIC_PAYLOAD_TYPE_BY_NAME.get(name.upper())
        if pt is None:
            raise ValueError(f"codec {name!r} has no static RTP payload type")
        formats.append(pt)
        rtpmap[pt] = STATIC_PAYLOAD_TYPES[pt]
    if not formats:
        raise ValueError("an offer needs at least one codec")
    fmtp: dict[int, str] = {}
    if telephone_event_pt is not None:
        if not 96 <= telephone_event_pt <= 127:
            raise ValueError("telephone-event needs a dynamic payload type (96-127)")
        formats.append(telephone_event_pt)
        rtpmap[telephone_event_pt] = RtpMap("telephone-event", 8000)
        fmtp[telephone_event_pt] = _DTMF_EVENTS
    addrtype = _address_type(local_address)
    return SessionDescription(
        origin=Origin("-", session_id, session_version, "IN", addrtype, local_address),
        session_name=session_name,
        connection=Connection("IN", addrtype, local_address),
        media=[
            MediaDescription(
                media="audio",
                port=local_port,
                proto=_AUDIO_PROFILE,
                formats=formats,
                rtpmap=rtpmap,
                fmtp=fmtp,
                direction=direction,
                ptime=ptime,
            )
        ],
    )


_ALLOWED_ANSWER_DIRECTIONS: dict[str, frozenset[str]] = {
    "sendrecv": _DIRECTIONS,
    "sendonly": frozenset(("recvonly", "inactive")),
    "recvonly": frozenset(("sendonly", "inactive")),
    "inactive": frozenset(("inactive",)),
}


def _combine(first: Direction, second: Direction) -> Direction:
    """The direction both allow: we send only if both let us send, receive likewise."""
    sends = first in _SENDS and second in _SENDS
    receives = first in _RECEIVES and second in _RECEIVES
    if sends:
        return "sendrecv" if receives else "sendonly"
    return "recvonly" if receives else "inactive"


def accept_answer(offer: SessionDescription, answer: SessionDescription) -> AudioNegotiation:
    """Check the answer to our ``offer`` and say what to send where (RFC 3264 §7).

    Raises :class:`SdpError` if the answer breaks RFC 3264 (a different number of streams,
    a direction the offer did not allow) and :class:`NoAcceptableMedia` if it rejected our
    audio stream or picked no codec we offered.
    """
    if len(answer.media) != len(offer.media):
        raise SdpError(
            f"SDP answer has {len(answer.media)} m= lines for {len(offer.media)} offered"
        )
    for index, offered in enumerate(offer.media):
        if offered.media != "audio" or offered.port == 0:
            continue
        answered = answer.media[index]
        if answered.media != offered.media:
            raise SdpError(f"SDP answer stream {index} is {answered.media}, not {offered.media}")
        if answered.port == 0:
            raise NoAcceptableMedia("audio stream rejected in the answer")
        return _accept_audio(offer, answer, index)
    raise SdpError("our offer has no active audio stream")


def _accept_audio(
    offer: SessionDescription, answer: SessionDescription, index: int
) -> AudioNegotiation:
    offered = offer.media[index]
    answered = answer.media[index]
    offered_names = {
        codec.encoding.upper()
        for pt, codec in offered.rtpmap.items()
        if pt in offered.formats and codec.encoding.upper() != _TELEPHONE_EVENT
    }
    chosen: tuple[int, RtpMap] | None = None
    for pt in answered.formats:  # the answerer's order of preference
        codec = answered.rtpmap.get(pt)
        if codec is not None and any(_audio_codec_matches(codec, n) for n in offered_names):
            chosen = (pt, codec)
            break
    if chosen is None:
        raise NoAcceptableMedia("answer picked no codec we offered", WARN_MEDIA_FORMAT)
    if answered.direction not in _ALLOWED_ANSWER_DIRECTIONS[offered.direction]:
        raise SdpError(f"SDP answer {answered.direction} does not fit offer {offered.direction}")
    address = media_address(answer.connection_for(answered))
    remote_direction = _peer_direction(answered.direction, address)
    pt, codec = chosen
    return AudioNegotiation(
        media_index=index,
        payload_type=pt,
        codec=codec,
        telephone_event_pt=_telephone_event_pt(answered),
        inbound_telephone_event_pt=_telephone_event_pt(offered),
        remote_address=address,
        remote_port=answered.port,
        direction=_combine(offered.direction, _MIRRORED[remote_direction]),
        remote_direction=answered.direction,
        on_hold=remote_direction not in _RECEIVES,
        remote_ptime=answered.ptime,
    )
