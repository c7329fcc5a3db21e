"""SIP messages: parsing and serialisation (RFC 3261 §7, §20, §25).

One pass over the header block builds an ordered list of fields; the
structured values the core needs on every message (top Via, From, To,
Call-ID, CSeq) are parsed and validated there, so a malformed one is turned
into a 400 before any state is touched. Everything else is parsed lazily,
on first use, and any SipParseError raised then still means "answer 400".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import ClassVar

from pbx.sip.address import (
    NameAddress,
    Via,
    is_token,
    parse_name_address,
    parse_via,
    split_outside_quotes,
)
from pbx.sip.errors import SipParseError
from pbx.sip.uri import Uri, parse_uri

SIP_VERSION = "SIP/2.0"
MAX_MESSAGE_SIZE = 65_535
MAX_HEADER_FIELDS = 256
MAX_CSEQ = 2**31 - 1

COMPACT_FORMS = {
    "i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
    "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to",
    "v": "via", "o": "event", "r": "refer-to", "b": "referred-by", "u": "allow-events",
    "x": "session-expires", "a": "accept-contact", "j": "reject-contact",
    "d": "request-disposition", "y": "identity", "n": "identity-info",
}

_CANONICAL_NAMES = {
    name.lower(): name
    for name in (
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Content-Length",
        "Content-Type", "Content-Encoding", "Content-Disposition", "Route", "Record-Route",
        "Allow", "Supported", "Require", "Proxy-Require", "Unsupported", "Accept",
        "Accept-Encoding", "Accept-Language", "Expires", "Min-Expires", "User-Agent", "Server",
        "WWW-Authenticate", "Authorization", "Proxy-Authenticate", "Proxy-Authorization",
        "Authentication-Info", "Subject", "Date", "Timestamp", "Warning", "Retry-After",
        "Event", "Refer-To", "Referred-By", "Allow-Events", "Session-Expires", "Min-SE",
        "Reason", "Organization", "Priority", "Call-Info", "Alert-Info", "Error-Info",
        "In-Reply-To", "Reply-To", "MIME-Version", "Path", "Service-Route", "P-Asserted-Identity",
    )
}

# Headers whose value is a comma-separated list (RFC 3261 §7.3.1).
LIST_HEADERS = frozenset({
    "via", "route", "record-route", "contact", "allow", "supported", "require",
    "proxy-require", "unsupported", "accept", "accept-encoding", "accept-language",
    "content-encoding", "allow-events", "in-reply-to", "warning", "error-info",
    "alert-info", "call-info", "path", "service-route",
})

# A second instance of these makes the message ambiguous (RFC 4475 §3.1.2.9).
_SINGLE_VALUED = ("call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type")

REASON_PHRASES = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 301: "Moved Permanently",
    302: "Moved Temporarily", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    413: "Request Entity Too Large", 414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 500: "Server Internal Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Server Time-out", 505: "Version Not Supported", 513: "Message Too Large",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

_FOLDING = re.compile(r"\r?\n[ \t]+")
_VERSION = re.compile(r"SIP/\d+\.\d+\Z", re.IGNORECASE)


# Written header name -> (key, display name); names repeat on every message.
_HEADER_NAMES: dict[str, tuple[str, str]] = {}


def _header_name(written: str) -> tuple[str, str]:
    name = written.rstrip(" \t")
    if not is_token(name):
        raise SipParseError("Malformed header name")
    key = name.lower()
    key = COMPACT_FORMS.get(key, key)
    known = (key, _CANONICAL_NAMES.get(key, name))
    if len(_HEADER_NAMES) < 4096:
        _HEADER_NAMES[written] = known
    return known


def is_decimal(text: str) -> bool:
    # str.isdigit() accepts any Unicode digit; SIP numbers are ASCII only.
    return text.isascii() and text.isdigit()


# Name as the code or a peer wrote it -> canonical key; the same few names come every time.
_KEYS: dict[str, str] = {}


def canonical_key(name: str) -> str:
    key = _KEYS.get(name)
    if key is None:
        key = name.lower()
        key = COMPACT_FORMS.get(key, key)
        if len(_KEYS) < 4096:
            _KEYS[name] = key
    return key


def split_list_value(value: str) -> list[str]:
    """Split a list header value on commas outside quotes and <...>."""
    if "," not in value:
        return [value]
    return [part.strip() for part in split_outside_quotes(value, ",")]


class Headers:
    """Ordered, case-insensitive header fields; compact names are stored expanded."""

    __slots__ = ("_fields",)

    def __init__(self, fields: list[tuple[str, str, str]] | None = None) -> None:
        # Each field: (canonical key, name as written out, value).
        self._fields: list[tuple[str, str, str]] = fields if fields is not None else []

    @staticmethod
    def display_name(key: str, written: str | None = None) -> str:
        return _CANONICAL_NAMES.get(key) or written or key.title()

    def get(self, name: str) -> str | None:
        key = _KEYS.get(name) or canonical_key(name)  # inline: every message reads a few
        for field_key, _, value in self._fields:
            if field_key == key:
                return value
        return None

    def values(self, name: str) -> list[str]:
        """Every field value of `name`, one entry per header line."""
        key = canonical_key(name)
        return [value for field_key, _, value in self._fields if field_key == key]

    def get_all(self, name: str) -> list[str]:
        """Every element of `name`, list headers split on their commas."""
        key = canonical_key(name)
        found = [value for field_key, _, value in self._fields if field_key == key]
        if key not in LIST_HEADERS:
            return found
        elements: list[str] = []
        for value in found:
            elements.extend(part for part in split_list_value(value) if part)
        return elements

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        key = _KEYS.get(name) or canonical_key(name)
        field = (key, self.display_name(key, name), value)
        if first:
            self._fields.insert(0, field)
        else:
            self._fields.append(field)

    def set(self, name: str, value: str) -> None:
        """Replace every field of `name` by one, keeping the first one's position."""
        key = canonical_key(name)
        field = (key, self.display_name(key, name), value)
        for i, (field_key, _, _) in enumerate(self._fields):
            if field_key == key:
                self._fields[i] = field
                self._fields[i + 1 :] = [f for f in self._fields[i + 1 :] if f[0] != key]
                return
        self._fields.append(field)

    def remove(self, name: str) -> None:
        key = canonical_key(name)
        self._fields = [f for f in self._fields if f[0] != key]

    def items(self) -> Iterator[tuple[str, str]]:
        for _, name, value in self._fields:
            yield name, value

    def copy(self) -> Headers:
        return Headers(list(self._fields))

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Headers({list(self.items())!r})"


