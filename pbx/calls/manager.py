"""Calls: INVITE, ACK, BYE, CANCEL and INFO, as a back-to-back user agent.

(A long file: it is the one place that turns SIP requests and responses into leg events
and media commands, and splitting the handlers of one dialog apart would scatter the
races between them. Leg states live in ``pbx.calls.call_leg``, media behind ``pbx.media.engine``.)

Every call has a caller leg (we are its UAS). A call to an application
extension is answered by the server itself: its media terminates here and an
application (the greeting, later the IVR) drives it. A call to an account is
bridged: one callee leg per registered contact of that account (we are their
UAC), the first to answer wins and the others are cancelled.

Media is relayed by the server on both legs rather than re-INVITEd to flow
directly between the phones: the caller's media already terminates here for
prompts, hold music and announcements, the relay latches onto the source of
NATed phones, and it transcodes PCMU<->PCMA when the two phones disagree.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from events import (
    CallAnswered,
    CallEnded,
    CallLegTransitionRefused,
    CallStarted,
    EventBus,
    StaleCallsRepaired,
)
from pbx.calls.call_leg import IllegalLegTransition, LegEvent, LegLife, LegState
from pbx.configuration.server import Extension, ServerConfig, SipSettings
from pbx.edge.endpoint import ALLOW, SipEndpoint, new_tag
from pbx.edge.transport import Address
from pbx.media.engine import MediaEngine, MediaLeg, MediaPortsExhausted, MediaUnavailable
from pbx.registration.registrar import Binding, Registrar
from pbx.sip.address import NameAddress, parse_name_address
from pbx.sip.body import ACCEPTED_BODY_TYPES, BodyError, session_description
from pbx.sip.dialog import Dialog, DialogKey, dialog_key_of
from pbx.sip.message import Headers, Request, Response, make_response
from pbx.sip.sdp import (
    AudioNegotiation,
    NoAcceptableMedia,
    SdpError,
    SessionDescription,
    accept_answer,
    build_answer,
    build_offer,
    negotiate_audio,
    parse_sdp,
)
from pbx.sip.transaction import TransactionKey
from pbx.sip.uri import Uri

log = logging.getLogger("pbx.calls.manager")

SDP = "application/sdp"
# Seconds a caller refused for lack of capacity (RTP ports, its per-source share) is told
# to wait before trying again (RFC 3261 §20.33).
RETRY_AFTER_SECONDS = 5
TELEPHONE_EVENT_PT = 101
# Failures of every fork collapse into one answer to the caller: a refusal
# (busy, decline) is kept as is, anything else means "not reachable now".
_REFUSALS = (486, 600, 603)
# An in-dialog OPTIONS to a silent leg unanswered after this many T1 (four sends over UDP)
# means the peer is gone, without waiting out the transaction's 64 x T1.
PROBE_ANSWER_T1 = 8


class CallApplication(Protocol):
    """What answers an application extension (the greeting now, the IVR later)."""

    async def run(self, call: ApplicationCall) -> None: ...


ApplicationFactory = Callable[[Extension], CallApplication]
# A blind transfer asked by the phone on `leg` to `target` (a Refer-To user part); returns the
# status to answer the REFER with (202 when it will be carried out).
TransferHandler = Callable[["CallLeg", str], int]
FEATURE_APPLICATION = "feature"
TRANSFEROR_GRACE_SECONDS = 5.0
# What runs once the caller's media is open: answer (application) or dial (bridge).
# Its argument is the caller's offer, None for a late offer (INVITE without SDP).
CallWork = Callable[[SessionDescription | None], Awaitable[None]]
# (account, call key, engaged): an account starts or stops being on a call in person.
PersonalCallHook = Callable[[str, str, bool], None]
# Header of a call one site sets up to another for an agent that site reserved for it.
SITE_RESERVATION_HEADER = "X-Centralita-Reservation"
# A sister site's call (the INVITE, its source) -> the work that rings the reserved agent,
# or None: not a sister site's, or no such reservation (refused 403).
SiteCallHandler = Callable[["SipCall", "CallLeg", Address], "CallWork | None"]
# Something else holding calls by Call-ID (the queue service, for the router): given the
# Call-IDs of every live call, it forgets the others and returns the ones it forgot.
CallHolderCheck = Callable[[frozenset[str]], list[str]]


@dataclass(eq=False)
class CallLeg:
    """One SIP dialog of a call: towards the caller (we are UAS) or a callee (we are UAC)."""

    call: SipCall
    invite: Request
    peer: Address
    transport: str
    invite_key: TransactionKey | None = None
    dialog: Dialog | None = None
    media: MediaLeg | None = None
    negotiation: AudioNegotiation | None = None
    local_sdp: SessionDescription | None = None
    local_tag: str = field(default_factory=new_tag)
    life: LegLife = field(default_factory=LegLife)  # moved only by CallManager._move
    final_status: int | None = None
    dial: Dial | None = None  # for a callee leg: the dial attempt it is a fork of
    probe_due: float = 0.0  # when a silent leg may next be asked whether its dialog lives
    probe_sent_at: float | None = None  # an OPTIONS asking that is still unanswered
    offer: bytes | None = None  # the SDP of the caller's INVITE (from a multipart body too)
    # A late offer (INVITE without SDP): our 200 carried the offer, the ACK brings the answer.
    answer_from_ack: asyncio.Future[None] | None = None

    @property
    def state(self) -> LegState:
        return self.life.state

    @property
    def answered(self) -> bool:
        return self.life.state.answered


@dataclass(eq=False)
class SipCall:
    """A call as the B2BUA carries it: the caller's leg and the legs rung for it."""

    call_id: str
    kind: str  # "application" or "bridge"
    caller: str
    callee: str
    started_at: float
    caller_leg: CallLeg | None = None
    callee_legs: list[CallLeg] = field(default_factory=list)
    connected_leg: CallLeg | None = None
    answered_at: float | None = None
    task: asyncio.Task[None] | None = None
    ended: bool = False
    end_cause: str | None = None  # why it ended, e.g. 'caller_hangup', 'media_timeout'
    bridged_at: float | None = None  # when its media was last relayed to another party
    counted: bool = True  # False for what is left of a transferor's leg: not a call of its own
    # Accounts on this call in person, not as a queue's agent (see CallManager.on_personal_call).
    personal: set[str] = field(default_factory=set)
    # The source address whose share of unauthenticated calls this call takes, if any.
    source_host: str | None = None

    @property
    def key(self) -> str:
        # The caller's Call-ID and From tag: two INVITEs forked upstream share a Call-ID.
        tag = self.caller_leg.invite.from_.tag if self.caller_leg else None
        return f"{self.call_id};{tag}"


