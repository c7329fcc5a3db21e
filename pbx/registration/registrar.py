"""Registrar and location service (RFC 3261 §10.3).

Phones REGISTER with digest credentials; each account may hold several
contacts, each with its own expiry. A binding also remembers the address the
REGISTER came from, and calls to that phone are sent there: a phone behind a
NAT writes an unreachable address in its Contact, but its REGISTER arrives
from the one that works (what Kamailio's nathelper calls fix_nated_register).

A REGISTER that passed through proxies carries their Path (RFC 3327): the binding keeps
it, and requests to that phone carry it as their Route set, so they go back through the
same proxies (a front door that gives every phone one server address).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pbx.configuration.server import Account, SipSettings
from pbx.sip.address import NameAddress, parse_name_address
from pbx.sip.digest import DigestAuthenticator
from pbx.sip.errors import SipParseError
from pbx.sip.message import Request, Response, is_decimal, make_response

log = logging.getLogger("pbx.registration.registrar")

Address = tuple[str, int]
MAX_EXPIRES_VALUE = 2**32 - 1


@dataclass
class Binding:
    user: str
    contact: NameAddress
    expires_at: float
    call_id: str
    cseq: int
    source: Address
    transport: str
    user_agent: str | None
    answering: bool = True  # False once the phone stopped answering our OPTIONS (qualify)
    path: tuple[str, ...] = ()  # the REGISTER's Path values: the Route set toward the phone

    @property
    def contact_uri(self) -> str:
        return str(self.contact.uri)

    def remaining(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))


ReachabilityListener = Callable[[str, bool], None]
# Called with a user's bindings (empty: none left) whenever a REGISTER changed them.
BindingsListener = Callable[[str, list["Binding"]], None]
# (source, user named in the credentials, the request, why it failed)
AuthFailureListener = Callable[[Address, str | None, Request, str], None]


class Registrar:
    def __init__(self, accounts: Mapping[str, Account], authenticator: DigestAuthenticator,
                 settings: SipSettings) -> None:
        self.accounts = accounts
        self.authenticator = authenticator
        self.settings = settings
        self._bindings: dict[str, dict[str, Binding]] = {}
        self.listeners: list[ReachabilityListener] = []
        self.bindings_listeners: list[BindingsListener] = []
        self.auth_failure_listeners: list[AuthFailureListener] = []

    # -- queries ---------------------------------------------------------------
    def bindings(self, user: str, now: float, *, answering_only: bool = False) -> list[Binding]:
        found = self._bindings.get(user)
        if not found:
            return []
        return [b for b in found.values()
                if b.expires_at > now and (b.answering or not answering_only)]

    def all_bindings(self, now: float) -> list[Binding]:
        return [b for found in self._bindings.values() for b in found.values() if b.expires_at > now]

    def set_answering(self, binding: Binding, answering: bool, now: float) -> None:
        """Record the outcome of a qualify OPTIONS; a phone none of whose contacts
        answers is unreachable, though its registration has not expired."""
        if binding.answering == answering:
            return
        was_reachable = bool(self.bindings(binding.user, now, answering_only=True))
        binding.answering = answering
        log.info("%s at %s:%d %s", binding.user, binding.source[0], binding.source[1],
                 "answers again" if answering else "stopped answering")
        self._notify(binding.user, was_reachable, now)

    def registered_users(self) -> list[str]:
        return list(self._bindings)

    def __len__(self) -> int:
        return sum(len(b) for b in self._bindings.values())

    # -- REGISTER --------------------------------------------------------------
    def password_of(self, user: str) -> str | None:
        account = self.accounts.get(user)
        return account.password if account else None

    def challenge(self, request: Request, now: float, *, stale: bool = False) -> Response:
        response = make_response(request, 401)
        for value in self.authenticator.challenge(now, stale):
            response.add_header("WWW-Authenticate", value)
        return response

    def authenticate(self, request: Request, header: str, now: float,
                     source: Address) -> tuple[str | None, Response | None]:
        """(user, None) when the request carries valid credentials; else (None, the answer to send).
        A wrong response is reported to the auth-failure listeners (per-source throttling)."""
        credentials = request.headers.get(header)
        if credentials is None or not credentials.lstrip().lower().startswith("digest"):
            return None, self._challenge_for(request, header, now)
        result = self.authenticator.verify(credentials, request.method, self.password_of, now)
        if result.ok:
            return result.username, None
        if result.stale or result.reason == "nonce not issued by us":
            # Our nonce expired or predates a restart: the phone retries without asking anyone.
            return None, self._challenge_for(request, header, now, stale=result.stale)
        for listener in self.auth_failure_listeners:
            listener(source, result.username, request, result.reason)
        return None, make_response(request, 403)

    def _challenge_for(self, request: Request, header: str, now: float, *, stale: bool = False) -> Response:
        if header == "Authorization":
            return self.challenge(request, now, stale=stale)
        response = make_response(request, 407)
        for value in self.authenticator.challenge(now, stale):
            response.add_header("Proxy-Authenticate", value)
        return response

    def handle_register(self, request: Request, source: Address, transport: str, now: float) -> Response:
        to_uri = request.to.uri
        if not to_uri.is_sip:
            return make_response(request, 400, "Unsupported URI scheme in To")
        for contact in request.contacts:
            if not contact.is_wildcard and not contact.uri.is_sip:
                return make_response(request, 400, "Unsupported URI scheme in Contact")
        expires_header = request.int_header("expires", MAX_EXPIRES_VALUE)
        try:
            path = tuple(str(parse_name_address(value)) for value in request.headers.get_all("path"))
        except SipParseError:
            return make_response(request, 400, "Invalid Path")

        user, refusal = self.authenticate(request, "Authorization", now, source)
        if refusal is not None:
            return refusal
        aor_user = to_uri.user_unescaped
        if aor_user != user:
            return make_response(request, 403, "Credentials do not match the registered user")
        assert user is not None
        return self._update_bindings(request, user, expires_header, source, transport, now, path)

    def _update_bindings(self, request: Request, user: str, expires_header: int | None,
                         source: Address, transport: str, now: float,
                         path: tuple[str, ...]) -> Response:
        contacts = request.contacts
        call_id = request.call_id
        cseq = request.cseq[0]
        current = self._bindings.setdefault(user, {})
        was_reachable = bool(self.bindings(user, now, answering_only=True))

        if any(c.is_wildcard for c in contacts):
            if len(contacts) != 1 or expires_header != 0:
                return make_response(request, 400, "Wildcard Contact needs Expires: 0 and no other Contact")
            current.clear()
        else:
            changes: list[tuple[NameAddress, int]] = []
            for contact in contacts:
                expires = self._requested_expiry(contact, expires_header)
                if 0 < expires < self.settings.min_expires:
                    response = make_response(request, 423)
                    response.add_header("Min-Expires", str(self.settings.min_expires))
                    return response
                changes.append((contact, min(expires, self.settings.max_expires)))
            for contact, expires in changes:
                key = _contact_key(contact)
                existing = current.get(key)
                if existing is not None and existing.call_id == call_id and cseq <= existing.cseq:
                    return make_response(request, 500, "Out of order REGISTER")
                if expires == 0:
                    current.pop(key, None)
                    continue
                current[key] = Binding(user, contact, now + expires, call_id, cseq, source,
                                       transport, request.headers.get("user-agent"), path=path)

        response = make_response(request, 200)
        if path and "path" in (option.lower() for option in request.headers.get_all("supported")):
            # RFC 3327 §5.3: the UA that supports Path learns the stored vector.
            for value in path:
                response.add_header("Path", value)
        for binding in self.bindings(user, now):
            contact = NameAddress(binding.contact.uri, None,
                                  {**_without_expires(binding.contact.params),
                                   "expires": str(binding.remaining(now))})
            response.add_header("Contact", str(contact))
        self._bindings_changed(user, current, was_reachable, now)
        return response

    def _bindings_changed(self, user: str, current: dict[str, Binding], was_reachable: bool,
                          now: float) -> None:
        for listener in self.bindings_listeners:
            listener(user, list(current.values()))
        if not current:
            del self._bindings[user]
        self._notify(user, was_reachable, now)

    def connection_closed(self, transport: str, source: Address, now: float) -> int:
        """Drop the bindings reached only through a connection that closed: a browser's
        WebSocket (RFC 7118 §5), which cannot be opened again from our side. Returns how
        many went."""
        removed = 0
        for user in list(self._bindings):
            current = self._bindings[user]
            gone = [key for key, b in current.items() if b.transport == transport and b.source == source]
            if not gone:
                continue
            was_reachable = bool(self.bindings(user, now, answering_only=True))
            for key in gone:
                del current[key]
            removed += len(gone)
            self._bindings_changed(user, current, was_reachable, now)
        return removed

    def restore(self, binding: Binding, now: float) -> bool:
        """Take back a binding kept from before a restart; False (ignored) when it has
        expired or its account no longer exists."""
        if binding.expires_at <= now or binding.user not in self.accounts:
            return False
        was_reachable = bool(self.bindings(binding.user, now, answering_only=True))
        self._bindings.setdefault(binding.user, {})[_contact_key(binding.contact)] = binding
        self._notify(binding.user, was_reachable, now)
        return True

    def _requested_expiry(self, contact: NameAddress, expires_header: int | None) -> int:
        value = contact.params.get("expires")
        if value is not None:
            if not is_decimal(value) or int(value) > MAX_EXPIRES_VALUE:
                raise SipParseError("Invalid Contact expires parameter")
            return int(value)
        if expires_header is not None:
            return expires_header
        return self.settings.default_expires

    # -- expiry ----------------------------------------------------------------
    def expire(self, now: float) -> int:
        """Drop expired bindings; returns how many went."""
        removed = 0
        for user in list(self._bindings):
            current = self._bindings[user]
            was_reachable = any(b.answering for b in current.values())
            for key, binding in list(current.items()):
                if binding.expires_at <= now:
                    del current[key]
                    removed += 1
            if not current:
                del self._bindings[user]
                if was_reachable:
                    self._notify(user, True, now)
        return removed

    def _notify(self, user: str, was_reachable: bool, now: float) -> None:
        reachable = bool(self.bindings(user, now, answering_only=True))
        if reachable != was_reachable:
            log.info("%s is now %s", user, "registered" if reachable else "unregistered")
            for listener in self.listeners:
                listener(user, reachable)


def _contact_key(contact: NameAddress) -> str:
    # RFC 3261 §10.3 compares contacts by URI; parameters of the header don't count.
    return str(contact.uri)


def _without_expires(params: dict[str, str | None]) -> dict[str, str | None]:
    return {k: v for k, v in params.items() if k != "expires"}