class Message:
    """Fields shared by requests and responses."""

    __slots__ = ("headers", "body", "_via", "_from", "_to", "_cseq")
    is_request: ClassVar[bool]

    def __init__(self, headers: Headers | None = None, body: bytes = b"") -> None:
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self._via: list[Via] | None = None
        self._from: NameAddress | None = None
        self._to: NameAddress | None = None
        self._cseq: tuple[int, str] | None = None

    # -- structured accessors (parsed once, cached) -------------------------
    @property
    def vias(self) -> list[Via]:
        if self._via is None:
            self._via = [parse_via(v) for v in self.headers.get_all("via")]
        return self._via

    @property
    def top_via(self) -> Via:
        vias = self.vias
        if not vias:
            raise SipParseError("Missing Via header")
        return vias[0]

    @property
    def branch(self) -> str | None:
        return self.top_via.branch

    @property
    def from_(self) -> NameAddress:
        if self._from is None:
            self._from = parse_name_address(self._required("from"))
        return self._from

    @property
    def to(self) -> NameAddress:
        if self._to is None:
            self._to = parse_name_address(self._required("to"))
        return self._to

    @property
    def call_id(self) -> str:
        value = self._required("call-id")
        if not value:
            raise SipParseError("Empty Call-ID")
        return value

    @property
    def cseq(self) -> tuple[int, str]:
        if self._cseq is None:
            parts = self._required("cseq").split()
            if len(parts) != 2 or not is_decimal(parts[0]):
                raise SipParseError("Malformed CSeq")
            number = int(parts[0])
            if number > MAX_CSEQ:
                raise SipParseError("CSeq number too large")
            if not is_token(parts[1]):
                raise SipParseError("Malformed CSeq method")
            self._cseq = (number, parts[1])
        return self._cseq

    @property
    def contacts(self) -> list[NameAddress]:
        return [parse_name_address(v, allow_wildcard=True) for v in self.headers.get_all("contact")]

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("content-type")
        return value.split(";", 1)[0].strip().lower() if value else None

    def int_header(self, name: str, maximum: int) -> int | None:
        value = self.headers.get(name)
        if value is None:
            return None
        value = value.strip()
        if not is_decimal(value) or int(value) > maximum:
            raise SipParseError(f"Invalid {Headers.display_name(canonical_key(name))} value")
        return int(value)

    def set_header(self, name: str, value: str) -> None:
        self.headers.set(name, value)
        self._invalidate(canonical_key(name))

    def add_header(self, name: str, value: str, *, first: bool = False) -> None:
        self.headers.add(name, value, first=first)
        self._invalidate(canonical_key(name))

    def remove_header(self, name: str) -> None:
        self.headers.remove(name)
        self._invalidate(canonical_key(name))

    def _invalidate(self, key: str) -> None:
        if key == "via":
            self._via = None
        elif key == "from":
            self._from = None
        elif key == "to":
            self._to = None
        elif key == "cseq":
            self._cseq = None

    def _required(self, key: str) -> str:
        value = self.headers.get(key)
        if value is None:
            raise SipParseError(f"Missing {Headers.display_name(key)} header")
        return value

    def _serialise(self, start_line: str) -> bytes:
        parts = [start_line]
        for _, name, value in self.headers._fields:
            if name != "Content-Length":
                parts.append(f"{name}: {value}")
        parts.append(f"Content-Length: {len(self.body)}")
        parts.append("")
        parts.append("")
        return "\r\n".join(parts).encode("utf-8", "surrogateescape") + self.body


