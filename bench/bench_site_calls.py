"""A call that crosses sites against a local one: setup time and the servers' CPU per call.

Starts two real `pbx serve --site` processes (madrid, bogota) on loopback with the demo
contact center (a PostgreSQL database created for the run and dropped afterwards, the
Mosquitto at ``--url``); extension 100 queues every caller at once into `general`, which
allows bogota's agents (`sites: [bogota]`) and has no wrap-up. Callers are raw UDP phones
calling madrid one after another; the agent is a raw UDP phone that answers at once:

* local: agent 1001 registered with madrid (madrid's own agent);
* cross-site: agent 1006 registered with bogota, nobody at madrid: madrid asks bogota
  over the bus, calls bogota's server, which rings 1006.

Each call: INVITE to 100 (answered by the IVR), then timed until the agent's phone gets
its INVITE (setup), held 0.5 s, hung up by the caller; the agent is available again
before the next. Reports setup p50/p99 and each server's CPU (user + system, /proc) per
call, for both modes.

Run: ``.venv/bin/python bench/bench_site_calls.py [--url mqtt://127.0.0.1:1883]
[--postgres postgresql://postgres@127.0.0.1:5432] [--count 40]``.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import yaml
from site_bench import REPO_ROOT, PbxServer, cpu_seconds, describe, main, site_up, start_site, until

from integration.call_peers import Caller, agent_state, offer, reply
from peers import raw

FLOW = REPO_ROOT / "tests" / "integration" / "flows" / "straight_to_general.yaml"


class AnsweringPhone:
    """An agent's phone that answers every INVITE at once and notes when each came."""

    def __init__(self, server: PbxServer, user: str) -> None:
        self.user = user
        self.peer = raw.UdpPeer((server.host, server.sip_port))
        self.contact = f"<sip:{user}@{self.peer.local[0]}:{self.peer.local[1]}>"
        result = raw.register(self.peer, user, f"demo{user}", expires=3600, contact=self.contact)
        assert result.final is not None and result.final.status == 200, result
        self.invited = threading.Event()
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            message = self.peer.recv(0.2)
            if message is None or message.is_response:
                continue
            if message.method == "INVITE":
                self.invited.set()
                self.peer.send(reply(message, 200, "OK", tag="agent", body=offer(40000),
                                     contact=self.contact))
            elif message.method in ("BYE", "CANCEL", "OPTIONS"):
                self.peer.send(reply(message, 200, "OK", tag="agent"))

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        # Unregistered, so the agent is offline and takes no call of the next mode.
        raw.register(self.peer, self.user, f"demo{self.user}", expires=0, contact=self.contact)
        self.peer.close()


def calls(madrid: PbxServer, agent_site: PbxServer, agent: str, count: int,
          servers: list[PbxServer]) -> tuple[list[float], list[float]]:
    phone = AnsweringPhone(agent_site, agent)
    try:
        until(lambda: agent_state(agent_site, agent) == "available", 10)
        if agent_site is not madrid:
            until(lambda: madrid.healthz()["bus"]["remote_agents"].get(agent) == "available", 10)
        setups: list[float] = []
        before = [cpu_seconds(server.process.pid) for server in servers]
        for _ in range(count):
            phone.invited.clear()
            caller = Caller(madrid, "100")
            started = time.monotonic()
            caller.answered()
            if not phone.invited.wait(10):
                raise RuntimeError("the agent's phone was never rung")
            setups.append(time.monotonic() - started)
            time.sleep(0.5)
            caller.bye()
            caller.close()
            until(lambda: agent_state(agent_site, agent) == "available", 10)
        cpu = [(cpu_seconds(server.process.pid) - b) / count for server, b in zip(servers, before, strict=True)]
        return setups, cpu
    finally:
        phone.close()
        until(lambda: agent_state(agent_site, agent) == "offline", 10)


def run(args: argparse.Namespace, workdir: Path, config_text: str) -> None:
    config = yaml.safe_load(config_text)
    config["extensions"]["100"] = {"application": "ivr", "flow": str(FLOW)}
    general = next(q for q in config["queues"] if q["name"] == "general")
    general.update(sites=["bogota"], wrap_up_seconds=0)
    for agent in config["agents"]:
        agent["languages"] = sorted(set(agent["languages"]) | {"en"})
    text = yaml.safe_dump(config, sort_keys=False)
    madrid = start_site(workdir, text, "madrid")
    bogota = start_site(workdir, text, "bogota")
    try:
        until(lambda: site_up(madrid, "bogota"), 10)
        for label, site, agent in (("local (madrid's agent)", madrid, "1001"),
                                   ("cross-site (bogota's agent)", bogota, "1006")):
            setups, cpu = calls(madrid, site, agent, args.count, [madrid, bogota])
            print(f"{label}: setup (INVITE to 100 -> agent's phone rung) {describe(setups)}; "
                  f"CPU per call: madrid {cpu[0] * 1000:.1f} ms, bogota {cpu[1] * 1000:.1f} ms")
    finally:
        bogota.stop()
        madrid.stop()


if __name__ == "__main__":
    main(__doc__, run, count=(40, "calls per mode"))
