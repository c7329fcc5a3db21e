"""Hand-built SIP over UDP and TCP: send bytes to the server, collect what comes back.

The parser here is deliberately independent of the server's own (pbx.sip.message): tests
judge the server's output with a second opinion, not with the code under test.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import socket
import time
from dataclasses import dataclass, field

from .procs import LOOPBACK

COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
           "c": "content-type", "k": "supported", "s": "subject", "e": "content-encoding",
           "o": "event", "r": "refer-to", "b": "referred-by", "u": "allow-events", "x": "session-expires"}


@dataclass
class SipMessage:
    """A parsed SIP message: start line, headers (lowercase full names, in order), body."""

    raw: bytes
    start_line: str
    headers: list[tuple[str, str]]
    body: bytes
    source: tuple[str, int] | None = None

    @property
    def is_response(self) -> bool:
        return self.start_line.startswith("SIP/")

    @property
    def status(self) -> int:
        if not self.is_response:
            raise ValueError(f"not a response: {self.start_line!r}")
        return int(self.start_line.split(" ", 2)[1])

    @property
    def reason(self) -> str:
        parts = self.start_line.split(" ", 2)
        return parts[2] if len(parts) > 2 else ""

    @property
    def method(self) -> str:
        if self.is_response:
            return self.cseq[1]
        return self.start_line.split(" ", 1)[0]

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        name = COMPACT.get(name.lower(), name.lower())
        return [value for key, value in self.headers if key == name]

    def values(self, name: str) -> list[str]:
        """Comma-separated header values split into elements (respecting quotes and <>)."""
        out: list[str] = []
        for value in self.get_all(name):
            out.extend(split_commas(value))
        return out

    @property
    def call_id(self) -> str | None:
        return self.get("call-id")

    @property
    def cseq(self) -> tuple[int, str]:
        value = self.get("cseq") or "0 ?"
        number, _, method = value.strip().partition(" ")
        return int(number), method.strip()

    @property
    def to_tag(self) -> str | None:
        return header_param(self.get("to") or "", "tag")

    @property
    def from_tag(self) -> str | None:
        return header_param(self.get("from") or "", "tag")

    def __str__(self) -> str:
        return self.raw.decode("utf-8", "replace")


def split_commas(value: str) -> list[str]:
    parts, depth_angle, quoted, current, escape = [], False, False, [], False
    for character in value:
        if escape:
            current.append(character)
            escape = False
            continue
        if quoted and character == "\\":
            escape = True
        elif character == '"':
            quoted = not quoted
        elif not quoted and character == "<":
            depth_angle = True
        elif not quoted and character == ">":
            depth_angle = False
        elif character == "," and not quoted and not depth_angle:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(character)
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return parts


def header_param(value: str, name: str) -> str | None:
    """A header parameter (after the URI's closing '>' when there is one)."""
    after = value.rsplit(">", 1)[1] if ">" in value else value
    for piece in after.split(";")[1:]:
        key, _, param_value = piece.partition("=")
        if key.strip().lower() == name.lower():
            return param_value.strip()
    return None


def parse_message(data: bytes, source: tuple[str, int] | None = None) -> SipMessage:
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        head, separator, body = data.partition(b"\n\n")
    lines = re.split(r"\r?\n", head.decode("utf-8", "replace"))
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        raise ValueError("empty message")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded continuation
            key, value = headers[-1]
            headers[-1] = (key, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon:
            continue
        key = name.strip().lower()
        headers.append((COMPACT.get(key, key), value.strip()))
    message = SipMessage(raw=data, start_line=lines[0], headers=headers, body=body, source=source)
    length = message.get("content-length")
    if length is not None and length.strip().isdigit():
        message.body = body[: int(length)]
    return message


def frame_stream(buffer: bytearray) -> bytes | None:
    """Pop one complete message from a TCP stream buffer (Content-Length framing)."""
    while buffer.startswith(b"\r\n"):  # keep-alives
        del buffer[:2]
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).decode("utf-8", "replace")
    match = re.search(r"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)", head)
    length = int(match.group(1)) if match else 0
    total = end + 4 + length
    if len(buffer) < total:
        return None
    message = bytes(buffer[:total])
    del buffer[:total]
    return message


# ---------------------------------------------------------------------------------------------
# Transports


class UdpPeer:
    """A bound UDP socket on loopback that talks to one server."""

    transport = "UDP"

    def __init__(self, server: tuple[str, int], host: str = LOOPBACK) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.local = self.sock.getsockname()

    def send(self, data: bytes | str) -> None:
        self.sock.sendto(data.encode() if isinstance(data, str) else data, self.server)

    def recv(self, timeout: float) -> SipMessage | None:
        """The next datagram within ``timeout`` seconds, parsed, or None."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                return None
            try:
                return parse_message(data, source)
            except ValueError:
                continue

    def collect(self, wait: float) -> list[SipMessage]:
        """Everything that arrives during ``wait`` seconds."""
        out: list[SipMessage] = []
        deadline = time.monotonic() + wait
        while (remaining := deadline - time.monotonic()) > 0:
            message = self.recv(remaining)
            if message is not None:
                out.append(message)
        return out

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> UdpPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TcpPeer:
    """A TCP connection to the server with stream framing."""

    transport = "TCP"

    def __init__(self, server: tuple[str, int], timeout: float = 5.0, host: str | None = None) -> None:
        self.server = server
        self.sock = socket.create_connection(server, timeout=timeout,
                                             source_address=(host, 0) if host else None)
        self.local = self.sock.getsockname()
        self.buffer = bytearray()
        self.closed_by_peer = False

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def recv(self, timeout: float) -> SipMessage | None:
        deadline = time.monotonic() + timeout
        while True:
            framed = frame_stream(self.buffer)
            if framed is not None:
                return parse_message(framed, self.server)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed_by_peer:
                return None
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            except (ConnectionResetError, BrokenPipeError):
                self.closed_by_peer = True
                return None
            if not chunk:
                self.closed_by_peer = True
                return None
            self.buffer += chunk

    def collect(self, wait: float) -> list[SipMessage]:
        out: list[SipMessage] = []
        deadline = time.monotonic() + wait
        while (remaining := deadline - time.monotonic()) > 0:
            message = self.recv(remaining)
            if message is None:
                if self.closed_by_peer:
                    break
                continue
            out.append(message)
        return out

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> TcpPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(transport: str, server: tuple[str, int]) -> UdpPeer | TcpPeer:
    return TcpPeer(server) if transport.upper() == "TCP" else UdpPeer(server)


# ---------------------------------------------------------------------------------------------
# Building requests


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


@dataclass
class Dialogish:
    """The identifiers a client keeps between requests of one Call-ID."""

    call_id: str = field(default_factory=lambda: secrets.token_hex(10) + "@test")
    from_tag: str = field(default_factory=new_tag)
    cseq: int = 0


def build_request(
    method: str,
    request_uri: str,
    peer: UdpPeer | TcpPeer,
    *,
    from_uri: str,
    to_uri: str,
    state: Dialogish | None = None,
    headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
    branch: str | None = None,
    cseq: int | None = None,
    to_tag: str | None = None,
    contact: str | None = None,
) -> bytes:
    state = state or Dialogish()
    if cseq is None:
        state.cseq += 1
        cseq = state.cseq
    host, port = peer.local
    to_value = f"<{to_uri}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {request_uri} SIP/2.0",
        f"Via: SIP/2.0/{peer.transport} {host}:{port};branch={branch or new_branch()};rport",
        "Max-Forwards: 70",
        f"From: <{from_uri}>;tag={state.from_tag}",
        f"To: {to_value}",
        f"Call-ID: {state.call_id}",
        f"CSeq: {cseq} {method}",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def options(peer: UdpPeer | TcpPeer, server: tuple[str, int]) -> bytes:
    host, port = server
    return build_request("OPTIONS", f"sip:{host}:{port}", peer,
                         from_uri="sip:probe@127.0.0.1", to_uri=f"sip:{host}:{port}")


def final_response(peer: UdpPeer | TcpPeer, timeout: float, call_id: str | None = None,
                   cseq_method: str | None = None) -> SipMessage | None:
    """Wait for the first final (>=200) response, skipping provisional ones and strays."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        message = peer.recv(remaining)
        if message is None:
            if isinstance(peer, TcpPeer) and peer.closed_by_peer:
                return None
            continue
        if not message.is_response or message.status < 200:
            continue
        if call_id is not None and message.call_id != call_id:
            continue
        if cseq_method is not None and message.cseq[1] != cseq_method:
            continue
        return message
    return None


# ---------------------------------------------------------------------------------------------
# Digest (client side)


def digest_authorize(challenge: str, method: str, uri: str, username: str, password: str,
                     cnonce: str | None = None, nc: int = 1) -> str:
    """An Authorization value for ``challenge``: the project's client if it exists, else ours."""
    cnonce = cnonce or secrets.token_hex(8)
    try:
        from pbx.sip.digest import authorize
    except ImportError:
        return _own_authorize(challenge, method, uri, username, password, cnonce, nc)
    return authorize(challenge, method, uri, username, password, cnonce, nc)


def pick_challenge(challenges: list[str], algorithm: str | None = None) -> str:
    """The challenge for ``algorithm`` (e.g. 'MD5', 'SHA-256'), or the first one."""
    if not challenges:
        raise AssertionError("no digest challenge in the response")
    if algorithm is None:
        return challenges[0]
    for challenge in challenges:
        found = re.search(r"algorithm\s*=\s*\"?([\w-]+)", challenge, re.I)
        if (found.group(1) if found else "MD5").upper() == algorithm.upper():
            return challenge
    raise AssertionError(f"no {algorithm} challenge among {challenges}")


def _own_authorize(challenge: str, method: str, uri: str, username: str, password: str,
                   cnonce: str, nc: int) -> str:
    params = {key.lower(): quoted or token for key, quoted, token in re.findall(
        r'(\w[\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))', challenge)}
    algorithm = params.get("algorithm", "MD5").upper()
    hasher = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[algorithm]

    def h(text: str) -> str:
        return hasher(text.encode()).hexdigest()

    realm, nonce = params["realm"], params["nonce"]
    ha1 = h(f"{username}:{realm}:{password}")
    ha2 = h(f"{method}:{uri}")
    nc_text = f"{nc:08x}"
    if "qop" in params:
        response = h(f"{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}")
        extra = f', cnonce="{cnonce}", qop=auth, nc={nc_text}'
    else:
        response = h(f"{ha1}:{nonce}:{ha2}")
        extra = ""
    value = (f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
             f'response="{response}", algorithm={algorithm}{extra}')
    if "opaque" in params:
        value += f', opaque="{params["opaque"]}"'
    return value


@dataclass
class RegisterResult:
    challenge: SipMessage | None
    final: SipMessage | None


def register(
    peer: UdpPeer | TcpPeer,
    user: str,
    password: str,
    *,
    domain: str | None = None,
    expires: int | None = 3600,
    contact: str | None = None,
    algorithm: str | None = None,
    state: Dialogish | None = None,
    timeout: float = 5.0,
    auth_user: str | None = None,
    query: bool = False,
) -> RegisterResult:
    """REGISTER, answer the 401 with digest, return (challenge, final response).

    ``query=True`` sends no Contact: the registrar just lists the bindings.
    """
    host, port = peer.server
    domain = domain or f"{host}:{port}"
    state = state or Dialogish()
    local_host, local_port = peer.local
    if contact is None and not query:
        transport = ";transport=tcp" if peer.transport == "TCP" else ""
        contact = f"<sip:{user}@{local_host}:{local_port}{transport}>"
    if query:
        contact = None
    aor = f"sip:{user}@{domain}"
    request_uri = f"sip:{domain}"
    extra: list[tuple[str, str]] = []
    if expires is not None:
        extra.append(("Expires", str(expires)))

    def send(auth: list[tuple[str, str]]) -> SipMessage | None:
        request = build_request("REGISTER", request_uri, peer, from_uri=aor, to_uri=aor,
                                state=state, headers=auth + extra, contact=contact)
        peer.send(request)
        return final_response(peer, timeout, call_id=state.call_id, cseq_method="REGISTER")

    first = send([])
    if first is None or first.status != 401:
        return RegisterResult(challenge=None, final=first)
    challenge = pick_challenge(first.get_all("www-authenticate"), algorithm)
    authorization = digest_authorize(challenge, "REGISTER", request_uri, auth_user or user,
                                     password)
    return RegisterResult(challenge=first, final=send([("Authorization", authorization)]))


def contact_expiries(response: SipMessage) -> dict[str, int | None]:
    """Contact URI -> expires parameter, from a REGISTER response."""
    out: dict[str, int | None] = {}
    for value in response.values("contact"):
        uri_match = re.search(r"<([^>]*)>", value)
        uri = uri_match.group(1) if uri_match else value.split(";", 1)[0].strip()
        expires = header_param(value, "expires")
        out[uri] = int(expires) if expires and expires.isdigit() else None
    return out
