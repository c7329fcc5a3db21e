"""SIP digest authentication: RFC 3261 §22, RFC 7616 hashing, RFC 8760 algorithm choice.

Sans-I/O and stdlib only; the time is always an argument.

Server side, :class:`DigestAuthenticator` issues stateless nonces (issue time, random bytes and
an HMAC under a server secret), so any site sharing the secret can verify them and a forged or
altered nonce is refused without a lookup. The only state is the highest nonce-count seen per
nonce, which is what stops replays; it forgets nonces as they expire.

Client side, :func:`authorize` answers a challenge (tests, and calls towards an upstream that
challenges us); :func:`select_challenge` picks the strongest of several.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import os
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "DigestAuthenticator",
    "DigestResult",
    "authorize",
    "parse_digest_parameters",
    "select_challenge",
]

# RFC 8760 §2.4 order of preference, strongest first.
_HASHES: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "SHA-256": hashlib.sha256,
    "MD5": hashlib.md5,
}
_HEX_DIGEST_LENGTH = {"SHA-256": 64, "MD5": 32}
_HEX_DIGITS = frozenset("0123456789abcdef")

_NONCE_TIME = struct.Struct(">Q")  # issue time in milliseconds
_NONCE_RANDOM_BYTES = 8
_NONCE_MAC_BYTES = 16
_NONCE_BYTES = _NONCE_TIME.size + _NONCE_RANDOM_BYTES + _NONCE_MAC_BYTES
_NONCE_TEXT_LENGTH = len(base64.urlsafe_b64encode(bytes(_NONCE_BYTES)).rstrip(b"="))

# A header longer than this is not a credential from a phone; refuse it before parsing.
_MAX_HEADER_LENGTH = 4096


# ---------------------------------------------------------------------------------------------
# Header parameters


# One auth-param (RFC 9110 §11.2), with the comma that ends it. The quoted-string alternatives
# match one character each, so a missing closing quote cannot make the regex backtrack
# exponentially. Unquoted values also allow "/" and ":", which phones send in nonces and URIs.
_TCHARS = r"!#$%&'*+\-.^_`|~0-9A-Za-z"
_PARAMETER = re.compile(
    rf"[ \t,]*([{_TCHARS}]+)[ \t]*=[ \t]*"
    rf'(?:"((?:[^"\\\r\n]|\\[^\r\n])*)"|([{_TCHARS}/:]+))'
    r"[ \t]*(?:,|\Z)"
)
_END_OF_LIST = re.compile(r"[ \t,]*\Z")
_ESCAPED = re.compile(r"\\(.)")


def parse_digest_parameters(value: str) -> dict[str, str] | None:
    """Parse ``Digest name=value, name="quoted", ...`` into lowercase names and raw values.

    Returns None if the scheme is not Digest, the syntax is broken, or a parameter repeats
    (a repeated ``response`` or ``uri`` is how ambiguity attacks start). Never raises.
    """
    if len(value) > _MAX_HEADER_LENGTH:
        return None
    scheme_and_rest = value.strip().split(None, 1)
    if not scheme_and_rest or scheme_and_rest[0].lower() != "digest":
        return None
    rest = scheme_and_rest[1] if len(scheme_and_rest) == 2 else ""
    parameters: dict[str, str] = {}
    position = 0
    while _END_OF_LIST.match(rest, position) is None:
        match = _PARAMETER.match(rest, position)
        if match is None:
            return None
        name, quoted, token = match.groups()
        name = name.lower()
        if name in parameters:
            return None
        if quoted is None:
            parameters[name] = token
        elif "\\" in quoted:
            parameters[name] = _ESCAPED.sub(r"\1", quoted)
        else:
            parameters[name] = quoted
        position = match.end()
    return parameters


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------------------------------------
# Hashing (RFC 7616 §3.4)


def _hex(algorithm: str, text: str) -> str:
    return _HASHES[algorithm](text.encode("utf-8", "surrogateescape")).hexdigest()


def _response(
    algorithm: str,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    nc: str,
    cnonce: str,
) -> str:
    ha2 = _hex(algorithm, f"{method}:{uri}")
    if qop is None:  # RFC 2069
        return _hex(algorithm, f"{ha1}:{nonce}:{ha2}")
    return _hex(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# ---------------------------------------------------------------------------------------------
# Server side


@dataclass(frozen=True, slots=True)
class DigestResult:
    """The verdict on one Authorization header.

    ``ok`` false with ``stale`` true means the credentials were right but the nonce is no
    longer usable: challenge again with ``stale=True`` and the phone retries silently.
    ``reason`` is for logs only; an unknown user and a wrong password differ only there.
    """

    ok: bool
    stale: bool
    username: str | None
    reason: str


class DigestAuthenticator:
    """Challenges requests and verifies their credentials for one realm."""

    def __init__(
        self,
        realm: str,
        secret: bytes,
        nonce_lifetime: float = 300.0,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        *,
        allow_no_qop: bool = True,
        max_tracked_nonces: int = 100_000,
    ) -> None:
        if not secret:
            raise ValueError("the nonce secret must not be empty")
        if nonce_lifetime <= 0:
            raise ValueError("nonce_lifetime must be positive")
        unknown = [name for name in algorithms if name not in _HASHES]
        if unknown or not algorithms:
            raise ValueError(f"unsupported digest algorithms: {unknown or 'none given'}")
        if '"' in realm or "\\" in realm:
            raise ValueError("the realm must not need escaping")
        self.realm = realm
        self.nonce_lifetime = nonce_lifetime
        self.algorithms = tuple(algorithms)  # the order challenges are listed in: preferred first
        self.allow_no_qop = allow_no_qop
        self._secret = secret
        self._realm_bytes = realm.encode("utf-8", "surrogateescape")
        self._lifetime_ms = int(nonce_lifetime * 1000)
        self._opaque = hmac.new(secret, b"opaque\0" + self._realm_bytes, "sha256").hexdigest()[:32]
        # An unknown user is checked against this, so it costs the same hashing as a real one.
        self._decoy_password = os.urandom(16).hex()
        self._nonce_counts = _NonceCounts(max_tracked_nonces)

    # -- challenges

    def challenge(self, now: float, stale: bool = False) -> list[str]:
        """WWW-Authenticate / Proxy-Authenticate values, one per algorithm, strongest first."""
        nonce = self._make_nonce(now)
        stale_parameter = ", stale=TRUE" if stale else ""
        return [
            f'Digest realm="{self.realm}", nonce="{nonce}", opaque="{self._opaque}", '
            f'algorithm={algorithm}, qop="auth"{stale_parameter}'
            for algorithm in self.algorithms
        ]

    def _make_nonce(self, now: float) -> str:
        issued = _NONCE_TIME.pack(max(0, int(now * 1000)))
        body = issued + os.urandom(_NONCE_RANDOM_BYTES)
        return _encode_nonce(body + self._nonce_mac(body))

    def _nonce_mac(self, body: bytes) -> bytes:
        mac = hmac.new(self._secret, body + self._realm_bytes, "sha256").digest()
        return mac[:_NONCE_MAC_BYTES]

    def _nonce_issue_time_ms(self, nonce: str) -> int | None:
        """The issue time of a nonce we made, or None if it is not one of ours."""
        if len(nonce) != _NONCE_TEXT_LENGTH or not nonce.isascii():
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except ValueError:
            return None
        # Only the spelling we issue: replay tracking is keyed by the nonce text.
        if len(raw) != _NONCE_BYTES or _encode_nonce(raw) != nonce:
            return None
        body, mac = raw[:-_NONCE_MAC_BYTES], raw[-_NONCE_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._nonce_mac(body)):
            return None
        issued: int = _NONCE_TIME.unpack_from(body)[0]
        return issued

    # -- verification

    def verify(
        self,
        authorization: str,
        method: str,
        credentials: Callable[[str], str | None],
        now: float,
        request_uri: str | None = None,
    ) -> DigestResult:
        """Check an Authorization / Proxy-Authorization header value for ``method``.

        ``credentials(username)`` gives the plaintext password, or None for an unknown user.
        If ``request_uri`` is given, the digest ``uri`` must name it (RFC 3261 §22.4 step 5).
        Never raises on malformed input: that is ``ok=False`` with a reason.
        """
        parameters = parse_digest_parameters(authorization)
        if parameters is None:
            return _refused("malformed Digest credentials")
        username = parameters.get("username")
        if username is None:
            return _refused("no username")
        problem = self._check_parameters(parameters, request_uri)
        if problem is not None:
            return _refused(problem, username)

        nonce = parameters["nonce"]
        issued_ms = self._nonce_issue_time_ms(nonce)
        if issued_ms is None:
            return _refused("nonce not issued by us", username)

        algorithm = parameters.get("algorithm", "MD5").upper()
        qop = parameters.get("qop")
        nc_text = parameters.get("nc", "")
        password = credentials(username)
        known_user = password is not None
        secret = self._decoy_password if password is None else password
        ha1 = _hex(algorithm, f"{username}:{self.realm}:{secret}")
        expected = _response(
            algorithm,
            ha1,
            nonce,
            method,
            parameters["uri"],
            qop,
            nc_text,
            parameters.get("cnonce", ""),
        )
        # Compare before branching on known_user, so both paths do the same work.
        matches = hmac.compare_digest(expected.encode(), parameters["response"].lower().encode())
        if not known_user:
            return _refused("unknown user", username)
        if not matches:
            return _refused("wrong password", username)

        now_ms = int(now * 1000)
        expires_ms = issued_ms + self._lifetime_ms
        if now_ms >= expires_ms:
            return DigestResult(False, True, username, "nonce expired")
        # No qop means no nonce-count: such a nonce is good for one request only.
        nc = int(nc_text, 16) if qop is not None else 0
        if not self._nonce_counts.advance(nonce, nc, issued_ms, expires_ms, now_ms):
            return DigestResult(False, True, username, "nonce count not increasing (replay?)")
        return DigestResult(True, False, username, "authenticated")

    def _check_parameters(self, parameters: dict[str, str], request_uri: str | None) -> str | None:
        """What is wrong with the parameters apart from the response itself, or None."""
        for required in ("realm", "nonce", "uri", "response"):
            if required not in parameters:
                return f"no {required}"
        if parameters["realm"] != self.realm:
            return "wrong realm"
        algorithm = parameters.get("algorithm", "MD5").upper()
        if algorithm not in self.algorithms:
            return f"algorithm {algorithm[:20]!r} not offered"
        if parameters.get("userhash", "false").lower() != "false":
            return "userhash not supported"
        response = parameters["response"].lower()
        if len(response) != _HEX_DIGEST_LENGTH[algorithm] or not _HEX_DIGITS.issuperset(response):
            return "response is not a digest of the right length"
        opaque = parameters.get("opaque")
        if opaque is not None and opaque != self._opaque:
            return "wrong opaque"
        qop = parameters.get("qop")
        if qop is None:
            if not self.allow_no_qop:
                return "qop required"
            if algorithm != "MD5":
                return "qop required with SHA-256"
        elif qop.lower() != "auth":
            return f"qop {qop[:20]!r} not offered"
        else:
            nc = parameters.get("nc", "")
            if len(nc) != 8 or not _HEX_DIGITS.issuperset(nc.lower()) or nc == "00000000":
                return "nc must be 8 hex digits, not zero"
            if not parameters.get("cnonce"):
                return "no cnonce"
        if request_uri is not None and not _same_uri(parameters["uri"], request_uri):
            return "uri does not match the Request-URI"
        return None


def _encode_nonce(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _refused(reason: str, username: str | None = None) -> DigestResult:
    return DigestResult(False, False, username, reason)


def _same_uri(digest_uri: str, request_uri: str) -> bool:
    """Exact match, except that the scheme and host compare case-insensitively."""
    return _normalize_uri(digest_uri) == _normalize_uri(request_uri)


def _normalize_uri(uri: str) -> str:
    scheme, colon, rest = uri.partition(":")
    if not colon:
        return uri
    # The host part runs from after the userinfo to the first parameter or header.
    end = len(rest)
    for separator in ";?":
        found = rest.find(separator)
        if 0 <= found < end:
            end = found
    at = rest.rfind("@", 0, end)
    user_part = rest[: at + 1]
    host_part = rest[at + 1 : end]
    return f"{scheme.lower()}:{user_part}{host_part.lower()}{rest[end:]}"


class _NonceCounts:
    """The highest nonce-count accepted per nonce, forgotten when the nonce expires.

    Bounded: past ``capacity`` nonces, the oldest is dropped and every nonce issued no later
    than it counts as used up (the client gets stale=true and a fresh nonce), so dropping
    state never reopens a replay window.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._highest: dict[str, int] = {}
        self._by_expiry: list[tuple[int, int, str]] = []  # (expires, issued, nonce) heap
        self._forgotten_through_ms = -1

    def __len__(self) -> int:
        return len(self._highest)

    def advance(self, nonce: str, nc: int, issued_ms: int, expires_ms: int, now_ms: int) -> bool:
        """Record ``nc`` for ``nonce`` if it is higher than any before; say whether it was."""
        self._expire(now_ms)
        highest = self._highest.get(nonce)
        if highest is None:
            if issued_ms <= self._forgotten_through_ms:
                return False
            if len(self._highest) >= self._capacity:
                self._drop_oldest()
                if issued_ms <= self._forgotten_through_ms:
                    return False
            self._highest[nonce] = nc
            heapq.heappush(self._by_expiry, (expires_ms, issued_ms, nonce))
            return True
        if nc <= highest:
            return False
        self._highest[nonce] = nc
        return True

    def _expire(self, now_ms: int) -> None:
        heap = self._by_expiry
        while heap and heap[0][0] <= now_ms:
            _, _, nonce = heapq.heappop(heap)
            del self._highest[nonce]

    def _drop_oldest(self) -> None:
        # Same lifetime for every nonce, so the earliest expiry is the earliest issued.
        _, issued_ms, nonce = heapq.heappop(self._by_expiry)
        del self._highest[nonce]
        self._forgotten_through_ms = max(self._forgotten_through_ms, issued_ms)


