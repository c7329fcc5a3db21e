"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966).

Parts are kept as they appeared on the wire (escapes included) so that a URI
serialises back byte for byte; `user_unescaped` and `unescape` give the
decoded form for comparisons such as registrar lookups.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from pbx.sip.errors import SipParseError

_HOST_FORBIDDEN = re.compile(r"[ \t\r\n<>\"@,;?]")
_URI_FORBIDDEN = re.compile(r"[ \t\r\n<>\"]")


def unescape(text: str) -> str:
    return unquote(text, errors="surrogateescape") if "%" in text else text


@dataclass(slots=True)
class Uri:
    """A parsed URI. For schemes other than sip/sips/tel only `scheme` and `opaque` are set."""

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    opaque: str | None = None

    @property
    def is_sip(self) -> bool:
        return self.scheme in ("sip", "sips")

    @property
    def is_sips(self) -> bool:
        """A SIPS URI: every hop to it over TLS (RFC 3261 §26.2)."""
        return self.scheme == "sips"

    @property
    def user_unescaped(self) -> str | None:
        return None if self.user is None else unescape(self.user)

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def host_port(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def with_params(self, **params: str | None) -> Uri:
        merged = dict(self.params)
        merged.update(params)
        return Uri(self.scheme, self.user, self.password, self.host, self.port,
                   merged, dict(self.headers), self.opaque)

    def address_of_record(self) -> str:
        """The canonical `sip:user@host` key used by the registrar (RFC 3261 §10.3 step 5)."""
        user = self.user_unescaped
        host = self.host.lower()
        return f"{self.scheme}:{user}@{host}" if user else f"{self.scheme}:{host}"

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        if self.scheme == "tel":
            out = f"tel:{self.user or ''}"
        else:
            out = f"{self.scheme}:"
            if self.user is not None:
                out += self.user
                if self.password is not None:
                    out += ":" + self.password
                out += "@"
            out += self.host
            if self.port is not None:
                out += f":{self.port}"
        for name, value in self.params.items():
            out += f";{name}" if value is None else f";{name}={value}"
        if self.headers:
            out += "?" + "&".join(f"{k}={v}" for k, v in self.headers.items())
        return out


def _parse_params(text: str, what: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for item in text.split(";"):
        if not item:
            raise SipParseError(f"empty parameter in {what}")
        name, sep, value = item.partition("=")
        if not name:
            raise SipParseError(f"parameter without a name in {what}")
        params[name.lower()] = value if sep else None
    return params


def _parse_host_port(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError("unterminated IPv6 reference")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise SipParseError("garbage after IPv6 reference")
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text_raw = text.partition(":")
        port_text = port_text_raw if sep else None
    if not host or _HOST_FORBIDDEN.search(host):
        raise SipParseError("invalid host in URI")
    port: int | None = None
    if port_text is not None:
        if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5 or int(port_text) > 65535:
            raise SipParseError("invalid port in URI")
        port = int(port_text)
    return host, port


def parse_uri(text: str) -> Uri:
    """Parse an absolute URI; raises SipParseError on anything RFC 3261 rejects."""
    scheme, sep, rest = text.partition(":")
    if not sep or not scheme or not scheme[0].isalpha():
        raise SipParseError("URI without a scheme")
    if _URI_FORBIDDEN.search(text):
        raise SipParseError("whitespace or delimiter inside URI")
    scheme = scheme.lower()
    if scheme == "tel":
        number, _, param_text = rest.partition(";")
        if not number:
            raise SipParseError("empty tel URI")
        params = _parse_params(param_text, "tel URI") if param_text else {}
        return Uri("tel", user=number, params=params)
    if scheme not in ("sip", "sips"):
        return Uri(scheme, opaque=rest)

    # '@' never appears unescaped after the host, while the user part may hold
    # ';' and '?', so split off the userinfo first.
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        if not userinfo:
            raise SipParseError("empty user part in URI")
        user, colon, pw = userinfo.partition(":")
        password = pw if colon else None
    rest, qmark, header_text = rest.partition("?")
    headers: dict[str, str] = {}
    if qmark:
        for item in header_text.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq:
                raise SipParseError("malformed URI header")
            headers[name] = value
    hostport, semi, param_text = rest.partition(";")
    host, port = _parse_host_port(hostport)
    params = _parse_params(param_text, "URI") if semi else {}
    return Uri(scheme, user, password, host, port, params, headers)
