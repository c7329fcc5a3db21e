"""One site on the MQTT bus in its own process, driven over stdin/stdout (JSON lines).

Run as ``python bus_site_process.py URL PREFIX SITE SITES AGENTS`` where SITES is
``madrid,bogota`` and AGENTS ``1001=madrid,2001=bogota``. It publishes its own agents
as available, reserves them for other sites like a router would (the first available
one, or the one asked for; released when the asker cancels), prints every bus event
as a JSON line, and obeys commands read from stdin:

    {"op": "publish", "agent": "2001", "presence": "on_call"}
    {"op": "reserve", "to": "madrid", "call_id": "c1", "queue": "billing", "timeout": 1.0}
    {"op": "refuse", "on": true}            # refuse every reservation from now on
    {"op": "close"}

The driver, :class:`SiteProcess`, is at the bottom.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pbx.bus import (
    AgentPresence,
    CallerContext,
    MqttSiteBus,
    ReservationCancel,
    ReservationDecision,
    ReservationRequest,
    Topics,
)


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **_plain(fields)}), flush=True)


async def run_site(url: str, prefix: str, site: str, sites: list[str],
                   agent_sites: dict[str, str]) -> None:
    def emit(event: object) -> None:
        assert dataclasses.is_dataclass(event) and not isinstance(event, type)
        say(type(event).__name__, **dataclasses.asdict(event))

    bus = MqttSiteBus(url, site, sites, agent_sites, topics=Topics(prefix), emit=emit,
                      heartbeat_interval=0.5, reconnect_delays=(0.1, 1.0))
    own = {agent: AgentPresence.AVAILABLE for agent, owner in agent_sites.items()
           if owner == site}
    reservations: dict[str, str] = {}
    refusing = False

    def decide(request: ReservationRequest) -> ReservationDecision:
        if refusing:
            return ReservationDecision(None, "refusing")
        candidates = [request.agent] if request.agent else sorted(own)
        for agent in candidates:
            if own.get(agent) is AgentPresence.AVAILABLE:
                own[agent] = AgentPresence.RESERVED
                reservations[request.reservation_id] = agent
                bus.publish_agent(agent, AgentPresence.RESERVED)
                say("decided", reservation_id=request.reservation_id, agent=agent,
                    caller=dataclasses.asdict(request.caller), from_site=request.from_site)
                return ReservationDecision(agent)
        return ReservationDecision(None, "no agent available")

    def release(cancel: ReservationCancel) -> None:
        agent = reservations.pop(cancel.reservation_id, None)
        if agent is not None:
            own[agent] = AgentPresence.AVAILABLE
            bus.publish_agent(agent, AgentPresence.AVAILABLE)
            say("released", reservation_id=cancel.reservation_id, agent=agent,
                reason=cancel.reason)

    bus.serve_reservations(decide, release)
    for agent, presence in own.items():
        bus.publish_agent(agent, presence)
    await bus.start()
    await bus.wait_connected(10)
    say("ready", site=site)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        op = command["op"]
        if op == "publish":
            presence = AgentPresence(command["presence"])
            own[command["agent"]] = presence
            bus.publish_agent(command["agent"], presence)
        elif op == "refuse":
            refusing = bool(command["on"])
        elif op == "reserve":
            result = await bus.reserve(
                command["to"], command["call_id"], command.get("queue", "billing"),
                CallerContext(tuple(command.get("ivr_path", ())), command.get("language"),
                              command.get("priority", 0), command.get("enqueued_at", 0.0)),
                command.get("timeout", 1.0), command.get("agent"))
            say("result", **dataclasses.asdict(result))
        elif op == "close":
            break
    await bus.close()
    say("closed", site=site)


def main(argv: list[str]) -> None:
    url, prefix, site, sites, agents = argv
    agent_sites = dict(pair.split("=", 1) for pair in agents.split(","))
    asyncio.run(run_site(url, prefix, site, sites.split(","), agent_sites))


class SiteProcess:
    """Drives one site process: send commands, wait for the events it prints."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._matched: set[int] = set()

    @classmethod
    async def start(cls, url: str, prefix: str, site: str, sites: list[str],
                    agent_sites: dict[str, str]) -> SiteProcess:
        agents = ",".join(f"{agent}={owner}" for agent, owner in agent_sites.items())
        process = await asyncio.create_subprocess_exec(
            sys.executable, __file__, url, prefix, site, ",".join(sites), agents,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        site_process = cls(process)
        await site_process.wait_for(lambda event: event["event"] == "ready", 15)
        return site_process

    def send(self, **command: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")

    async def wait_for(self, wanted: Any, timeout: float) -> dict[str, Any]:
        """The first event not matched before for which ``wanted(event)`` holds."""
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                for index, event in enumerate(self.events):
                    if index not in self._matched and wanted(event):
                        self._matched.add(index)
                        return event
                line = await self.process.stdout.readline()
                if not line:
                    raise EOFError(f"site process exited {self.process.returncode}")
                self.events.append(json.loads(line))

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()

    async def finish(self) -> None:
        """Close it (if still running) and collect what it printed until it exited."""
        assert self.process.stdout is not None
        if self.process.returncode is None:
            self.send(op="close")
        try:
            async with asyncio.timeout(5):
                while line := await self.process.stdout.readline():
                    self.events.append(json.loads(line))
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


if __name__ == "__main__":
    main(sys.argv[1:])
