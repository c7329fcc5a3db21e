"""Per-source protection at the SIP edge, in the spirit of Kamailio's pike and fail2ban.

Every message is weighed against its source address before it is parsed:

* a token bucket per source limits the message rate, and a tighter one the INVITE
  rate; what exceeds them is dropped without an answer (answering a flood feeds it);
* a source that keeps flooding (``flood_block_after`` drops within ten seconds) is
  blocked: everything it sends is dropped until the block ends;
* failed digest responses are counted per source; ``auth_failures`` of them within
  ``auth_window`` seconds block it, and a source blocked so gets 403 for every request,
  even one carrying the right password, until the block ends.

Trusted networks (loopback by default) skip the rate limits, never the digest
throttling: nothing legitimate fails a password hundreds of times.

Pure and synchronous: the time is always an argument. Security events are logged on
``pbx.security`` in one line format that fail2ban can match
(``deploy/fail2ban/filter.d/centralita.conf``)::

    security event=auth-failed source=203.0.113.7:5060 user="1001" call_id="a84b4c76e66710" reason="wrong password"
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from pbx.configuration.protection import ProtectionSettings

log = logging.getLogger("pbx.security")

Address = tuple[str, int]
FLOOD_WINDOW = 10.0  # seconds over which dropped messages are counted towards a block


class Verdict(Enum):
    ADMIT = "admit"
    RATE_LIMITED = "rate"  # over the message rate: dropped
    INVITE_LIMITED = "invite_rate"  # over the INVITE rate: dropped
    BLOCKED = "blocked"  # blocked for flooding: dropped
    FORBIDDEN = "forbidden"  # blocked for failed authentication: requests get 403


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second, at most ``capacity`` saved up; one token per message."""

    rate: float
    capacity: float
    tokens: float
    stamp: float

    @classmethod
    def full(cls, rate: float, capacity: float, now: float) -> TokenBucket:
        return cls(rate, capacity, capacity, now)

    def take(self, now: float) -> bool:
        tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False

    def is_full(self, now: float) -> bool:
        return self.tokens + (now - self.stamp) * self.rate >= self.capacity


@dataclass(slots=True)
class _Source:
    trusted: bool
    requests: TokenBucket
    invites: TokenBucket
    last_seen: float
    dropped: int = 0
    dropped_since: float = 0.0
    failures: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0
    block_reason: str | None = None


def format_source(source: Address) -> str:
    host, port = source
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _quoted(text: str | None) -> str:
    # JSON string escaping: a user name or Call-ID chosen by an attacker cannot forge
    # another field or line of the log.
    return json.dumps(text if text is not None else "", ensure_ascii=True)


def security_event(event: str, source: Address, **fields: str | int | None) -> str:
    """The one line format of security events (what the fail2ban filter matches)."""
    parts = [f"security event={event} source={format_source(source)}"]
    for name, value in fields.items():
        parts.append(f"{name}={value}" if isinstance(value, int) else f"{name}={_quoted(value)}")
    return " ".join(parts)


BlockListener = Callable[[Address, str], None]