@dataclass(eq=False)
class Dial:
    """One attempt to reach an account's phones for a call: a fork per registered contact."""

    call: SipCall
    user: str
    media: MediaLeg
    on_answered: Callable[[CallLeg], None]
    on_failed: Callable[[int], None]
    forks: list[CallLeg] = field(default_factory=list)
    finished: bool = False
    personal: bool = True  # False for a queue offering the call to an agent


class ApplicationCall:
    """The view an application has of a call the server answered."""

    def __init__(self, manager: CallManager, call: SipCall, leg: CallLeg, extension: Extension) -> None:
        self._manager = manager
        self.call = call
        self.leg = leg
        self.extension = extension
        self.digits: asyncio.Queue[str] = asyncio.Queue()
        self.hung_up = asyncio.Event()

    @property
    def call_id(self) -> str:
        return self.call.call_id

    @property
    def caller(self) -> str:
        return self.call.caller

    @property
    def media(self) -> MediaLeg:
        assert self.leg.media is not None
        return self.leg.media

    def hang_up(self) -> None:
        self._manager.hang_up(self.call, cause="application")


def counted_host(request: Request, source: Address, sip: SipSettings) -> str:
    """The address an unauthenticated call counts against for the per-source cap: its
    source, or for a request from a configured front door, the address the front door
    received it from.

    That is the Via just below the front door's own: its received parameter, which the
    front door writes (replacing any the caller sent) whenever the sent-by differs from the
    packet's source, else its sent-by host. Trusted only because the request came from a
    configured front door; without a usable Via the callers behind it share one count.
    """
    if not sip.is_front_door(source):
        return source[0]
    vias = request.vias
    if len(vias) < 2:
        return source[0]
    received = vias[1].params.get("received")
    host = received if received else vias[1].host
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return source[0]