class Request(Message):
    __slots__ = ("method", "uri")
    is_request = True

    def __init__(self, method: str, uri: Uri, headers: Headers | None = None, body: bytes = b"") -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri

    def to_bytes(self) -> bytes:
        return self._serialise(f"{self.method} {self.uri} {SIP_VERSION}")

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    __slots__ = ("status", "reason")
    is_request = False

    def __init__(self, status: int, reason: str | None = None, headers: Headers | None = None,
                 body: bytes = b"") -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = REASON_PHRASES.get(status, "Unknown") if reason is None else reason

    def to_bytes(self) -> bytes:
        return self._serialise(f"{SIP_VERSION} {self.status} {self.reason}")

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def _parse_start_line(line: str) -> tuple[str, str | int, str]:
    if line.startswith("SIP/"):
        version, _, rest = line.partition(" ")
        code, _, reason = rest.partition(" ")
        if version.upper() != SIP_VERSION:
            raise SipParseError("Unsupported SIP version", 505)
        if len(code) != 3 or not is_decimal(code) or not 100 <= int(code) <= 699:
            raise SipParseError("Malformed status code")
        return "", int(code), reason
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError("Malformed Request-Line")
    method, uri_text, version = parts
    if not is_token(method):
        raise SipParseError("Malformed method")
    if version != SIP_VERSION:
        if _VERSION.match(version):
            raise SipParseError("Unsupported SIP version", 505)
        raise SipParseError("Malformed SIP version")
    return method, uri_text, version


def parse_message(data: bytes, *, datagram: bool = True) -> Request | Response:
    """Parse one message. `datagram` means the data is a whole UDP payload:
    a missing Content-Length then means "the rest", and trailing octets
    beyond Content-Length are ignored (RFC 3261 §18.3)."""
    if len(data) > MAX_MESSAGE_SIZE:
        raise SipParseError("Message too large", 513)
    data = data.lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        head_bytes, rest = data[:end], data[end + 4 :]
    else:
        end = data.find(b"\n\n")
        if end >= 0:
            head_bytes, rest = data[:end], data[end + 2 :]
        elif datagram:
            head_bytes, rest = data.rstrip(b"\r\n"), b""
        else:
            raise SipParseError("Incomplete header block")
    head = head_bytes.decode("utf-8", "surrogateescape")
    if "\n " in head or "\n\t" in head:
        head = _FOLDING.sub(" ", head)
    # Split on bare LF too: a lone LF inside a value must not survive to be
    # written out later as a header line of its own.
    lines = head.split("\n")
    if len(lines) > MAX_HEADER_FIELDS:
        raise SipParseError("Too many header fields")
    method, target, reason = _parse_start_line(lines[0].rstrip("\r"))

    fields: list[tuple[str, str, str]] = []
    counts: dict[str, int] = {}
    for line in lines[1:]:
        colon = line.find(":")
        if colon <= 0:
            raise SipParseError("Malformed header line")
        written = line[:colon]
        known = _HEADER_NAMES.get(written)
        if known is None:
            known = _header_name(written)
        key = known[0]
        fields.append((key, known[1], line[colon + 1 :].strip(" \t\r")))
        counts[key] = counts.get(key, 0) + 1
    headers = Headers(fields)
    for key in _SINGLE_VALUED:
        if counts.get(key, 0) > 1:
            raise SipParseError(f"Multiple {Headers.display_name(key)} headers")

    length_text = headers.get("content-length")
    if length_text is not None:
        if not is_decimal(length_text):
            raise SipParseError("Invalid Content-Length")
        length = int(length_text)
        if length > len(rest):
            raise SipParseError("Content-Length larger than message")
        body = rest[:length]
    elif datagram:
        body = rest
    else:
        raise SipParseError("Missing Content-Length on a stream transport")

    message: Request | Response
    if method:
        uri_text = str(target)
        if uri_text.startswith("<"):
            raise SipParseError("Request-URI enclosed in <>")
        uri = parse_uri(uri_text)
        if uri.headers:
            raise SipParseError("Request-URI with headers")
        message = Request(method, uri, headers, body)
        for key in ("to", "from", "call-id", "cseq", "via"):
            if key not in counts:
                raise SipParseError(f"Missing {Headers.display_name(key)} header")
        if message.cseq[1] != method:
            raise SipParseError("CSeq method does not match Request-Line")
        message.int_header("max-forwards", 255)
        message.call_id  # noqa: B018
    else:
        message = Response(int(target), reason, headers, body)
        message.cseq  # noqa: B018 - validates CSeq so transactions can match on it
    # Validate what every layer relies on before anything acts on the message.
    message.top_via  # noqa: B018
    message.from_  # noqa: B018
    message.to  # noqa: B018
    return message


