"""Hang-up races, reproduced deterministically on the whole server run in this process: the
caller's BYE is fed to the endpoint at the exact moment of the race (from an event the
server publishes), through the same parsing, transaction and dialog code as any BYE.

- A caller hanging up just as a prompt starts: the IVR records an abandon, no traceback.
- A caller hanging up while the agent's leg is being opened: an abandon, not the agent's
  failure (no ReservationFailed, no "unknown or finished reservation").

test_hangup_races_sipp.py times the BYE with SIPp instead, over the wire.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from events import routing as router_events
from events.ivr import IvrFinished, IvrNodeEntered
from integration.call_peers import QUEUE_FLOW, Caller, offer, random_port_range
from integration.server_fixture import default_config_yaml
from pbx.configuration.server import load_config
from pbx.server import Server
from peers import raw
from peers.procs import free_port

pytestmark = pytest.mark.integration


class InProcessServer:
    """What Caller needs of a server (host, ports), plus the Server object itself."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.host = "127.0.0.1"
        self.sip_port = server.transports.local["UDP"].port
        self.sip_address = f"{self.host}:{self.sip_port}"


async def start_server(tmp_path: Path) -> InProcessServer:
    first, last = random_port_range(200)
    path = tmp_path / "config.yaml"
    path.write_text(default_config_yaml(
        sip={"listen": [f"udp:127.0.0.1:{free_port(udp=True)}"]},
        http={"listen": f"127.0.0.1:{free_port()}"},
        media={"port_min": first, "port_max": last},
        extensions={"100": {"application": "ivr", "flow": "demo"},
                    "102": {"application": "ivr", "flow": str(QUEUE_FLOW)}},
        queues=[{"name": "general", "wrap_up_seconds": 0, "ring_timeout_seconds": 30}],
    ))
    server = Server(load_config(path, var_dir=tmp_path / "var"), var_dir=tmp_path / "var")
    await server.start()
    return InProcessServer(server)


def feed_bye(server: Server, caller: Caller) -> None:
    """The caller's BYE, handed to the endpoint as the transport would."""
    call = next(c for c in server.calls.calls.values() if c.call_id == caller.dialog.call_id)
    assert call.caller_leg is not None
    host, port = caller.peer.local
    bye = raw.build_request("BYE", caller.aor, caller.peer, from_uri=f"sip:5550100@{host}",
                            to_uri=caller.aor, state=caller.dialog, to_tag=call.caller_leg.local_tag)
    server.endpoint.receive(bye, (host, port), "UDP")


async def place_call(caller: Caller) -> None:
    def call() -> None:
        caller.invite(offer())
        answer = caller.final()
        assert answer.status == 200, answer.start_line
        caller.ack()
    await asyncio.get_running_loop().run_in_executor(None, call)


async def wait_until(predicate: Callable[[], bool], timeout: float = 15) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.05)
    await asyncio.wait_for(poll(), timeout)


async def disposition(server: Server, call_id: str) -> str:
    assert server.recorder is not None and server.store is not None
    for _ in range(200):
        await server.recorder.flush()
        records = await server.store.call_records(call_id=call_id)
        if records:
            return records[0].disposition
        await asyncio.sleep(0.05)
    raise AssertionError(f"no call record for {call_id}")


def no_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records
            if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.parametrize("node", ["choose_language", "welcome"])
async def test_hang_up_as_a_prompt_starts(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                          node: str) -> None:
    caplog.set_level(logging.INFO)
    running = await start_server(tmp_path)
    server = running.server
    caller = Caller(running, "100")
    finished: list[IvrFinished] = []
    try:
        server.events.subscribe(finished.append, IvrFinished)
        if node != "choose_language":
            # English pressed before the language prompt: the flow goes on to the welcome.
            server.events.subscribe(
                lambda event: server.calls._answered[event.call_id].digits.put_nowait("1")
                if event.node == "choose_language" else None, IvrNodeEntered)
        # The BYE arrives between entering the node and starting its prompt.
        server.events.subscribe(lambda event: feed_bye(server, caller) if event.node == node else None,
                                IvrNodeEntered)
        await place_call(caller)
        await wait_until(lambda: bool(finished))
        assert [event.outcome for event in finished] == ["abandoned"]
        assert await disposition(server, caller.dialog.call_id) == "abandoned"
        await wait_until(lambda: not any(server.calls.resources().values()))
    finally:
        caller.close()
        await server.stop()
    assert no_errors(caplog) == []


@pytest.mark.parametrize("moment", ["before_dialling", "while_opening_the_leg"])
async def test_hang_up_while_the_agents_leg_is_opened(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                      moment: str) -> None:
    caplog.set_level(logging.INFO)
    running = await start_server(tmp_path)
    server = running.server
    loop = asyncio.get_running_loop()
    agent = raw.UdpPeer((running.host, running.sip_port))
    caller = Caller(running, "102")
    seen: list[router_events.Event] = []
    try:
        contact = f"<sip:1001@{agent.local[0]}:{agent.local[1]}>"
        registered = await loop.run_in_executor(
            None, lambda: raw.register(agent, "1001", "demo1001", expires=300, contact=contact))
        assert registered.final is not None and registered.final.status == 200
        await wait_until(lambda: server.router.agent("1001").state.value == "available")
        server.events.subscribe(seen.append, router_events.ReservationFailed,
                                router_events.CallAbandoned)

        def hang_up_at_the_reservation(event: router_events.AgentReserved) -> None:
            # Callbacks run in order: one hop lands before the task that dials the agent
            # starts, two hops land while it waits for the agent leg's RTP socket.
            bye = lambda: feed_bye(server, caller)  # noqa: E731
            if moment == "before_dialling":
                loop.call_soon(bye)
            else:
                loop.call_soon(loop.call_soon, bye)

        server.events.subscribe(hang_up_at_the_reservation, router_events.AgentReserved)
        await place_call(caller)
        await wait_until(lambda: any(isinstance(e, router_events.CallAbandoned) for e in seen))
        assert [type(e).__name__ for e in seen] == ["CallAbandoned"]
        assert await disposition(server, caller.dialog.call_id) == "abandoned"
        await wait_until(lambda: server.router.agent("1001").state.value == "available")
        await wait_until(lambda: not any(server.calls.resources().values())
                         and not any(server.queues.resources().values()))
    finally:
        caller.close()
        agent.close()
        await server.stop()
    assert no_errors(caplog) == []
    assert not [r for r in caplog.records if "unknown or finished reservation" in r.getMessage()]
    assert not [r for r in caplog.records if "did not take it" in r.getMessage()]
