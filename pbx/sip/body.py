"""Message bodies: the session description a request carries (RFC 3261 §7.4, RFC 5621).

A body is application/sdp itself, or a multipart one (mixed, alternative, related) with an
application/sdp part: gateways send SDP next to ISUP or a location object that way. Other
parts are ignored unless marked ``handling=required`` (RFC 5621 §9: then 415).

Sans-I/O and stdlib only.
"""

from __future__ import annotations

__all__ = ["ACCEPTED_BODY_TYPES", "SDP", "BodyError", "session_description"]

SDP = "application/sdp"
_MULTIPART = frozenset(("multipart/mixed", "multipart/alternative", "multipart/related"))
# What an Accept header lists when we refuse a body (415, 406).
ACCEPTED_BODY_TYPES = "application/sdp, multipart/mixed, multipart/alternative"
_MAX_NESTING = 3


class BodyError(ValueError):
    """The body cannot be used; ``status`` is 415 (a type we do not handle) or 400 (malformed)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def session_description(content_type: str | None, body: bytes) -> bytes | None:
    """The SDP in a body with the given Content-Type header value; None without a body
    or without an SDP part in a multipart one. Raises :class:`BodyError`."""
    if not body:
        return None
    return _find_sdp(content_type, body, 0)


def _media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    if content_type is None:
        return "", {}
    kind, *parameters = content_type.split(";")
    values: dict[str, str] = {}
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        values[name.strip().lower()] = value.strip().strip('"')
    return kind.strip().lower(), values


def _find_sdp(content_type: str | None, body: bytes, depth: int) -> bytes | None:
    kind, parameters = _media_type(content_type)
    if kind == SDP:
        return body
    if kind not in _MULTIPART:
        raise BodyError(415, f"Unsupported body type {kind or 'without Content-Type'}"[:80])
    if depth >= _MAX_NESTING:
        raise BodyError(415, "Multipart body nested too deep")
    boundary = parameters.get("boundary")
    if not boundary:
        raise BodyError(400, "Multipart body without a boundary")
    found: bytes | None = None
    for headers, content in _parts(body, boundary.encode("utf-8", "replace")):
        part_type = headers.get("content-type", "text/plain")
        disposition, disposition_parameters = _media_type(headers.get("content-disposition"))
        part_kind = _media_type(part_type)[0]
        if part_kind == SDP or part_kind in _MULTIPART:
            if disposition not in ("", "session"):
                continue  # SDP for something else (an early-session, say)
            try:
                sdp = _find_sdp(part_type, content, depth + 1)
            except BodyError:
                if disposition_parameters.get("handling") == "required":
                    raise
                continue
            if found is None:
                found = sdp
        elif disposition_parameters.get("handling") == "required":
            raise BodyError(415, f"Unsupported required body part {part_kind}"[:80])
    return found


def _parts(body: bytes, boundary: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart body (RFC 2046 §5.1.1) into (lower-cased headers, content) pairs."""
    delimiter = b"--" + boundary
    lines = body.split(b"\n")
    parts: list[list[bytes]] = []
    current: list[bytes] | None = None
    closed = False
    for raw_line in lines:
        line = raw_line.rstrip(b"\r")
        if line.startswith(delimiter):
            rest = line[len(delimiter):].rstrip(b" \t")
            if rest == b"--":
                if current is not None:
                    parts.append(current)
                closed = True
                break
            if rest == b"":
                if current is not None:
                    parts.append(current)
                current = []
                continue
        if current is not None:
            current.append(raw_line)
    if not closed:
        raise BodyError(400, "Multipart body has no closing boundary")
    result: list[tuple[dict[str, str], bytes]] = []
    for part in parts:
        headers: dict[str, str] = {}
        index = 0
        while index < len(part) and part[index].rstrip(b"\r"):
            name, colon, value = part[index].rstrip(b"\r").partition(b":")
            if not colon:
                raise BodyError(400, "Malformed header in a multipart body part")
            headers[name.strip().decode("ascii", "replace").lower()] = value.strip().decode("utf-8", "replace")
            index += 1
        content = b"\n".join(part[index + 1:])
        # The CRLF before the next delimiter belongs to the delimiter (RFC 2046).
        result.append((headers, content.removesuffix(b"\r")))
    return result
