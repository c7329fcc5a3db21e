"""The agent page, `/agent/`: sign-in, state changes and a live event stream for one agent.

An agent signs in with their extension and SIP password and gets a session token, which
every other request presents (``Authorization: Bearer``, compared in constant time, as
the API's token is). A wrong password and an unknown extension get the same answer.
One session per agent: a second sign-in takes over, and the first page is told so on
its event stream, which then closes. The stream is a WebSocket of JSON documents (the
agent's state, the call offered with its screen-pop, wrap-up time), fed by the server's
event bus: nothing polls. The agent's recent calls are read from the call records.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from events import AgentOffered, AgentStateChanged, EventBus, QueueCallEnded
from pbx.store import CallRecord, Store
from router import AgentState, Router, RouterError, UnknownAgent

log = logging.getLogger("pbx.agent_desk")

STATIC = Path(__file__).parent / "static"
PHONE_BUNDLE = STATIC / "vendor" / "jssip.min.js"
SIGN_IN_REFUSED = "wrong extension or password"
BREAK_REASON_MAX = 64
RECENT_CALLS = 20
_FIRST_MESSAGE_TIMEOUT = 10.0

PasswordOf = Callable[[str], "str | None"]


@dataclass(frozen=True)
class SignInLimits:
    """Failed sign-ins from one address within `window` seconds that get it refused (429)
    for `block_seconds`: the SIP side's `sip.protection` numbers, for password guessing."""

    failures: int = 10
    window: float = 60.0
    block_seconds: float = 300.0


@dataclass
class _Session:
    extension: str
    token: str
    sockets: set[web.WebSocketResponse] = field(default_factory=set)