# ---------------------------------------------------------------------------------------------
# Client side


def select_challenge(challenges: Sequence[str]) -> str | None:
    """The challenge with the strongest algorithm we support (RFC 8760 §2.4), or None."""
    best: tuple[int, str] | None = None
    preference = list(_HASHES)
    for challenge in challenges:
        parameters = parse_digest_parameters(challenge)
        if parameters is None or "nonce" not in parameters or "realm" not in parameters:
            continue
        algorithm = parameters.get("algorithm", "MD5").upper()
        if algorithm not in _HASHES:
            continue
        rank = preference.index(algorithm)
        if best is None or rank < best[0]:
            best = (rank, challenge)
    return None if best is None else best[1]


def authorize(
    challenge: str,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str,
    nc: int = 1,
) -> str:
    """An Authorization / Proxy-Authorization value answering ``challenge``.

    Uses qop=auth when the challenge offers it, RFC 2069 style when it offers no qop.
    Raises ValueError for a challenge it cannot answer (unknown algorithm, auth-int only).
    """
    parameters = parse_digest_parameters(challenge)
    if parameters is None:
        raise ValueError("not a Digest challenge")
    realm = parameters.get("realm")
    nonce = parameters.get("nonce")
    if realm is None or nonce is None:
        raise ValueError("Digest challenge lacks realm or nonce")
    algorithm = parameters.get("algorithm", "MD5").upper()
    if algorithm not in _HASHES:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    qop_options = parameters.get("qop")
    qop: str | None = None
    if qop_options is not None:
        offered = {option.strip().lower() for option in qop_options.split(",")}
        if "auth" not in offered:
            raise ValueError(f"no supported qop in {qop_options!r}")
        qop = "auth"
        if not 1 <= nc <= 0xFFFFFFFF:
            raise ValueError("nc must fit 8 hex digits and be positive")
    nc_text = f"{nc:08x}"
    ha1 = _hex(algorithm, f"{username}:{realm}:{password}")
    response = _response(algorithm, ha1, nonce, method, uri, qop, nc_text, cnonce)
    pieces = [
        f"Digest username={_quote(username)}",
        f"realm={_quote(realm)}",
        f"nonce={_quote(nonce)}",
        f"uri={_quote(uri)}",
        f'response="{response}"',
        f"algorithm={algorithm}",
    ]
    if qop is not None:
        pieces += [f"cnonce={_quote(cnonce)}", f"qop={qop}", f"nc={nc_text}"]
    opaque = parameters.get("opaque")
    if opaque is not None:
        pieces.append(f"opaque={_quote(opaque)}")
    return ", ".join(pieces)