DIALOG_CREATING_METHODS = frozenset({"INVITE", "SUBSCRIBE"})


def make_response(request: Request, status: int, reason: str | None = None, *,
                  to_tag: str | None = None, body: bytes = b"",
                  content_type: str | None = None) -> Response:
    """A response with the headers RFC 3261 §8.2.6.2 copies from the request."""
    fields: list[tuple[str, str, str]] = []
    # A response that may create a dialog carries the proxies' Record-Route back
    # (§12.1.1), so the caller's in-dialog requests pass the same proxies.
    copied = ("via", "from", "call-id", "cseq", "record-route") \
        if request.method in DIALOG_CREATING_METHODS and 100 < status < 300 \
        else ("via", "from", "call-id", "cseq")
    for key, name, value in request.headers._fields:
        if key in copied:
            fields.append((key, name, value))
        elif key == "to":
            if to_tag and status != 100 and request.to.tag is None:
                value = f"{value};tag={to_tag}"
            fields.append((key, name, value))
    headers = Headers(fields)
    if content_type:
        headers.add("Content-Type", content_type)
    return Response(status, reason, headers, body)


class StreamFramer:
    """Cuts a TCP byte stream into messages by Content-Length (RFC 3261 §18.3).

    Leading CRLFs between messages are keep-alives (RFC 5626 §3.5.1); a
    double-CRLF ping is reported so the transport can answer with a CRLF pong.
    """

    def __init__(self, max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buffer = bytearray()
        self._max = max_message_size

    def pending_bytes(self) -> int:
        """Bytes received of a message not complete yet."""
        return len(self._buffer)

    def buffered(self) -> bytes:
        return bytes(self._buffer)

    def feed(self, data: bytes) -> list[bytes | None]:
        """Return the complete messages now available; None marks a keep-alive ping."""
        self._buffer += data
        out: list[bytes | None] = []
        buf = self._buffer
        while buf:
            if buf[0] in (13, 10):
                stripped = 0
                while stripped < len(buf) and buf[stripped] in (13, 10):
                    stripped += 1
                if bytes(buf[:4]) == b"\r\n\r\n":
                    out.append(None)
                del buf[:stripped]
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self._max:
                    raise SipParseError("Header block too large", 513)
                break
            head = bytes(buf[:end])
            length = _content_length_of(head)
            total = end + 4 + length
            if total > self._max:
                raise SipParseError("Message too large", 513)
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
        return out


def _content_length_of(head: bytes) -> int:
    found: int | None = None
    for line in head.split(b"\r\n")[1:]:
        colon = line.find(b":")
        if colon <= 0:
            continue
        name = line[:colon].strip().lower()
        if name in (b"content-length", b"l"):
            value = line[colon + 1 :].strip()
            if not (value.isascii() and value.isdigit()):
                raise SipParseError("Invalid Content-Length")
            if found is not None:
                raise SipParseError("Multiple Content-Length headers")
            found = int(value)
    if found is None:
        raise SipParseError("Missing Content-Length on a stream transport")
    return found