class AgentDesk:
    """Sessions of signed-in agents and what their pages are told."""

    def __init__(self, router: Router, password_of: PasswordOf, events: EventBus,
                 sip_websocket: Callable[[], tuple[str, int] | None],
                 limits: SignInLimits = SignInLimits(), clock: Callable[[], float] = time.monotonic,
                 webrtc_media: bool = True) -> None:
        """``sip_websocket`` gives the SIP WebSocket listener's scheme and port (ws, wss);
        ``webrtc_media`` says whether the media engine bridges WebRTC (rtpengine)."""
        self.webrtc_media = webrtc_media
        self.limits = limits
        self.clock = clock
        self._failures: dict[str, list[float]] = {}  # address -> recent failed sign-ins
        self._blocked_until: dict[str, float] = {}
        self.router = router
        self.password_of = password_of
        self.sip_websocket = sip_websocket
        self.sessions: dict[str, _Session] = {}  # extension -> its one session
        self._tasks: set[asyncio.Task[None]] = set()
        events.subscribe(self._on_event, AgentStateChanged, AgentOffered, QueueCallEnded)

    # -- sign-in ---------------------------------------------------------------------
    def sign_in(self, extension: str, password: str, source: str) -> _Session:
        now = self.clock()
        blocked_until = self._blocked_until.get(source)
        if blocked_until is not None and now < blocked_until:
            raise web.HTTPTooManyRequests(
                text=_error("too_many_failures", "too many failed sign-ins from this address: try later"),
                content_type="application/json", headers={"Retry-After": str(int(blocked_until - now) + 1)})
        expected = self.password_of(extension)
        # Compare even when the extension is unknown, so the answer's timing says nothing.
        matches = hmac.compare_digest(password.encode(), (expected or secrets.token_hex(16)).encode())
        if expected is None or not matches:
            self._failed(source, now)
            raise web.HTTPUnauthorized(text=_error("unauthorized", SIGN_IN_REFUSED),
                                       content_type="application/json")
        try:
            self.router.agent(extension)
        except UnknownAgent:
            raise web.HTTPForbidden(text=_error("not_an_agent", f"extension {extension} is not an agent"),
                                    content_type="application/json") from None
        previous = self.sessions.get(extension)
        session = _Session(extension, secrets.token_urlsafe(24))
        self.sessions[extension] = session
        if previous is not None:
            log.info("agent %s signed in again: the earlier page is taken over", extension)
            self._send_all(previous, {"type": "taken_over",
                                      "message": "signed in on another page"}, close=True)
        return session

    def _failed(self, source: str, now: float) -> None:
        recent = [at for at in self._failures.get(source, ()) if now - at < self.limits.window]
        recent.append(now)
        if len(recent) >= self.limits.failures:
            log.warning("agent page: %d failed sign-ins from %s: refused for %.0f s", len(recent), source,
                        self.limits.block_seconds)
            self._blocked_until[source] = now + self.limits.block_seconds
            recent = []
        self._failures[source] = recent
        for address in [a for a, until in self._blocked_until.items() if until <= now]:
            del self._blocked_until[address]  # kept small: only live blocks
        if len(self._failures) > 10_000:
            self._failures.clear()

    def session_of(self, request: web.Request) -> _Session:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        session = self._session_for(presented.strip()) if scheme.lower() == "bearer" else None
        if session is None:
            raise web.HTTPUnauthorized(text=_error("unauthorized", "sign in again"),
                                       content_type="application/json")
        return session

    def _session_for(self, token: str) -> _Session | None:
        for session in self.sessions.values():
            if token and hmac.compare_digest(token.encode(), session.token.encode()):
                return session
        return None

    # -- what a page is told -----------------------------------------------------------
    def state_of(self, extension: str) -> dict[str, Any]:
        snapshot = self.router.agent(extension)
        return {"type": "state", "extension": extension, "name": snapshot.profile.name,
                "state": snapshot.state.value, "reason": snapshot.reason,
                "queues": list(snapshot.queues), "reachable": snapshot.reachable,
                "pending": snapshot.pending}

    def _on_event(self, event: object) -> None:
        if isinstance(event, AgentStateChanged):
            session = self.sessions.get(event.agent)
            if session is not None:
                self._send_all(session, self.state_of(event.agent))
        elif isinstance(event, AgentOffered):
            session = self.sessions.get(event.agent)
            if session is not None:
                self._send_all(session, {"type": "offer", "call_id": event.call_id, "queue": event.queue,
                                         "caller": event.caller, "context": _jsonable(event.context)})
        elif isinstance(event, QueueCallEnded) and event.agent:
            session = self.sessions.get(event.agent)
            if session is not None:
                try:
                    wrap_up = self.router.queue(event.queue).wrap_up_seconds
                except RouterError:
                    wrap_up = 0.0
                self._send_all(session, {"type": "call_ended", "call_id": event.call_id,
                                         "queue": event.queue, "wrap_up_seconds": wrap_up})

    def _send_all(self, session: _Session, document: dict[str, Any], *, close: bool = False) -> None:
        text = json.dumps(document)
        for socket in list(session.sockets):
            self._run(_send(socket, text, close))
        if close:
            session.sockets.clear()

    def _run(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for session in self.sessions.values():
            for socket in list(session.sockets):
                await socket.close()
        self.sessions.clear()


async def _send(socket: web.WebSocketResponse, text: str, close: bool) -> None:
    try:
        await socket.send_str(text)
        if close:
            await socket.close(code=4001, message=b"taken over")
    except (ConnectionError, RuntimeError):
        pass  # the page went away; its socket's handler cleans up


def _error(code: str, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message}})


def _jsonable(value: object) -> Any:
    return json.loads(json.dumps(value, default=str))


def _recent_call(record: CallRecord) -> dict[str, Any]:
    return {"call_id": record.call_id, "caller": record.caller, "queue": record.queue,
            "started": record.started.isoformat(),
            "answered": record.answered.isoformat() if record.answered else None,
            "ended": record.ended.isoformat() if record.ended else None,
            "disposition": record.disposition, "talk_seconds": record.talk_seconds}


