"""Calls the server places itself through a SIP trunk: a B2BUA leg with no inbound call.

``TrunkDialer.call(number, trunk)`` sends an INVITE with our SDP offer to the trunk,
answers a digest challenge (401/407) once with the trunk's credentials, and waits:
- 2xx: ACKed, media set up from the answer: the customer *answered*;
- no final answer within the ring time: CANCEL (a 2xx crossing it is ACKed and hung
  up): *no answer*;
- 486/600/603: *busy*; 404/484/604: *invalid number*; 408/480/487: *no answer*;
- 5xx, any other refusal, no response at all, or a challenge we cannot answer: the
  trunk failed (*trunk_failure*, retried later without using up a try).
An answered leg (``OutboundCall``) ends with ``hang_up()`` or the trunk's BYE, which the
server routes here first (``on_bye``). As a ``CallbackDialer`` it dials a callback
request's number through its queue's trunk and records the outcome.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from callbacks import CallbackRequest, Outcome
from pbx.calls.callback_service import TryResult
from pbx.configuration.callbacks import CallbackConfig, TrunkSettings
from pbx.configuration.server import MediaSettings
from pbx.edge.endpoint import ALLOW, SipEndpoint, new_tag
from pbx.edge.transport import Address
from pbx.media.engine import MediaEngine, MediaLeg, MediaPortsExhausted
from pbx.sip.address import NameAddress
from pbx.sip.dialog import Dialog, DialogKey, dialog_key_of
from pbx.sip.digest import authorize, select_challenge
from pbx.sip.message import Headers, Request, Response, make_response
from pbx.sip.sdp import SdpError, SessionDescription, accept_answer, build_offer, parse_sdp
from pbx.sip.transaction import TransactionKey
from pbx.sip.uri import Uri

log = logging.getLogger("pbx.calls.outbound")

SDP = "application/sdp"
TELEPHONE_EVENT_PT = 101
BUSY = frozenset({486, 600, 603})
INVALID_NUMBER = frozenset({404, 484, 604})
NO_ANSWER = frozenset({408, 480, 487})
# After our CANCEL, how long the trunk has to end the INVITE (487, or a crossing 2xx).
CANCEL_GRACE_SECONDS = 8.0

# What to do with the customer once they answered (agent-first or customer-first
# connection); without one, the leg is hung up once the answer is recorded.
Connect = Callable[["OutboundCall", CallbackRequest], Awaitable[None]]


@dataclass(eq=False)
class OutboundCall:
    """An answered outbound leg: our dialog with the trunk and its media."""

    call_id: str
    number: str
    trunk: str
    dialog: Dialog
    media: MediaLeg
    peer: Address
    transport: str
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_cause: str | None = None


@dataclass
class _Attempt:
    """The INVITE transaction in flight and what its answers need."""

    invite: Request
    responses: asyncio.Queue[Response | None]
    key: TransactionKey | None = None  # once sent
    ack: Request | None = None  # sent for the 2xx; sent again for its retransmissions

    @property
    def sent(self) -> TransactionKey:
        assert self.key is not None
        return self.key


class TrunkDialer:
    def __init__(self, endpoint: SipEndpoint, engine: MediaEngine, media: MediaSettings,
                 config: CallbackConfig, *, connect: Connect | None = None) -> None:
        self._endpoint = endpoint
        self._engine = engine
        self._media = media
        self._config = config
        self._connect = connect
        self._calls: dict[DialogKey, OutboundCall] = {}

    @property
    def calls(self) -> list[OutboundCall]:
        return list(self._calls.values())

    # -- CallbackDialer --------------------------------------------------------------
    def can_dial(self, queue: str) -> bool:
        return self._config.trunk_for(queue) is not None

    async def dial(self, request: CallbackRequest) -> TryResult:
        trunk = self._config.trunk_for(request.queue)
        if trunk is None:
            return TryResult(Outcome.TRUNK_FAILURE, f"no trunk for queue {request.queue}")
        rules = self._config.callbacks.for_queue(request.queue)
        result, call = await self.call(request.number, trunk, ring_seconds=rules.no_answer_seconds)
        if call is not None:
            try:
                if self._connect is not None:
                    await self._connect(call, request)
            finally:
                self.hang_up(call, "callback_done")
        return result

    # -- placing a call --------------------------------------------------------------
    async def call(self, number: str, trunk: TrunkSettings, *,
                   ring_seconds: float) -> tuple[TryResult, OutboundCall | None]:
        """Call ``number`` through ``trunk``; the outcome, and the leg when answered."""
        try:
            media = await self._engine.open_leg()
        except MediaPortsExhausted as error:
            return TryResult(Outcome.TRUNK_FAILURE, f"no RTP port free: {error}"), None
        transport = trunk.transport.upper()
        peer = (trunk.host, trunk.port)
        offer = build_offer(self._media.host, media.local_port, self._media.codecs, TELEPHONE_EVENT_PT,
                            session_id=secrets.randbits(31), session_version=1)
        call_id = f"{secrets.token_hex(12)}@centralita"
        from_tag = new_tag()
        answered: OutboundCall | None = None
        try:
            result, answered = await self._ring(number, trunk, transport, peer, offer, media,
                                                call_id, from_tag, ring_seconds)
            return result, answered
        finally:
            if answered is None:
                media.close()

    async def _ring(self, number: str, trunk: TrunkSettings, transport: str, peer: Address,
                    offer: SessionDescription, media: MediaLeg, call_id: str, from_tag: str,
                    ring_seconds: float) -> tuple[TryResult, OutboundCall | None]:
        loop = asyncio.get_running_loop()
        attempt = self._send_invite(number, trunk, transport, peer, offer, call_id, from_tag, 1)
        deadline = loop.time() + ring_seconds
        challenged = False
        provisional = False
        try:
            while True:
                try:  # asyncio.timeout, not wait_for: 3.11's wait_for can lose a cancellation
                    async with asyncio.timeout_at(deadline):
                        response = await attempt.responses.get()
                except TimeoutError:
                    if not provisional:
                        self._endpoint.forget_client(attempt.sent)
                        return TryResult(Outcome.TRUNK_FAILURE, f"trunk {trunk.name} did not "
                                         f"answer the INVITE within {ring_seconds:g} s", call_id), None
                    return await self._give_up_ringing(attempt, trunk, transport, peer, media,
                                                       call_id, number, ring_seconds)
                if response is None:
                    return TryResult(Outcome.TRUNK_FAILURE,
                                     f"trunk {trunk.name} unreachable (no response)", call_id), None
                status = response.status
                if status < 200:
                    provisional = True
                    continue
                if status < 300:
                    return self._answered(attempt, response, trunk, transport, peer, media, offer,
                                          call_id, number)
                if status in (401, 407) and not challenged and trunk.username is not None:
                    challenged = True
                    header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
                    challenge = select_challenge(response.headers.get_all(header))
                    if challenge is None:
                        return TryResult(Outcome.TRUNK_FAILURE, f"trunk {trunk.name} sent {status} "
                                         "with no digest challenge we can answer", call_id), None
                    attempt = self._send_invite(number, trunk, transport, peer, offer, call_id,
                                                from_tag, attempt.invite.cseq[0] + 1,
                                                (status, challenge))
                    deadline = loop.time() + ring_seconds
                    provisional = False
                    continue
                return _refusal(trunk, response, call_id), None
        except asyncio.CancelledError:
            # The try was called off (the request cancelled, the server stopping): stop ringing.
            if attempt.ack is None:
                if provisional:
                    self._endpoint.cancel(attempt.sent)
                self._endpoint.forget_client(attempt.sent)
            raise

    def _send_invite(self, number: str, trunk: TrunkSettings, transport: str, peer: Address,
                     offer: SessionDescription, call_id: str, from_tag: str, cseq: int,
                     challenge: tuple[int, str] | None = None) -> _Attempt:
        local_host, local_port = self._endpoint.local_address(transport)
        domain = trunk.domain or trunk.host
        target = Uri("sip", user=number, host=domain, port=None if trunk.domain else trunk.port)
        caller = Uri("sip", user=trunk.caller_id, host=domain if trunk.domain else local_host,
                     port=None if trunk.domain else local_port)
        headers = Headers()
        headers.add("Via", self._endpoint.via(transport))
        headers.add("Max-Forwards", "70")
        headers.add("From", str(NameAddress(caller, None, {"tag": from_tag})))
        headers.add("To", str(NameAddress(target)))
        headers.add("Call-ID", call_id)
        headers.add("CSeq", f"{cseq} INVITE")
        headers.add("Contact", str(self._endpoint.contact(transport, trunk.caller_id)))
        headers.add("Allow", ALLOW)
        if challenge is not None:
            status, text = challenge
            assert trunk.username is not None and trunk.password is not None
            credentials = authorize(text, "INVITE", str(target), trunk.username, trunk.password,
                                    secrets.token_hex(8))
            headers.add("Authorization" if status == 401 else "Proxy-Authorization", credentials)
        headers.add("Content-Type", SDP)
        invite = Request("INVITE", target, headers, offer.to_bytes())
        responses: asyncio.Queue[Response | None] = asyncio.Queue()
        attempt = _Attempt(invite, responses)

        def on_response(response: Response | None) -> None:
            if response is not None and 200 <= response.status < 300 and attempt.ack is not None:
                self._endpoint.send_raw(attempt.ack, peer, transport)  # a retransmitted 2xx
                return
            responses.put_nowait(response)

        attempt.key = self._endpoint.send_request(invite, peer, transport, on_response)
        return attempt

    def _acknowledge(self, attempt: _Attempt, response: Response, transport: str,
                     peer: Address) -> Dialog:
        dialog = Dialog.as_uac(attempt.invite, response)
        ack = dialog.create_ack(attempt.invite.cseq[0])
        ack.add_header("Via", self._endpoint.via(transport), first=True)
        attempt.ack = ack
        self._endpoint.send_raw(ack, peer, transport)
        return dialog

    def _answered(self, attempt: _Attempt, response: Response, trunk: TrunkSettings, transport: str,
                  peer: Address, media: MediaLeg, offer: SessionDescription, call_id: str,
                  number: str) -> tuple[TryResult, OutboundCall | None]:
        dialog = self._acknowledge(attempt, response, transport, peer)
        call = OutboundCall(call_id, number, trunk.name, dialog, media, peer, transport)
        self._calls[dialog.key] = call
        try:
            negotiation = accept_answer(offer, parse_sdp(response.body))
        except SdpError as error:
            log.warning("outbound call %s: unusable answer from trunk %s: %s", call_id, trunk.name, error)
            self.hang_up(call, "bad_answer")
            return TryResult(Outcome.TRUNK_FAILURE, f"unusable SDP answer: {error}", call_id), None
        media.configure((negotiation.remote_address, negotiation.remote_port),
                        codec=negotiation.codec.encoding.upper(), payload_type=negotiation.payload_type,
                        telephone_event_payload_type=negotiation.telephone_event_pt)
        return TryResult(Outcome.ANSWERED, f"answered through trunk {trunk.name}", call_id), call

    async def _give_up_ringing(self, attempt: _Attempt, trunk: TrunkSettings, transport: str,
                               peer: Address, media: MediaLeg, call_id: str, number: str,
                               ring_seconds: float) -> tuple[TryResult, OutboundCall | None]:
        """Rang out: CANCEL, and wait for the INVITE to end; a 2xx that crossed the CANCEL is
        ACKed and hung up, so nobody is left on a line no one listens to."""
        self._endpoint.cancel(attempt.sent)
        no_answer = TryResult(Outcome.NO_ANSWER, f"no answer within {ring_seconds:g} s", call_id)
        loop = asyncio.get_running_loop()
        until = loop.time() + CANCEL_GRACE_SECONDS
        while (left := until - loop.time()) > 0:
            try:
                async with asyncio.timeout(left):
                    response = await attempt.responses.get()
            except TimeoutError:
                break
            if response is None or response.status >= 300:
                return no_answer, None
            if response.status >= 200:
                dialog = self._acknowledge(attempt, response, transport, peer)
                late = OutboundCall(call_id, number, trunk.name, dialog, media, peer, transport)
                self._calls[dialog.key] = late
                self.hang_up(late, "answered_after_cancel")
                return no_answer, None
        self._endpoint.forget_client(attempt.sent)
        return no_answer, None

    # -- ending ---------------------------------------------------------------------
    def hang_up(self, call: OutboundCall, cause: str) -> None:
        """BYE the trunk (unless it hung up first) and free the media."""
        if self._calls.pop(call.dialog.key, None) is None:
            return
        call.end_cause = cause
        request = call.dialog.create_request("BYE")
        request.add_header("Via", self._endpoint.via(call.transport), first=True)
        self._endpoint.send_request(request, call.peer, call.transport, None)
        call.dialog.terminate()
        call.media.close()
        call.ended.set()

    def on_bye(self, key: TransactionKey, request: Request, source: Address, transport: str) -> bool:
        """The trunk hung up one of our calls: True when the BYE was for one of them."""
        call = self._calls.get(dialog_key_of(request, we_are_uas=True))
        if call is None:
            return False
        refusal = call.dialog.receive_request(request)
        if refusal is not None:
            self._endpoint.respond(key, make_response(request, refusal))
            return True
        self._endpoint.respond(key, make_response(request, 200))
        del self._calls[call.dialog.key]
        call.end_cause = "customer_hangup"
        call.dialog.terminate()
        call.media.close()
        call.ended.set()
        return True

    def close_all(self) -> None:
        for call in list(self._calls.values()):
            self.hang_up(call, "shutdown")


def _refusal(trunk: TrunkSettings, response: Response, call_id: str) -> TryResult:
    status = response.status
    detail = f"{status} {response.reason} from trunk {trunk.name}"
    if status in BUSY:
        return TryResult(Outcome.BUSY, detail, call_id)
    if status in INVALID_NUMBER:
        return TryResult(Outcome.INVALID_NUMBER, detail, call_id)
    if status in NO_ANSWER:
        return TryResult(Outcome.NO_ANSWER, detail, call_id)
    return TryResult(Outcome.TRUNK_FAILURE, detail, call_id)