class CallManager:
    def __init__(self, config: ServerConfig, endpoint: SipEndpoint, registrar: Registrar,
                 events: EventBus, media: MediaEngine, applications: ApplicationFactory) -> None:
        self.config = config
        self.endpoint = endpoint
        self.registrar = registrar
        self.events = events
        self.media = media
        self.applications = applications
        self.legs: dict[DialogKey, CallLeg] = {}
        self.pending: dict[TransactionKey, CallLeg] = {}
        self.calls: dict[str, SipCall] = {}
        # Tasks running calls (answering, dialling, the application): a task outlives its
        # call by the time its cleanup takes, so they are counted apart.
        self.tasks: set[asyncio.Task[None]] = set()
        self.unauthenticated_calls: dict[str, int] = {}
        self._capped_sources: set[str] = set()  # refused since their last call ended (logged once)
        self._out_of_ports = False  # calls refused for want of RTP ports since the last call ended
        self._answered: dict[str, ApplicationCall] = {}
        self.transfer_handler: TransferHandler | None = None
        self.feature_codes: frozenset[str] = frozenset()
        # Told whenever an account joins or leaves a call that is not a queue's offer to it
        # (the queue service makes such agents busy for routing).
        self.on_personal_call: PersonalCallHook | None = None
        # Calls from sister sites for agents reserved for them (one site of several).
        self.site_call_handler: SiteCallHandler | None = None
        # Compared with the live calls on each full reconciliation (see reconcile).
        self.call_holders: list[CallHolderCheck] = []
        endpoint.handlers.update({
            "INVITE": self.on_invite, "BYE": self.on_bye, "CANCEL": self.on_cancel,
            "INFO": self.on_info, "REFER": self.on_refer,
        })
        endpoint.ack_handler = self.on_ack
        endpoint.ack_timeout_handler = self.on_ack_timeout

    # -- helpers -------------------------------------------------------------------
    def _now(self) -> float:
        return self.endpoint.now()

    def _move(self, leg: CallLeg, event: LegEvent) -> bool:
        """Move `leg` by the state table; an event its state does not allow is logged and
        counted, and the leg keeps its state (reconciliation repairs what that leaves)."""
        try:
            leg.life.move(event)
        except IllegalLegTransition as exc:
            log.error("call %s: leg %s: %s", leg.call.call_id, leg.peer, exc)
            self.events.publish(CallLegTransitionRefused(leg.call.call_id, exc.state.value,
                                                         exc.event.name))
            return False
        return True

    def _respond(self, leg: CallLeg, status: int, reason: str | None = None, *, body: bytes = b"",
                 extra: tuple[tuple[str, str], ...] = ()) -> None:
        if leg.invite_key is None:
            return
        response = make_response(leg.invite, status, reason, to_tag=leg.local_tag, body=body,
                                 content_type=SDP if body else None)
        if 100 < status < 300:
            response.add_header("Contact", str(self.endpoint.contact(leg.transport, secure=leg.invite.uri.is_sips)))
            response.add_header("Allow", ALLOW)
        if status == 503:
            response.add_header("Retry-After", str(RETRY_AFTER_SECONDS))
        for name, value in extra:
            response.add_header(name, value)
        self.endpoint.respond(leg.invite_key, response)

    def _send_in_dialog(self, leg: CallLeg, method: str, callback: Callable[[Response | None], None] | None = None,
                        *, body: bytes = b"") -> None:
        assert leg.dialog is not None
        request = leg.dialog.create_request(method, body=body, content_type=SDP if body else None)
        request.add_header("Via", self.endpoint.via(leg.transport), first=True)
        self.endpoint.send_request(request, leg.peer, leg.transport, callback)

    async def _open_media(self, negotiation: AudioNegotiation | None, *,
                          partner: MediaLeg | None = None) -> MediaLeg:
        if negotiation is None:
            return await self.media.open_leg(partner=partner)
        return await self.media.open_leg(
            remote=(negotiation.remote_address, negotiation.remote_port),
            codec=negotiation.codec.encoding.upper(),
            payload_type=negotiation.payload_type,
            telephone_event_payload_type=negotiation.telephone_event_pt,
        )

    def _answer_sdp(self, leg: CallLeg, offer: SessionDescription) -> bytes:
        assert leg.negotiation is not None and leg.media is not None
        version = 1 if leg.local_sdp is None else leg.local_sdp.origin.session_version + 1
        session_id = secrets.randbits(31) if leg.local_sdp is None else leg.local_sdp.origin.session_id
        answer = build_answer(offer, leg.negotiation, leg.media.local_host, leg.media.local_port,
                              session_id, version)
        leg.local_sdp = answer
        return answer.to_bytes()

    def _negotiate(self, leg: CallLeg, offered: bytes | None
                   ) -> tuple[SessionDescription | None, AudioNegotiation | None] | None:
        """Parse the caller's offer; answers the INVITE itself when it is unusable.

        (None, None) for an INVITE without an offer: we offer in the 200, the ACK answers.
        """
        request = leg.invite
        if offered is None:
            return None, None
        try:
            offer = parse_sdp(offered)
            return offer, negotiate_audio(offer, self.config.media.codecs)
        except NoAcceptableMedia as exc:
            log.info("call %s: no acceptable media: %s", request.call_id, exc)
            self._respond(leg, 488, extra=(("Warning", _warning(exc)),))
        except SdpError as exc:
            self._respond(leg, 400, f"Bad SDP: {exc}"[:100])
        return None

    def _accepts_sdp(self, request: Request) -> bool:
        accept = request.headers.get_all("accept")
        if not accept:
            return True
        kinds = {value.split(";", 1)[0].strip().lower() for value in accept}
        return bool(kinds & {SDP, "application/*", "*/*"})

    # -- INVITE ----------------------------------------------------------------------
    def on_invite(self, key: TransactionKey, request: Request, source: Address, transport: str) -> None:
        if request.to.tag is not None:
            self._reinvite(key, request, source, transport)
            return
        user = request.uri.user_unescaped or ""
        call = SipCall(request.call_id, "application", request.from_.uri.user_unescaped or "",
                    user, self._now())
        leg = CallLeg(call, request, source, transport, key)
        call.caller_leg = leg
        try:
            self._admit(key, call, leg, user, source)
        finally:
            if self.calls.get(call.key) is not call:
                # Refused (challenged, rejected, unusable offer): unlinked now, the call and
                # its leg are freed by reference counting, not left in a cycle to the collector.
                call.caller_leg = None

    def _admit(self, key: TransactionKey, call: SipCall, leg: CallLeg, user: str, source: Address) -> None:
        """Answer a new INVITE: start the call's work, or refuse it (challenge, 4xx/5xx)."""
        request = leg.invite
        try:
            leg.offer = session_description(request.headers.get("content-type"), request.body)
        except BodyError as exc:
            self._respond(leg, exc.status, exc.reason,
                          extra=(("Accept", ACCEPTED_BODY_TYPES),) if exc.status == 415 else ())
            return
        if not self._accepts_sdp(request):
            self._respond(leg, 406, extra=(("Accept", SDP),))
            return
        extension = self.config.extensions.get(user)
        if user in self.feature_codes:
            # Agents' feature codes (log in, break...): only for an authenticated account.
            if self._authenticated(key, call):
                feature = Extension(user, FEATURE_APPLICATION, language="en")
                self._start(call, leg, self._answer_application(call, leg, feature))
        elif extension is not None:
            # Answered without credentials: one source may hold only its share of the ports.
            caller_host = counted_host(request, source, self.config.sip)
            held = self.unauthenticated_calls.get(caller_host, 0)
            if held >= self.config.media.calls_per_source_limit:
                if caller_host not in self._capped_sources:  # one line per episode, not per INVITE
                    self._capped_sources.add(caller_host)
                    log.warning("calls from %s refused (503): it holds %d unauthenticated calls, "
                                "the limit (media.unauthenticated_calls_per_source)", caller_host, held)
                self._respond(leg, 503, "Too many calls from your address")
                return
            if self._start(call, leg, self._answer_application(call, leg, extension)):
                call.source_host = caller_host
                self.unauthenticated_calls[caller_host] = held + 1
                caller = self._registered_caller(request, source)
                if caller is not None:
                    self._engage(call, caller)
        elif (self.site_call_handler is not None and user in self.config.accounts
              and request.headers.get(SITE_RESERVATION_HEADER) is not None):
            # No digest: a sister site is recognised by its address and the reservation.
            work = self.site_call_handler(call, leg, source)
            if work is None:
                self._respond(leg, 403, "Not a sister site's reservation")
                return
            call.kind = "bridge"
            self._start(call, leg, work)
        elif user in self.config.accounts:
            if not self._authenticated(key, call):
                return
            call.kind = "bridge"
            if not self.registrar.bindings(user, self._now(), answering_only=True):
                self._respond(leg, 480, "Not registered")
                return
            if self._start(call, leg, self._bridge(call, leg, user)) and call.caller in self.config.accounts:
                self._engage(call, call.caller)
        elif self._authenticated(key, call):
            # Challenge first, as for an account: a 404 to anyone would tell accounts apart.
            self._respond(leg, 404)

    def _authenticated(self, key: TransactionKey, call: SipCall) -> bool:
        """Calls from accounts carry digest credentials (407 until they do)."""
        assert call.caller_leg is not None
        caller, refusal = self.registrar.authenticate(call.caller_leg.invite, "Proxy-Authorization",
                                                      self._now(), call.caller_leg.peer)
        if refusal is not None:
            self.endpoint.respond(key, refusal)
            return False
        call.caller = caller or call.caller
        return True

    def _registered_caller(self, request: Request, source: Address) -> str | None:
        """The account calling, for an unauthenticated call (to an application): its From
        user, when that account has a binding registered from the very address calling.

        Never through a configured front door: there every caller shares the proxy's
        address, so the address proves nothing and anyone could claim an agent's From.
        """
        if self.config.sip.is_front_door(source):
            return None
        user = request.from_.uri.user_unescaped or ""
        if user not in self.config.accounts:
            return None
        bindings = self.registrar.bindings(user, self._now())
        return user if any(binding.source == source for binding in bindings) else None

    def _engage(self, call: SipCall, account: str) -> None:
        if account in call.personal or call.ended:
            return
        call.personal.add(account)
        if self.on_personal_call is not None:
            self.on_personal_call(account, call.key, True)

    def _disengage(self, call: SipCall, account: str) -> None:
        if account not in call.personal:
            return
        call.personal.discard(account)
        if self.on_personal_call is not None:
            self.on_personal_call(account, call.key, False)

    def _start(self, call: SipCall, leg: CallLeg, work: CallWork) -> bool:
        """Run `work` for a new call once the caller's media is open; False when the INVITE
        was refused here (no usable offer)."""
        negotiated = self._negotiate(leg, leg.offer)
        if negotiated is None:
            return False
        self._respond(leg, 100)
        assert leg.invite_key is not None
        self.pending[leg.invite_key] = leg
        self.calls[call.key] = call
        self.events.publish(CallStarted(call.call_id, call.caller, call.callee, call.kind))
        offer, leg.negotiation = negotiated

        async def run() -> None:
            try:
                leg.media = await self._open_media(leg.negotiation)
                if call.ended:
                    leg.media.close()
                    return
                await work(offer)
            except asyncio.CancelledError:
                raise
            except MediaPortsExhausted as exc:
                if not self._out_of_ports:  # one line per episode, not per INVITE
                    self._out_of_ports = True
                    log.warning("calls refused (503) until a call ends: %s", exc)
                self._end(call, "congestion", status=503)
            except MediaUnavailable as exc:
                log.info("call %s refused (503): %s", call.call_id, exc)
                self._end(call, "media_unavailable", status=503, reason="Media engine unavailable")
            except Exception:
                log.exception("call %s failed", call.call_id)
                self._end(call, "error", status=500)
            finally:
                # A cancelled task keeps its frames (and through them this call) in its
                # exception's traceback: the call must not point back at it.
                call.task = None

        self._track(call, asyncio.get_running_loop().create_task(run()))
        return True

    def _track(self, call: SipCall, task: asyncio.Task[None]) -> None:
        call.task = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _answer_application(self, call: SipCall, leg: CallLeg, extension: Extension) -> CallWork:
        async def answer(offer: SessionDescription | None) -> None:
            self._confirm_caller(call, leg, offer)
            if leg.answer_from_ack is not None:
                await leg.answer_from_ack  # the application talks once it knows where to
            handle = ApplicationCall(self, call, leg, extension)
            self._answered[call.call_id] = handle
            assert leg.media is not None
            leg.media.on_dtmf = handle.digits.put_nowait
            try:
                await self.applications(extension).run(handle)
            finally:
                self._answered.pop(call.call_id, None)
            if not call.ended:
                self._end(call, "application")
        return answer

    def _confirm_caller(self, call: SipCall, leg: CallLeg, offer: SessionDescription | None) -> None:
        """Answer the caller's INVITE with our SDP (an answer, or our offer when the INVITE
        had none); the dialog exists from here."""
        if offer is None:
            assert leg.media is not None
            leg.local_sdp = build_offer(leg.media.local_host, leg.media.local_port,
                                        self.config.media.codecs, TELEPHONE_EVENT_PT,
                                        session_id=secrets.randbits(31), session_version=1)
            leg.answer_from_ack = asyncio.get_running_loop().create_future()
            body = leg.local_sdp.to_bytes()
        else:
            body = self._answer_sdp(leg, offer)
        leg.dialog = Dialog.as_uas(leg.invite, leg.local_tag,
                                   self.endpoint.contact(leg.transport, secure=leg.invite.uri.is_sips))
        leg.dialog.confirm()
        self.legs[leg.dialog.key] = leg
        self._move(leg, LegEvent.ANSWER_SENT)
        self._respond(leg, 200, body=body)
        if leg.invite_key is not None:
            self.pending.pop(leg.invite_key, None)
        call.answered_at = self._now()
        self.events.publish(CallAnswered(call.call_id, call.kind))

    # -- dialling registered phones -----------------------------------------------------
    async def dial(self, call: SipCall, user: str, *, on_answered: Callable[[CallLeg], None],
                   on_failed: Callable[[int], None],
                   extra_headers: tuple[tuple[str, str], ...] = (),
                   personal: bool = True,
                   targets: Sequence[Binding] | None = None) -> Dial | None:
        """Ring every registered contact of account `user` for `call` (one fork each).

        The first fork to answer wins (`on_answered(leg)`, its media configured but not
        yet bridged) and the others are cancelled; when every fork fails,
        `on_failed(status)` gets one status for all: a refusal (busy, decline) as is,
        anything else as 480. None when the account has no registered contact.
        `personal=False` for a queue's offer to an agent: any other dial engages the account
        in person (busy for routing) until the dial fails or the call ends. `targets`:
        where to send the INVITE instead of the account's registered contacts (another
        site's server, for an agent of that site).
        A call with no caller's leg (a callback the server places) rings the phones from
        `call.caller`.
        """
        bindings = (list(targets) if targets is not None
                    else self.registrar.bindings(user, self._now(), answering_only=True))
        if not bindings or call.ended:
            return None
        # A call the server places itself (a callback) has no caller's leg to pair media with.
        partner = call.caller_leg.media if call.caller_leg is not None else None
        media = await self._open_media(None, partner=partner)
        if call.ended:
            media.close()
            return None
        offer = build_offer(media.local_host, media.local_port, self.config.media.codecs,
                            TELEPHONE_EVENT_PT, session_id=secrets.randbits(31), session_version=1)
        attempt = Dial(call, user, media, on_answered, on_failed, personal=personal)
        if personal:
            self._engage(call, user)
        call_id = secrets.token_hex(12) + "@centralita"
        # A call the server places itself (a callback) has no caller's leg to copy.
        original = call.caller_leg.invite if call.caller_leg is not None else None
        try:
            for binding in bindings:
                invite = self._callee_invite(original, call.caller, user, binding, call_id, offer,
                                             extra_headers)
                leg = CallLeg(call, invite, binding.source, binding.transport, media=media,
                              local_sdp=offer, local_tag=invite.from_.tag or "", dial=attempt)
                leg.invite_key = self.endpoint.send_request(invite, binding.source, binding.transport,
                                                            self._callee_responses(leg))
                attempt.forks.append(leg)
                call.callee_legs.append(leg)
        except BaseException:
            self.cancel_dial(attempt)  # the forks already sent are cancelled, the port released
            raise
        return attempt

    def _callee_responses(self, leg: CallLeg) -> Callable[[Response | None], None]:
        return lambda response: self._on_callee_response(leg, response)

    def cancel_dial(self, attempt: Dial) -> None:
        """Stop ringing: CANCEL every fork still ringing. A 2xx that crosses the CANCEL is
        ACKed and hung up (the race between answer and cancel ends with nobody stuck)."""
        if attempt.finished:
            return
        attempt.finished = True
        for fork in attempt.forks:
            if fork.state.ringing and fork.invite_key is not None:
                self._move(fork, LegEvent.CANCELLED)
                self.endpoint.cancel(fork.invite_key)
        attempt.media.close()
        if attempt.personal:
            self._disengage(attempt.call, attempt.user)

    def _bridge(self, call: SipCall, caller_leg: CallLeg, user: str) -> CallWork:
        """A call to an account: dial its phones, answer the caller when one answers."""
        async def connect(offer: SessionDescription | None) -> None:
            def answered(leg: CallLeg) -> None:
                self._confirm_caller(call, caller_leg, offer)
                self.connect_media(call, leg)

            def failed(status: int) -> None:
                self._end(call, "rejected" if status in _REFUSALS else "unreachable", status=status)

            if await self.dial(call, user, on_answered=answered, on_failed=failed) is None:
                self._end(call, "unreachable", status=480)
        return connect

    def bridge_reserved(self, call: SipCall, user: str, *,
                        extra_headers: tuple[tuple[str, str], ...],
                        on_ringing: Callable[[Dial], None], on_answered: Callable[[], bool],
                        on_failed: Callable[[int], None]) -> CallWork:
        """A sister site's call for agent ``user``, reserved for it: ring the agent's phones
        (a queue's offer, not a personal call) and answer the caller when one answers and
        ``on_answered`` still agrees (False: the reservation is gone, the answer is hung up)."""
        caller_leg = call.caller_leg
        assert caller_leg is not None

        async def connect(offer: SessionDescription | None) -> None:
            def answered(leg: CallLeg) -> None:
                if not on_answered():
                    self.hang_up_leg(leg)
                    self._end(call, "unreachable", status=480)
                    return
                self._confirm_caller(call, caller_leg, offer)
                self.connect_media(call, leg)

            def failed(status: int) -> None:
                on_failed(status)
                self._end(call, "rejected" if status in _REFUSALS else "unreachable", status=status)

            dial = await self.dial(call, user, on_answered=answered, on_failed=failed,
                                   extra_headers=extra_headers, personal=False)
            if dial is None:
                failed(480)
                return
            on_ringing(dial)
        return connect

    def connect_media(self, call: SipCall, callee: CallLeg) -> None:
        """Relay the caller's and `callee`'s RTP to each other (any prompt stops first)."""
        caller_leg = call.caller_leg
        assert caller_leg is not None and caller_leg.media is not None and callee.media is not None
        caller_leg.media.stop_playback()
        # Talking to a person now: digits travel to them in the relayed stream, and in-band
        # detection (80 µs a frame) would only slow the relay down.
        caller_leg.media.on_dtmf = None
        self.media.bridge(caller_leg.media, callee.media)
        call.bridged_at = self._now()

    def _callee_invite(self, original: Request | None, caller_number: str, user: str, binding: Binding,
                       call_id: str, offer: SessionDescription,
                       extra_headers: tuple[tuple[str, str], ...]) -> Request:
        """The INVITE to one of `user`'s phones: From is the caller of `original` (the caller's
        INVITE), or `caller_number` for a call with no caller's leg."""
        host, port = self.endpoint.local_address(binding.transport)
        from_uri = Uri("sip", user=original.from_.uri.user if original else caller_number, host=host,
                       port=port)
        display_name = original.from_.display_name if original else None
        max_forwards = (original.int_header("max-forwards", 255) or 70) if original else 70
        headers = Headers()
        headers.add("Via", self.endpoint.via(binding.transport))
        headers.add("Max-Forwards", str(max(0, max_forwards - 1)))
        headers.add("From", str(NameAddress(from_uri, display_name, {"tag": new_tag()})))
        headers.add("To", str(NameAddress(Uri("sip", user=user, host=host, port=port))))
        headers.add("Call-ID", call_id)
        headers.add("CSeq", "1 INVITE")
        for route in binding.path:  # the proxies the phone registered through (RFC 3327)
            headers.add("Route", route)
        headers.add("Contact", str(self.endpoint.contact(binding.transport, secure=binding.contact.uri.is_sips)))
        headers.add("Allow", ALLOW)
        for name, value in extra_headers:
            headers.add(name, value)
        headers.add("Content-Type", SDP)
        return Request("INVITE", binding.contact.uri, headers, offer.to_bytes())

    def _on_callee_response(self, leg: CallLeg, response: Response | None) -> None:
        status = 408 if response is None else response.status
        if response is not None and 200 <= status < 300:
            self._callee_answered(leg, response)
            return
        if leg.state.over:
            if status >= 200 and leg.invite_key is not None:
                # The final answer to a fork we cancelled: nothing more can come.
                self.endpoint.forget_client(leg.invite_key)
            return
        if status < 200:
            caller_leg = leg.call.caller_leg
            if status in (180, 183) and caller_leg is not None and caller_leg.state is LegState.TRYING:
                self._move(caller_leg, LegEvent.PROVISIONAL)
                self._respond(caller_leg, 180)
            if leg.state is LegState.TRYING:
                self._move(leg, LegEvent.PROVISIONAL)
            return
        self._callee_failed(leg, status)

    def _callee_failed(self, leg: CallLeg, status: int) -> None:
        """One fork gave up; when every fork of its dial has, the dial fails as one."""
        self._move(leg, LegEvent.REJECTED)
        leg.final_status = status
        self._forget_leg(leg)
        attempt = leg.dial
        if attempt is None or attempt.finished or any(f.state is not LegState.FAILED
                                                      for f in attempt.forks):
            return
        attempt.finished = True
        attempt.media.close()
        if attempt.personal:
            self._disengage(leg.call, attempt.user)
        refusals = [f.final_status for f in attempt.forks if f.final_status in _REFUSALS]
        if not leg.call.ended:
            attempt.on_failed(refusals[0] if refusals else 480)

    def _callee_answered(self, leg: CallLeg, response: Response) -> None:
        call = leg.call
        if leg.dialog is None:
            leg.dialog = Dialog.as_uac(leg.invite, response)
        ack = leg.dialog.create_ack(leg.invite.cseq[0])
        ack.add_header("Via", self.endpoint.via(leg.transport), first=True)
        self.endpoint.send_raw(ack, leg.peer, leg.transport)
        if leg.answered:
            return  # a retransmitted 2xx: the ACK above was all it needed
        attempt = leg.dial
        if call.ended or attempt is None or attempt.finished:
            # Another phone answered first, the ringing was cancelled, or the caller left.
            self.hang_up_leg(leg)
            return
        try:
            assert leg.local_sdp is not None
            negotiation = accept_answer(leg.local_sdp, parse_sdp(response.body))
        except SdpError as exc:
            log.warning("call %s: unusable answer from %s: %s", call.call_id, leg.peer, exc)
            self._send_bye(leg)  # the fork failed (below); its dialog must still end
            self._callee_failed(leg, 488)
            return
        attempt.finished = True
        self._move(leg, LegEvent.ANSWER_RECEIVED)
        leg.negotiation = negotiation
        self.legs[leg.dialog.key] = leg
        call.connected_leg = leg
        for other in attempt.forks:
            if other is not leg and other.state.ringing and other.invite_key is not None:
                self._move(other, LegEvent.CANCELLED)
                self.endpoint.cancel(other.invite_key)
        assert leg.media is not None
        leg.media.configure((negotiation.remote_address, negotiation.remote_port),
                            codec=negotiation.codec.encoding.upper(), payload_type=negotiation.payload_type,
                            telephone_event_payload_type=negotiation.telephone_event_pt)
        attempt.on_answered(leg)

    def hang_up_leg(self, leg: CallLeg) -> None:
        """BYE one callee leg that is not wanted (answered too late, or after the router gave
        up on it), leaving the rest of the call alone."""
        self._move(leg, LegEvent.HUNG_UP if leg.answered else LegEvent.UNWANTED_ANSWER)
        self._send_bye(leg)

    def _send_bye(self, leg: CallLeg) -> None:
        assert leg.dialog is not None
        self._send_in_dialog(leg, "BYE")
        self._forget_leg(leg)

    # -- in-dialog requests ------------------------------------------------------------
    def _leg_for(self, request: Request) -> CallLeg | None:
        return self.legs.get(dialog_key_of(request, we_are_uas=True))

    def _reinvite(self, key: TransactionKey, request: Request, source: Address, transport: str) -> None:
        leg = self._leg_for(request)
        if leg is None or leg.dialog is None or leg.media is None:
            self.endpoint.respond(key, make_response(request, 481))
            return
        refusal = leg.dialog.receive_request(request)
        if refusal is not None:
            self.endpoint.respond(key, make_response(request, refusal))
            return
        if not request.body:
            # An offerless re-INVITE (a refresh): offer our current description again.
            assert leg.local_sdp is not None
            response = make_response(request, 200, body=leg.local_sdp.to_bytes(), content_type=SDP)
            response.add_header("Contact", str(self.endpoint.contact(leg.transport, secure=leg.invite.uri.is_sips)))
            self.endpoint.respond(key, response)
            return
        try:
            offered = session_description(request.headers.get("content-type"), request.body)
            if offered is None:
                raise SdpError("no SDP part in the body")
            offer = parse_sdp(offered)
            negotiation = negotiate_audio(offer, self.config.media.codecs)
        except BodyError as exc:
            self.endpoint.respond(key, make_response(request, exc.status, exc.reason))
            return
        except NoAcceptableMedia as exc:
            response = make_response(request, 488)
            response.add_header("Warning", _warning(exc))
            self.endpoint.respond(key, response)
            return
        except SdpError as exc:
            self.endpoint.respond(key, make_response(request, 400, f"Bad SDP: {exc}"[:100]))
            return
        # Hold and resume change where and whether we send; the dialog stays.
        leg.negotiation = negotiation
        leg.media.configure((negotiation.remote_address, negotiation.remote_port),
                            codec=negotiation.codec.encoding.upper(), payload_type=negotiation.payload_type,
                            telephone_event_payload_type=negotiation.telephone_event_pt)
        body = self._answer_sdp(leg, offer)
        response = make_response(request, 200, body=body, content_type=SDP)
        response.add_header("Contact", str(self.endpoint.contact(leg.transport, secure=leg.invite.uri.is_sips)))
        self.endpoint.respond(key, response)

    def on_ack(self, request: Request, source: Address) -> None:
        leg = self._leg_for(request)
        if leg is None or leg.state is not LegState.ANSWERED:
            return  # a retransmitted ACK, or one for a leg already over
        self._move(leg, LegEvent.ACK_RECEIVED)
        waiting = leg.answer_from_ack
        if waiting is None or waiting.done():
            return
        try:
            answer = session_description(request.headers.get("content-type"), request.body)
            if answer is None:
                raise SdpError("the ACK carries no SDP answer")
            assert leg.local_sdp is not None and leg.media is not None
            negotiation = accept_answer(leg.local_sdp, parse_sdp(answer))
        except (BodyError, SdpError) as exc:
            # RFC 3261 §13.2.1: the offer was ours, an ACK without a usable answer ends the call.
            log.info("call %s: no usable SDP answer in the ACK (%s), hanging up", leg.call.call_id, exc)
            self._end(leg.call, "bad_answer")
            return
        leg.negotiation = negotiation
        leg.media.configure((negotiation.remote_address, negotiation.remote_port),
                            codec=negotiation.codec.encoding.upper(), payload_type=negotiation.payload_type,
                            telephone_event_payload_type=negotiation.telephone_event_pt)
        waiting.set_result(None)

    def on_ack_timeout(self, request: Request) -> None:
        leg = self._leg_for_invite(request)
        if leg is not None and not leg.call.ended:
            log.info("call %s: no ACK for our 2xx, hanging up", leg.call.call_id)
            self._end(leg.call, "no_ack", ended_by=None)

    def _leg_for_invite(self, invite: Request) -> CallLeg | None:
        tag = invite.to.tag
        for leg in self.legs.values():
            if leg.invite is invite or (leg.invite.call_id == invite.call_id and tag in (None, leg.local_tag)):
                return leg
        return None

    def on_bye(self, key: TransactionKey, request: Request, source: Address, transport: str) -> None:
        leg = self._leg_for(request)
        if leg is None or leg.dialog is None:
            self.endpoint.respond(key, make_response(request, 481))
            return
        refusal = leg.dialog.receive_request(request)
        if refusal is not None:
            self.endpoint.respond(key, make_response(request, refusal))
            return
        self.endpoint.respond(key, make_response(request, 200))
        self._move(leg, LegEvent.BYE_RECEIVED)
        self._forget_leg(leg)
        self._end(leg.call, "caller_hangup" if leg is leg.call.caller_leg else "callee_hangup", ended_by=leg)

    def on_cancel(self, key: TransactionKey, request: Request, source: Address, transport: str) -> None:
        invite_key = self.endpoint.transactions.find_invite_for_cancel(request)
        leg = self.pending.get(invite_key) if invite_key is not None else None
        if invite_key is None:
            self.endpoint.respond(key, make_response(request, 481))
            return
        self.endpoint.respond(key, make_response(request, 200))
        if leg is not None and not leg.answered:
            self._end(leg.call, "cancelled", status=487)

    def on_refer(self, key: TransactionKey, request: Request, source: Address, transport: str) -> None:
        """Blind transfer (RFC 3515) asked by a phone we bridged: the caller goes on to the
        target, the transferring phone is told the outcome and released."""
        leg = self._leg_for(request)
        if leg is None or leg.dialog is None:
            self.endpoint.respond(key, make_response(request, 481))
            return
        refer_to = request.headers.get("refer-to")
        if refer_to is None:
            self.endpoint.respond(key, make_response(request, 400, "Missing Refer-To"))
            return
        target = parse_name_address(refer_to).uri
        if not target.is_sip or not target.user:
            self.endpoint.respond(key, make_response(request, 416, "Refer-To must name a sip user"))
            return
        refusal = leg.dialog.receive_request(request)
        if refusal is not None:
            self.endpoint.respond(key, make_response(request, refusal))
            return
        status = 403 if self.transfer_handler is None or leg is leg.call.caller_leg \
            else self.transfer_handler(leg, target.user_unescaped or "")
        self.endpoint.respond(key, make_response(request, status))
        if status != 202:
            return
        notify = leg.dialog.create_request(
            "NOTIFY", body=b"SIP/2.0 200 OK\r\n", content_type="message/sipfrag;version=2.0",
            extra_headers=(("Event", "refer"), ("Subscription-State", "terminated;reason=noresource")))
        notify.add_header("Via", self.endpoint.via(leg.transport), first=True)
        self.endpoint.send_request(notify, leg.peer, leg.transport, None)
        # The transferor hangs up on its own after the NOTIFY; if it does not, we do.
        self.endpoint.loop.call_later(TRANSFEROR_GRACE_SECONDS, self._release_transferor, leg)

    def _release_transferor(self, leg: CallLeg) -> None:
        if leg.state is not LegState.ENDED and not leg.call.ended:
            self.hang_up(leg.call, cause="transferred")

    def detach(self, leg: CallLeg) -> None:
        """Take an answered callee leg out of its call (after a transfer): the caller stays,
        and the leg becomes a call of its own, so its BYE ends only itself."""
        call = leg.call
        if leg in call.callee_legs:
            call.callee_legs.remove(leg)
        if call.connected_leg is leg:
            call.connected_leg = None
        if call.caller_leg is not None and call.caller_leg.media is not None:
            self.media.unbridge(call.caller_leg.media)
        call.bridged_at = None  # the caller waits alone again: silence proves nothing now
        if leg.media is not None:
            self.media.unbridge(leg.media)
        alone = SipCall(leg.invite.call_id, call.kind, call.caller, leg.dial.user if leg.dial else "",
                     self._now(), answered_at=self._now(), counted=False)
        alone.callee_legs.append(leg)
        alone.connected_leg = leg
        leg.call = alone
        leg.dial = None
        self.calls[alone.key] = alone

    def on_info(self, key: TransactionKey, request: Request, source: Address, transport: str) -> None:
        leg = self._leg_for(request)
        if leg is None:
            self.endpoint.respond(key, make_response(request, 481))
            return
        digit = _dtmf_from_info(request)
        self.endpoint.respond(key, make_response(request, 200))
        handle = self._answered.get(leg.call.call_id)
        if digit is not None and handle is not None:
            handle.digits.put_nowait(digit)
        elif digit is not None and leg.call.connected_leg is not None:
            other = leg.call.connected_leg if leg is leg.call.caller_leg else leg.call.caller_leg
            if other is not None and other.media is not None and not other.media.closed:
                other.media.send_dtmf(digit)

    # -- ending --------------------------------------------------------------------
    def hang_up(self, call: SipCall, cause: str) -> None:
        if not call.ended:
            self._end(call, cause)

    def _end(self, call: SipCall, cause: str, *, status: int | None = None, ended_by: CallLeg | None = None,
             reason: str | None = None) -> None:
        """Tear down every leg of `call` that `ended_by` did not already end."""
        if call.ended:
            return
        call.ended = True
        call.end_cause = cause
        if cause != "congestion":
            self._out_of_ports = False  # this call's ports come free
        if call.source_host is not None:
            held = self.unauthenticated_calls.pop(call.source_host, 1) - 1
            if held > 0:
                self.unauthenticated_calls[call.source_host] = held
            self._capped_sources.discard(call.source_host)
        legs = [call.caller_leg, *call.callee_legs]
        for leg in legs:
            if leg is None or leg is ended_by or leg.state is LegState.ENDED:
                continue
            if leg.answered and leg.dialog is not None:
                self._send_in_dialog(leg, "BYE")
            elif leg is call.caller_leg:
                self._respond(leg, status or 480, reason)
            elif leg.state.ringing and leg.invite_key is not None:
                self.endpoint.cancel(leg.invite_key)
            self._move(leg, LegEvent.CALL_ENDED)
            self._forget_leg(leg)
        for leg in legs:
            if leg is not None and leg.media is not None and not leg.media.closed:
                leg.media.close()
            if leg is not None and leg.answer_from_ack is not None and not leg.answer_from_ack.done():
                leg.answer_from_ack.cancel()
        handle = self._answered.get(call.call_id)
        if handle is not None:
            handle.hung_up.set()
        if call.task is not None and not call.task.done() and call.task is not asyncio.current_task():
            call.task.cancel()
        self.calls.pop(call.key, None)
        for account in list(call.personal):
            self._disengage(call, account)
        if call.counted:
            duration = self._now() - (call.answered_at or call.started_at)
            self.events.publish(CallEnded(call.call_id, call.kind, cause, status, duration))
        self._release(call)

    @staticmethod
    def _release(call: SipCall) -> None:
        """Unlink an ended call from its legs and dials: without these back-references it is
        freed the moment the last holder lets go, not by a pass of the garbage collector.
        A late response still finds its leg (and the leg its call) through the transaction."""
        for leg in call.callee_legs:
            if leg.call is call and leg.dial is not None:
                leg.dial.forks.clear()
                leg.dial = None
        call.callee_legs = []
        call.connected_leg = None
        call.caller_leg = None
        # A task cancelled before its first step never runs its own clean-up (``finally``),
        # and its exception's traceback holds the call.
        call.task = None

    def _forget_leg(self, leg: CallLeg) -> None:
        if leg.dialog is not None:
            self.legs.pop(leg.dialog.key, None)
        if leg.invite_key is not None:
            self.pending.pop(leg.invite_key, None)
            if leg is not leg.call.caller_leg:
                self.endpoint.forget_client(leg.invite_key)

    # -- reconciliation --------------------------------------------------------------
    def reconcile(self, now: float, *, full: bool = True) -> list[str]:
        """Find calls left stuck by a lost message or a failed handler and end them; returns
        the Call-IDs repaired (each also counted by a StaleCallsRepaired event).

        Every time: dead-leg detection (:meth:`reap_silent_calls`). With `full`, also the
        comparison of state with what carries it: each leg's state (``pbx.calls.call_leg``) with
        the indexes that route SIP to it (the dialog index holds exactly the answered legs,
        the pending INVITEs exactly the callers not answered yet), every live call with its
        legs (a call none of whose legs is live is over), then each of ``call_holders``
        (the router's calls, through the queue service) with the live calls."""
        repaired = self.reap_silent_calls(now)
        if not full:
            return repaired
        stale = self._repair_leg_indexes()
        for call in list(self.calls.values()):
            legs = [leg for leg in (call.caller_leg, *call.callee_legs) if leg is not None]
            if call.ended:
                self.calls.pop(call.key, None)  # ended, yet still listed: only forgetting is left
                stale.append(call.call_id)
            elif call.caller_leg is not None and call.caller_leg.state.over \
                    or all(leg.state.over for leg in legs):
                log.warning("call %s: no live leg left (%s); ending it", call.call_id,
                            ", ".join(f"{leg.peer[0]}:{leg.peer[1]} {leg.state}" for leg in legs))
                self._end(call, "stale")
                stale.append(call.call_id)
        if stale:
            stale = list(dict.fromkeys(stale))
            self.events.publish(StaleCallsRepaired(tuple(stale), "reconciliation"))
        live = frozenset(call.call_id for call in self.calls.values() if not call.ended)
        for check in self.call_holders:
            stale += check(live)
        return repaired + stale

    def _repair_leg_indexes(self) -> list[str]:
        """Drop index entries whose leg's state says SIP should no longer reach it there."""
        repaired: list[str] = []
        for key, leg in list(self.legs.items()):
            if not leg.answered or leg.call.ended:
                log.warning("call %s: dialog %s still indexed for a leg %s; forgetting it",
                            leg.call.call_id, key, leg.state)
                del self.legs[key]
                repaired.append(leg.call.call_id)
        for invite_key, leg in list(self.pending.items()):
            if not leg.state.ringing or leg.call.ended:
                log.warning("call %s: INVITE still pending for a leg %s; forgetting it",
                            leg.call.call_id, leg.state)
                del self.pending[invite_key]
                repaired.append(leg.call.call_id)
        return repaired

    def reap_silent_calls(self, now: float) -> list[str]:
        """Hang up answered calls whose peer vanished without a BYE.

        Silence ends a call only where it means something (``media.rtp_timeout_applies_to``):
        by default a leg bridged to another party that has sent RTP since. A caller on
        hold in a queue, muted or suppressing silence, sends nothing and is alive: such a
        leg is asked with an in-dialog OPTIONS (at most once per rtp_timeout) and hung up
        only when its dialog is gone: 481 or 408 ('dialog_gone'), or no answer within
        PROBE_ANSWER_T1 retransmission intervals ('media_timeout': silent and unreachable)."""
        media = self.config.media
        timeout = media.rtp_timeout
        answer_within = PROBE_ANSWER_T1 * self.config.sip.t1
        reaped: list[str] = []
        for call in list(self.calls.values()):
            if call.ended or call.answered_at is None:
                continue
            for leg in (call.caller_leg, call.connected_leg):
                if leg is None or leg.media is None:
                    continue
                heard = leg.media.last_received_at
                silent_for = now - (heard or call.answered_at)
                if silent_for <= timeout:
                    leg.probe_sent_at = None
                    continue
                bridged_at = call.bridged_at
                bridged = bridged_at is not None and heard is not None and heard >= bridged_at
                unanswered = leg.probe_sent_at is not None and now - leg.probe_sent_at > answer_within
                if media.rtp_timeout_applies_to == "all" or bridged or unanswered:
                    log.info("call %s: no RTP from %s (SIP %s) for %.0f s%s, hanging up",
                             call.call_id, _rtp_address(leg), leg.peer, silent_for,
                             " and no answer to OPTIONS" if unanswered else "")
                    self._end(call, "media_timeout")
                    self.events.publish(StaleCallsRepaired((call.call_id,), "media_timeout"))
                    reaped.append(call.call_id)
                    break
                self._probe_dialog(call, leg, now)
        return reaped

    def _probe_dialog(self, call: SipCall, leg: CallLeg, now: float) -> None:
        if leg.dialog is None or leg.probe_sent_at is not None or leg.probe_due > now:
            return
        first = leg.probe_due == 0.0
        leg.probe_due = now + self.config.media.rtp_timeout
        leg.probe_sent_at = now
        (log.info if first else log.debug)(
            "call %s: no RTP from %s (SIP %s); asking in-dialog whether the call is alive",
            call.call_id, _rtp_address(leg), leg.peer)

        def answered(response: Response | None) -> None:
            if call.ended or response is None:
                return  # no answer at all: reap_silent_calls ends the call at its deadline
            if response.status not in (408, 481):
                leg.probe_sent_at = None  # any other answer, even 405 or 501, proves it alive
                return
            log.info("call %s: no RTP from %s and its dialog is gone (%d), hanging up",
                     call.call_id, _rtp_address(leg), response.status)
            self._end(call, "dialog_gone")
            self.events.publish(StaleCallsRepaired((call.call_id,), "dialog_gone"))

        self._send_in_dialog(leg, "OPTIONS", answered)

    def close_all(self) -> None:
        for call in list(self.calls.values()):
            self._end(call, "shutdown", status=503)

    @property
    def active_dialogs(self) -> int:
        return len(self.legs)

    def media_lost(self, legs: list[MediaLeg]) -> None:
        """The media engine lost these legs (rtpengine stopped answering): their calls end,
        a BYE to every answered leg, 503 to a caller not yet answered."""
        lost = {id(media) for media in legs}
        for call in list(self.calls.values()):
            if any(leg is not None and leg.media is not None and id(leg.media) in lost
                   for leg in (call.caller_leg, *call.callee_legs)):
                self._end(call, "media_lost", status=503, reason="Media engine unavailable")

    def resources(self) -> dict[str, int]:
        """What calls hold right now; all zero on an idle server (a test checks it)."""
        return {
            "calls": len(self.calls),
            "call_tasks": len(self.tasks),
            "dialogs": len(self.legs),
            "pending_invites": len(self.pending),
            **self.media.resources(),
            "unauthenticated_calls": sum(self.unauthenticated_calls.values()),
        }


def _warning(refusal: NoAcceptableMedia) -> str:
    """A Warning header value (RFC 3261 §20.43) saying why an offer was refused."""
    text = str(refusal).replace("\\", "\\\\").replace('"', '\\"')
    return f'{refusal.warn_code} centralita "{text}"'


def _rtp_address(leg: CallLeg) -> str:
    """Where the leg's RTP comes from (its SDP address), for the logs."""
    remote = leg.media.remote if leg.media is not None else None
    return "an unknown address" if remote is None else f"{remote[0]}:{remote[1]}"


def _dtmf_from_info(request: Request) -> str | None:
    """The digit of an INFO carrying application/dtmf-relay (Signal=5) or application/dtmf (5)."""
    kind = request.content_type
    text = request.body.decode("ascii", "replace").strip()
    if kind == "application/dtmf-relay":
        for line in text.splitlines():
            name, _, value = line.partition("=")
            if name.strip().lower() == "signal":
                text = value.strip()
                break
        else:
            return None
    elif kind != "application/dtmf":
        return None
    return text if len(text) == 1 and text in "0123456789*#ABCDabcd" else None