def create_agent_desk(desk: AgentDesk, store: Store) -> web.Application:
    """The page and its routes, for ``app.add_subapp("/agent", ...)``; ``store`` holds the
    call records an agent's recent calls are read from."""

    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def phone(request: web.Request) -> web.StreamResponse:
        if not PHONE_BUNDLE.is_file():
            return web.Response(status=503, content_type="application/javascript",
                                text="console.error('the SIP phone of this page is not built: "
                                     "run scripts/build-agent-page on the server');\n")
        return web.FileResponse(PHONE_BUNDLE)

    async def sign_in(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            extension, password = str(body["extension"]), str(body["password"])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": {"code": "bad_request",
                                                "message": "send JSON with extension and password"}},
                                     status=400)
        session = desk.sign_in(extension, password, request.remote or "")
        host = request.url.host or "127.0.0.1"
        listener = desk.sip_websocket()
        url = f"{listener[0]}://{host}:{listener[1]}" if listener is not None else None
        return web.json_response({"token": session.token, "extension": extension,
                                  "sip_websocket": url, "sip_domain": host, "webrtc_media": desk.webrtc_media,
                                  **desk.state_of(extension)})

    async def change_state(request: web.Request) -> web.Response:
        session = desk.session_of(request)
        try:
            body = await request.json()
            wanted = str(body["state"])
            reason = str(body.get("reason") or "").strip()
        except (ValueError, KeyError, TypeError, AttributeError):
            return web.json_response({"error": {"code": "bad_request", "message": "send JSON with state"}},
                                     status=400)
        router, extension = desk.router, session.extension
        try:
            current = router.agent(extension).state
            if wanted == "available":
                if current is AgentState.OFFLINE:
                    router.login(extension)
                elif current is AgentState.WRAP_UP:
                    router.end_wrap_up(extension)
                elif current is AgentState.BREAK:
                    router.end_break(extension)
            elif wanted == "break":
                if not reason or len(reason) > BREAK_REASON_MAX:
                    return web.json_response({"error": {"code": "bad_request", "message":
                                              f"a break needs a reason of 1 to {BREAK_REASON_MAX} characters"}},
                                             status=400)
                if current is AgentState.OFFLINE:
                    router.login(extension)
                router.start_break(extension, reason)
            elif wanted == "offline":
                router.logout(extension)
            else:
                return web.json_response({"error": {"code": "bad_request", "message":
                                          "state is one of available, break, offline"}}, status=400)
        except RouterError as exc:
            return web.json_response({"error": {"code": "conflict", "message": str(exc)}}, status=409)
        return web.json_response(desk.state_of(extension))

    async def sign_out(request: web.Request) -> web.Response:
        session = desk.session_of(request)
        if desk.sessions.get(session.extension) is session:
            del desk.sessions[session.extension]
        try:
            desk.router.logout(session.extension)
        except RouterError:
            pass  # on a call: the router logs the agent out when it ends
        return web.json_response({"signed_out": session.extension})

    async def recent_calls(request: web.Request) -> web.Response:
        # From the call records, so a reload or a new sign-in shows them; only the agent's own.
        session = desk.session_of(request)
        records = await store.call_records(agent=session.extension, limit=RECENT_CALLS, newest_first=True)
        return web.json_response({"calls": [_recent_call(record) for record in records]})

    async def event_stream(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(heartbeat=20.0)
        await socket.prepare(request)
        # The token comes as the first message: a browser cannot set headers on a WebSocket,
        # and a token in the URL would end up in logs.
        try:
            first = await socket.receive(timeout=_FIRST_MESSAGE_TIMEOUT)
            token = str(json.loads(first.data)["token"]) if first.type == WSMsgType.TEXT else ""
        except (TimeoutError, ValueError, KeyError, TypeError):
            token = ""
        session = desk._session_for(token)
        if session is None:
            await socket.send_str(json.dumps({"type": "unauthorized", "message": "sign in again"}))
            await socket.close(code=4401, message=b"unauthorized")
            return socket
        session.sockets.add(socket)
        try:
            await socket.send_str(json.dumps(desk.state_of(session.extension)))
            async for _ in socket:
                pass  # the page only listens
        finally:
            session.sockets.discard(socket)
        return socket

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/phone.js", phone)
    app.router.add_post("/session", sign_in)
    app.router.add_delete("/session", sign_out)
    app.router.add_post("/state", change_state)
    app.router.add_get("/calls", recent_calls)
    app.router.add_get("/events", event_stream)
    app.router.add_static("/static/", STATIC, append_version=False)
    return app
