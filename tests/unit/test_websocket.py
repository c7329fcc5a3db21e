"""SIP over WebSocket (RFC 7118) in-process: listen addresses, framing, Via and the
connection reused for requests to a browser, with a real aiohttp WebSocket client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import ClientSession, WSMsgType
from unit.test_registrar import credentials_for, register

from events import EventBus
from pbx.configuration.server import ListenAddress, load_config, parse_listen_address
from pbx.edge.endpoint import SipEndpoint
from pbx.edge.transport import Transports
from pbx.edge.websocket import NO_WEBRTC_REASON
from pbx.registration.registrar import Registrar
from pbx.sip.digest import DigestAuthenticator
from pbx.sip.message import Request, make_response, parse_message
from pbx.sip.transaction import TimerConfig

OPTIONS = ("OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
           "Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK-ws-{n}\r\n"
           "From: <sip:1001@127.0.0.1>;tag=page\r\nTo: <sip:127.0.0.1>\r\n"
           "Call-ID: ws-{n}\r\nCSeq: {n} OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")


def test_ws_and_wss_listen_addresses_parse() -> None:
    assert parse_listen_address("ws:127.0.0.1:8088") == (ListenAddress("ws", "127.0.0.1", 8088),)
    assert parse_listen_address("wss:0.0.0.0:8089") == (ListenAddress("wss", "0.0.0.0", 8089),)


async def _server() -> tuple[Transports, SipEndpoint, int]:
    events = EventBus()
    endpoint: SipEndpoint | None = None

    def receive(data: bytes, source: tuple[str, int], transport: str) -> None:
        assert endpoint is not None
        endpoint.receive(data, source, transport)

    transports = Transports(receive, events=events)
    endpoint = SipEndpoint(transports, events, timers=TimerConfig(), user_agent="test")
    local = await transports.listen("ws", "127.0.0.1", 0)
    return transports, endpoint, local.port


async def test_requests_over_a_websocket_are_answered_on_it_and_our_requests_reuse_it() -> None:
    transports, endpoint, port = await _server()
    seen: list[tuple[str, str]] = []

    def options(key, request: Request, source, transport: str) -> None:
        seen.append((request.method, transport))
        endpoint.respond(key, make_response(request, 200))

    endpoint.handlers["OPTIONS"] = options
    try:
        async with ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{port}/", protocols=("sip",)) as socket:
                assert socket.protocol == "sip"
                # Two messages back to back, one a WebSocket message each, no Content-Length needed
                # for framing: each is answered on this connection.
                await socket.send_str(OPTIONS.format(n=1))
                await socket.send_bytes(OPTIONS.format(n=2).replace("Content-Length: 0\r\n", "").encode())
                answers = [parse_message((await socket.receive(timeout=5)).data.encode()) for _ in range(2)]
                assert sorted(a.call_id for a in answers) == ["ws-1", "ws-2"]
                assert all(a.status == 200 for a in answers)
                assert seen == [("OPTIONS", "WS"), ("OPTIONS", "WS")]

                # A request to the browser goes down its own connection, with our Via saying WS.
                (name, peer), = transports.connections
                assert name == "WS"
                # A page with no call is silent for long: the heartbeat, not the idle sweep, ends it.
                assert transports.close_overdue(transports.now() + 100_000) == 0
                assert endpoint.via("WS").startswith(f"SIP/2.0/WS 127.0.0.1:{port};branch=z9hG4bK")
                assert endpoint.contact("WS").uri.params == {"transport": "ws"}
                transports.send(b"OPTIONS sip:page@x.invalid;transport=ws SIP/2.0\r\n"
                                b"Content-Length: 0\r\n\r\n", peer, "WS")
                frame = await socket.receive(timeout=5)
                assert frame.type == WSMsgType.TEXT and frame.data.startswith("OPTIONS sip:page@")
            assert await _eventually(lambda: not transports.connections)
    finally:
        await transports.close()


async def test_a_websocket_without_the_sip_subprotocol_is_refused() -> None:
    transports, _, port = await _server()
    try:
        async with ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/") as response:
                assert response.status == 400
                assert "'sip' subprotocol" in await response.text()
    finally:
        await transports.close()


async def test_a_webrtc_offer_without_rtpengine_is_refused_with_the_reason() -> None:
    transports, endpoint, port = await _server()
    endpoint.handlers["INVITE"] = lambda *args: pytest.fail("the core must not see the offer")
    sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           "m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=rtpmap:0 PCMU/8000\r\n")
    invite = (OPTIONS.format(n=3).replace("OPTIONS sip:127.0.0.1", "INVITE sip:1002@127.0.0.1")
              .replace("3 OPTIONS", "3 INVITE").replace("Content-Length: 0\r\n\r\n", "")
              + f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}")
    try:
        async with ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{port}/", protocols=("sip",)) as socket:
                await socket.send_str(invite)
                answer = parse_message((await socket.receive(timeout=5)).data.encode())
                assert answer.status == 488
                assert NO_WEBRTC_REASON in (answer.headers.get("warning") or "")
    finally:
        await transports.close()


async def _eventually(predicate, timeout: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True



def test_a_closed_websocket_takes_its_registrations_with_it() -> None:
    config = load_config(None, var_dir=Path("var"))
    registrar = Registrar(config.accounts, DigestAuthenticator(config.sip.realm, b"secret", 300, ("MD5",)),
                          config.sip)
    changes: list[tuple[str, bool]] = []
    registrar.listeners.append(lambda user, registered: changes.append((user, registered)))
    page, phone = ("127.0.0.1", 50001), ("127.0.0.1", 40000)
    for user, source, transport in (("1001", page, "WS"), ("1002", phone, "UDP")):
        challenge = registrar.handle_register(register(user=user, contact=f"<sip:{user}@x.invalid>"),
                                              source, transport, 0.0)
        answer = registrar.handle_register(
            register(user=user, contact=f"<sip:{user}@x.invalid>", cseq=2,
                     authorization=credentials_for(challenge, user, f"demo{user}")), source, transport, 0.0)
        assert answer.status == 200
    assert registrar.connection_closed("WS", ("127.0.0.1", 50002), 1.0) == 0  # another page
    assert registrar.connection_closed("WS", page, 1.0) == 1
    assert registrar.bindings("1001", 1.0) == [] and len(registrar.bindings("1002", 1.0)) == 1
    assert changes[-1] == ("1001", False)


async def test_wss_carries_sip_over_tls_with_the_servers_certificate(tmp_path: Path) -> None:
    import ssl

    from pbx.configuration.server import TlsSettings
    from pbx.edge.tls import server_context

    events = EventBus()
    context = server_context(TlsSettings(), tmp_path, ["127.0.0.1"])
    received: list[str] = []
    transports = Transports(lambda data, source, transport: received.append(transport), events=events)
    with pytest.raises(ValueError, match="certificate"):
        await transports.listen("wss", "127.0.0.1", 0)
    local = await transports.listen("wss", "127.0.0.1", 0, context)
    client = ssl.create_default_context(cafile=str(tmp_path / "tls" / "sip-cert.pem"))
    try:
        async with ClientSession() as session:
            async with session.ws_connect(f"wss://127.0.0.1:{local.port}/", protocols=("sip",),
                                          ssl=client) as socket:
                await socket.send_str(OPTIONS.format(n=4).replace("SIP/2.0/WS ", "SIP/2.0/WSS "))
                assert await _eventually(lambda: received == ["WSS"])
    finally:
        await transports.close()


async def test_garbage_over_a_websocket_is_answered_and_the_connection_stays() -> None:
    transports, endpoint, port = await _server()
    endpoint.handlers["OPTIONS"] = lambda key, request, source, transport: endpoint.respond(
        key, make_response(request, 200))
    broken = OPTIONS.format(n=5).replace("CSeq: 5 OPTIONS", "CSeq: five OPTIONS")
    try:
        async with ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{port}/", protocols=("sip",)) as socket:
                await socket.send_str(broken)
                assert (await socket.receive(timeout=5)).data.startswith("SIP/2.0 400 ")
                await socket.send_str("\r\n\r\n")  # a keep-alive: nothing to answer
                await socket.send_str(OPTIONS.format(n=6))
                assert parse_message((await socket.receive(timeout=5)).data.encode()).status == 200
    finally:
        await transports.close()
