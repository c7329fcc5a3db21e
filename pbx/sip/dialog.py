"""SIP dialogs: RFC 3261 §12, sans-I/O.

A Dialog holds the state of §12.1 (Call-ID, tags, sequence numbers, remote
target, route set) and builds in-dialog requests per §12.2.1.1. The caller
adds the Via (it owns branches and transports) and hands the request to the
transaction layer; ACKs for 2xx go out without a transaction (§13.2.2.4).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from pbx.sip.address import NameAddress, parse_name_address
from pbx.sip.message import Headers, Request, Response
from pbx.sip.uri import Uri

DialogState = Literal["early", "confirmed", "terminated"]

# Requests whose Contact replaces the remote target (§12.2, RFC 3311, RFC 6665).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY"})

MAX_FORWARDS = "70"


class DialogKey(NamedTuple):
    call_id: str
    local_tag: str
    remote_tag: str


def _without_tag(address: NameAddress) -> NameAddress:
    params = {k: v for k, v in address.params.items() if k != "tag"}
    return NameAddress(address.uri, address.display_name, params)


def _record_route(message: Request | Response) -> list[NameAddress]:
    return [parse_name_address(v) for v in message.headers.get_all("record-route")]


def _is_secure(request: Request) -> bool:
    # §12.1.1/§12.1.2: sips Request-URI (TLS all the way is the transport's business).
    return request.uri.scheme == "sips"


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: NameAddress  # From of our requests, without tag
    remote_uri: NameAddress  # To of our requests, without tag
    local_seq: int | None  # None: empty (§12.1.1), the first request picks 1
    remote_seq: int | None  # None: empty until the peer sends a request
    remote_target: Uri
    route_set: list[NameAddress] = field(default_factory=list)
    state: DialogState = "early"
    secure: bool = False
    local_contact: NameAddress | None = None
    we_are_uas: bool = True

    # -- creation (§12.1) ---------------------------------------------------

    @classmethod
    def as_uas(cls, request: Request, local_tag: str, local_contact: NameAddress) -> Dialog:
        """From an INVITE we answer (§12.1.1); early until confirm()."""
        contacts = request.contacts
        remote_target = contacts[0].uri if contacts else request.from_.uri
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_.tag or "",
            local_uri=_without_tag(request.to),
            remote_uri=_without_tag(request.from_),
            local_seq=None,
            remote_seq=request.cseq[0],
            remote_target=remote_target,
            route_set=_record_route(request),
            state="early",
            secure=_is_secure(request),
            local_contact=local_contact,
            we_are_uas=True,
        )

    @classmethod
    def as_uac(cls, request: Request, response: Response) -> Dialog:
        """From our INVITE and a 1xx-with-To-tag or 2xx (§12.1.2)."""
        remote_tag = response.to.tag
        if remote_tag is None:
            raise ValueError("a response without a To tag creates no dialog")
        contacts = response.contacts
        request_contacts = request.contacts
        return cls(
            call_id=request.call_id,
            local_tag=request.from_.tag or "",
            remote_tag=remote_tag,
            local_uri=_without_tag(request.from_),
            remote_uri=_without_tag(request.to),
            local_seq=request.cseq[0],
            remote_seq=None,
            remote_target=contacts[0].uri if contacts else request.uri,
            route_set=list(reversed(_record_route(response))),
            state="confirmed" if 200 <= response.status < 300 else "early",
            secure=_is_secure(request),
            local_contact=request_contacts[0] if request_contacts else None,
            we_are_uas=False,
        )

    @property
    def key(self) -> DialogKey:
        return DialogKey(self.call_id, self.local_tag, self.remote_tag)

    def confirm(self, response: Response | None = None) -> None:
        """The 2xx that confirms the dialog. As UAC, the route set and remote
        target are recomputed from it (§13.2.2.4, §12.2.1.2)."""
        if self.state == "terminated":
            return
        if response is not None and not self.we_are_uas:
            if self.state == "early":
                self.route_set = list(reversed(_record_route(response)))
            contacts = response.contacts
            if contacts:
                self.remote_target = contacts[0].uri
        self.state = "confirmed"

    def terminate(self) -> None:
        self.state = "terminated"

    # -- UAC behaviour (§12.2.1) -------------------------------------------

    def create_request(self, method: str, *, body: bytes = b"", content_type: str | None = None,
                       extra_headers: Iterable[tuple[str, str]] = ()) -> Request:
        """An in-dialog request (§12.2.1.1) with the next local CSeq. ACK for
        a 2xx uses create_ack; a CANCEL is built from the INVITE instead."""
        if method in ("ACK", "CANCEL"):
            raise ValueError(f"{method} does not take a new CSeq: use create_ack or build_cancel")
        self.local_seq = 1 if self.local_seq is None else self.local_seq + 1
        return self._build(method, self.local_seq, body, content_type, extra_headers)

    def create_ack(self, invite_cseq: int, *, body: bytes = b"", content_type: str | None = None,
                   extra_headers: Iterable[tuple[str, str]] = ()) -> Request:
        """The ACK for a 2xx to the INVITE numbered `invite_cseq` (§13.2.2.4)."""
        return self._build("ACK", invite_cseq, body, content_type, extra_headers)

    def _build(self, method: str, cseq: int, body: bytes, content_type: str | None,
               extra_headers: Iterable[tuple[str, str]]) -> Request:
        request_uri, routes = self._routing()
        to = self.remote_uri.with_tag(self.remote_tag) if self.remote_tag else self.remote_uri
        headers = Headers()
        headers.add("To", str(to))
        headers.add("From", str(self.local_uri.with_tag(self.local_tag)))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        headers.add("Max-Forwards", MAX_FORWARDS)
        for route in routes:
            headers.add("Route", route)
        if self.local_contact is not None and method in TARGET_REFRESH_METHODS:
            headers.add("Contact", str(self.local_contact))
        for name, value in extra_headers:
            headers.add(name, value)
        if content_type is not None:
            headers.add("Content-Type", content_type)
        return Request(method, request_uri, headers, body)

    def _routing(self) -> tuple[Uri, list[str]]:
        """Request-URI and Route values per §12.2.1.1 (loose or strict routing)."""
        if not self.route_set:
            return self.remote_target, []
        first = self.route_set[0]
        if "lr" in first.uri.params:
            return self.remote_target, [str(route) for route in self.route_set]
        # Strict router: it becomes the Request-URI (minus what a Request-URI
        # may not carry) and the remote target goes last in the Route set.
        strict = first.uri
        request_uri = Uri(strict.scheme, strict.user, strict.password, strict.host, strict.port,
                          {k: v for k, v in strict.params.items() if k != "method"}, {},
                          strict.opaque)
        routes = [str(route) for route in self.route_set[1:]]
        routes.append(f"<{self.remote_target}>")
        return request_uri, routes

    # -- UAS behaviour (§12.2.2) -------------------------------------------

    def receive_request(self, request: Request) -> int | None:
        """Check and record an in-dialog request. Returns the status to answer
        with instead of processing it (500 for an out-of-order CSeq), else None."""
        number = request.cseq[0]
        if request.method not in ("ACK", "CANCEL"):
            if self.remote_seq is not None and number < self.remote_seq:
                return 500
            self.remote_seq = number
        if request.method in TARGET_REFRESH_METHODS:
            contacts = request.contacts
            if contacts and not contacts[0].is_wildcard:
                self.remote_target = contacts[0].uri
        return None


def dialog_key_of(message: Request | Response, *, we_are_uas: bool) -> DialogKey:
    """The key of the dialog `message` belongs to. `we_are_uas` is our role for
    this message's transaction: True for a request we received (its To tag is
    ours, §12.2.2), False for a response to a request we sent."""
    to_tag = message.to.tag or ""
    from_tag = message.from_.tag or ""
    if we_are_uas:
        return DialogKey(message.call_id, to_tag, from_tag)
    return DialogKey(message.call_id, from_tag, to_tag)


class DialogTable:
    """Live dialogs by key; a miss means the TU answers 481 (§12.2.2)."""

    def __init__(self) -> None:
        self._dialogs: dict[DialogKey, Dialog] = {}

    def add(self, dialog: Dialog) -> None:
        self._dialogs[dialog.key] = dialog

    def get(self, key: DialogKey) -> Dialog | None:
        return self._dialogs.get(key)

    def find(self, message: Request | Response, *, we_are_uas: bool) -> Dialog | None:
        return self._dialogs.get(dialog_key_of(message, we_are_uas=we_are_uas))

    def remove(self, key: DialogKey) -> Dialog | None:
        return self._dialogs.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._dialogs

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._dialogs.values()))