class SourceGuard:
    """Rate limits and blocks by source address; see the module docstring."""

    def __init__(self, settings: ProtectionSettings) -> None:
        self.settings = settings
        self._trusted = [ipaddress.ip_network(n, strict=False) for n in settings.trusted]
        self._sources: dict[str, _Source] = {}
        self.block_listeners: list[BlockListener] = []

    def __len__(self) -> int:
        return len(self._sources)

    def is_trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._trusted)

    def _source(self, host: str, now: float) -> _Source:
        state = self._sources.get(host)
        if state is None:
            if len(self._sources) >= self.settings.max_sources:
                self._make_room(now)
            s = self.settings
            state = _Source(self.is_trusted(host),
                            TokenBucket.full(s.requests_per_second, s.request_burst, now),
                            TokenBucket.full(s.invites_per_second, s.invite_burst, now), now)
            self._sources[host] = state
        return state

    # -- messages ------------------------------------------------------------------
    def admit(self, source: Address, is_invite: bool, now: float) -> Verdict:
        """What to do with one message from ``source`` (called before parsing it)."""
        if not self.settings.enabled:
            return Verdict.ADMIT
        state = self._source(source[0], now)
        state.last_seen = now
        if state.blocked_until:
            if now >= state.blocked_until:
                self._unblock(source, state)
            elif state.block_reason == "flood":
                return Verdict.BLOCKED
        if state.trusted:
            verdict = Verdict.ADMIT
        elif not state.requests.take(now):
            verdict = Verdict.RATE_LIMITED
        elif is_invite and not state.invites.take(now):
            verdict = Verdict.INVITE_LIMITED
        else:
            verdict = Verdict.ADMIT
        if verdict is not Verdict.ADMIT:
            self._count_drop(source, state, verdict, now)
            return verdict
        if state.blocked_until:
            return Verdict.FORBIDDEN
        return Verdict.ADMIT

    def _count_drop(self, source: Address, state: _Source, verdict: Verdict, now: float) -> None:
        if now - state.dropped_since > FLOOD_WINDOW:
            state.dropped_since = now
            state.dropped = 0
        state.dropped += 1
        if state.dropped == 1:
            # Once per window, not once per message: a flood must not flood the log.
            log.warning(security_event("flood", source, limit=verdict.value))
        if state.dropped >= self.settings.flood_block_after:
            self._block(source, state, "flood", now)

    # -- authentication ------------------------------------------------------------
    def auth_failed(self, source: Address, user: str | None, call_id: str, reason: str, now: float) -> bool:
        """Record a wrong digest response; True when it got the source blocked."""
        log.warning(security_event("auth-failed", source, user=user, call_id=call_id, reason=reason))
        if not self.settings.enabled:
            return False
        state = self._source(source[0], now)
        failures = state.failures
        failures.append(now)
        while failures and now - failures[0] > self.settings.auth_window:
            failures.popleft()
        if len(failures) >= self.settings.auth_failures and not state.blocked_until:
            failures.clear()
            self._block(source, state, "auth-failures", now)
            return True
        return False

    def is_blocked(self, host: str, now: float) -> bool:
        state = self._sources.get(host)
        return state is not None and state.blocked_until > now

    # -- blocks --------------------------------------------------------------------
    def _block(self, source: Address, state: _Source, reason: str, now: float) -> None:
        if state.blocked_until > now and state.block_reason == "flood":
            return
        state.blocked_until = now + self.settings.block_seconds
        state.block_reason = reason
        state.dropped = 0
        log.warning(security_event("blocked", source, reason=reason,
                                   seconds=int(self.settings.block_seconds)))
        for listener in self.block_listeners:
            listener(source, reason)

    def _unblock(self, source: Address, state: _Source) -> None:
        log.info(security_event("unblocked", source, reason=state.block_reason))
        state.blocked_until = 0.0
        state.block_reason = None

    def blocked_sources(self, now: float) -> int:
        return sum(1 for s in self._sources.values() if s.blocked_until > now)

    # -- memory --------------------------------------------------------------------
    def prune(self, now: float) -> int:
        """Forget sources with nothing to remember: unblocked, buckets refilled, no recent failure."""
        window = self.settings.auth_window
        idle = [host for host, s in self._sources.items()
                if s.blocked_until <= now and now - s.last_seen > FLOOD_WINDOW
                and s.requests.is_full(now) and s.invites.is_full(now)
                and (not s.failures or now - s.failures[-1] > window)]
        for host in idle:
            del self._sources[host]
        return len(idle)

    def _make_room(self, now: float) -> None:
        self.prune(now)
        while len(self._sources) >= self.settings.max_sources:
            # Spoofed sources by the hundred thousand: forget the oldest first.
            del self._sources[next(iter(self._sources))]
