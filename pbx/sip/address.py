"""Structured header values: name-addr (From, To, Contact, Route) and Via.

Quoted strings, escaped quotes, angle brackets and parameters are handled as
RFC 3261 §25.1 writes them; anything outside the grammar raises SipParseError
so the server can answer 400 with a reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pbx.sip.errors import SipParseError
from pbx.sip.uri import Uri, parse_uri

_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_BAD_HOST = re.compile(r"[ \t<>\"]")
_LWS = " \t"


_token_match = _TOKEN.fullmatch  # called directly on the paths every message takes


def is_token(text: str) -> bool:
    return _token_match(text) is not None


def split_outside_quotes(text: str, separator: str) -> list[str]:
    """Split on `separator` except inside quoted strings and <...>."""
    if '"' not in text and "<" not in text:
        return text.split(separator)
    parts: list[str] = []
    start = 0
    in_quotes = False
    depth = 0
    i = 0
    length = len(text)
    while i < length:
        c = text[i]
        if in_quotes:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quotes = False
        elif c == '"':
            in_quotes = True
        elif c == "<":
            depth += 1
        elif c == ">":
            depth = max(0, depth - 1)
        elif c == separator and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if in_quotes:
        raise SipParseError("unterminated quoted string")
    parts.append(text[start:])
    return parts


def parse_header_params(text: str, what: str) -> dict[str, str | None]:
    """Parse `;name=value;flag` (text starts after the first ';')."""
    params: dict[str, str | None] = {}
    for item in split_outside_quotes(text, ";"):
        item = item.strip(_LWS)
        if not item:
            raise SipParseError(f"empty parameter in {what}")
        name, eq, value = item.partition("=")
        name = name.strip(_LWS)
        if _token_match(name) is None:
            raise SipParseError(f"invalid parameter name in {what}")
        if eq:
            value = value.strip(_LWS)
            if not value:
                raise SipParseError(f"empty parameter value in {what}")
            if value[0] == '"':
                if len(value) < 2 or value[-1] != '"':
                    raise SipParseError(f"unterminated quoted parameter in {what}")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _end_of_quoted(text: str, start: int) -> int:
    """Index of the closing quote of the quoted string opening at `start`."""
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i
        i += 1
    raise SipParseError("unterminated quoted string in display name")


@dataclass(slots=True)
class NameAddress:
    """`"Display" <uri>;params` as in From, To, Contact, Route, Record-Route."""

    uri: Uri
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    is_wildcard: bool = False

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddress:
        params = dict(self.params)
        params["tag"] = tag
        return NameAddress(self.uri, self.display_name, params)

    def __str__(self) -> str:
        if self.is_wildcard:
            return "*"
        display = f"{self.display_name} " if self.display_name else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


def parse_name_address(text: str, *, allow_wildcard: bool = False) -> NameAddress:
    text = text.strip(_LWS)
    if not text:
        raise SipParseError("empty address")
    if text == "*" and allow_wildcard:
        return NameAddress(Uri("sip"), is_wildcard=True)
    display: str | None = None
    if text[0] == '"':
        end = _end_of_quoted(text, 0)
        display = text[: end + 1]
        rest = text[end + 1 :].lstrip(_LWS)
        if not rest.startswith("<"):
            raise SipParseError("quoted display name not followed by <uri>")
    else:
        lt = text.find("<")
        if lt >= 0:
            display_text = text[:lt].strip(_LWS)
            if display_text:
                if not all(is_token(word) for word in display_text.split()):
                    raise SipParseError("display name with characters that need quoting")
                display = display_text
            rest = text[lt:]
        else:
            rest = ""
    if rest:
        gt = rest.find(">")
        if gt < 0:
            raise SipParseError("unterminated <uri>")
        uri_text = rest[1:gt]
        if uri_text != uri_text.strip() or " " in uri_text or "\t" in uri_text:
            raise SipParseError("whitespace inside <uri>")
        after = rest[gt + 1 :].strip(_LWS)
    else:
        # addr-spec without brackets: parameters belong to the header, and the
        # URI may not carry its own parameters, headers or commas (§20).
        uri_text, semi, after_params = text.partition(";")
        uri_text = uri_text.rstrip(_LWS)
        if "?" in uri_text or "," in uri_text:
            raise SipParseError("URI with headers must be enclosed in <>")
        after = ";" + after_params if semi else ""
    uri = parse_uri(uri_text)
    params: dict[str, str | None] = {}
    if after:
        if after[0] != ";":
            raise SipParseError("garbage after address")
        params = parse_header_params(after[1:], "address")
    return NameAddress(uri, display, params)


@dataclass(slots=True)
class Via:
    """One Via header field value (RFC 3261 §20.42), RFC 3581 rport included."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by}{format_params(self.params)}"


def parse_via(text: str) -> Via:
    text = text.strip(_LWS)
    parts = text.split("/", 2)
    if len(parts) != 3:
        raise SipParseError("malformed Via protocol")
    name, version, rest = parts[0].strip(_LWS), parts[1].strip(_LWS), parts[2].strip(_LWS)
    if name.upper() != "SIP" or not version:
        raise SipParseError("malformed Via protocol")
    transport_end = 0
    while transport_end < len(rest) and rest[transport_end] not in _LWS:
        transport_end += 1
    transport = rest[:transport_end]
    if _token_match(transport) is None:
        raise SipParseError("malformed Via transport")
    sent_by_and_params = rest[transport_end:].strip(_LWS)
    sent_by, semi, param_text = sent_by_and_params.partition(";")
    sent_by = sent_by.strip(_LWS)
    if not sent_by:
        raise SipParseError("Via without sent-by")
    if sent_by.startswith("["):
        end = sent_by.find("]")
        if end < 0 or (end + 1 < len(sent_by) and sent_by[end + 1] != ":"):
            raise SipParseError("malformed IPv6 Via host")
        host, port_text = sent_by[: end + 1], sent_by[end + 2 :]
    else:
        host, _, port_text = sent_by.partition(":")
    host = host.strip(_LWS)
    port_text = port_text.strip(_LWS)
    if not host or _BAD_HOST.search(host):
        raise SipParseError("invalid Via host")
    port: int | None = None
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
            raise SipParseError("invalid Via port")
        port = int(port_text)
    params = parse_header_params(param_text, "Via") if semi else {}
    return Via(transport.upper(), host, port, params, f"{name.upper()}/{version}")
