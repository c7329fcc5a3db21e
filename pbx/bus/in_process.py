"""The embedded site bus: sites in one process, through a tiny in-memory broker.

The broker keeps MQTT's semantics that the bus relies on (retained messages,
topic wildcards, a last will published when a client drops without saying
goodbye, delivery in order and never re-entrantly), so the single-process default
and tests behave as over Mosquitto.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping

from pbx.bus.codec import SiteState
from pbx.bus.site_bus import BusCore, Emit
from pbx.bus.topics import Topics


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest)."""
    wanted, levels = pattern.split("/"), topic.split("/")
    for index, level in enumerate(wanted):
        if level == "#":
            return True
        if index >= len(levels) or (level != "+" and level != levels[index]):
            return False
    return len(wanted) == len(levels)


class InProcessBroker:
    def __init__(self) -> None:
        self.retained: dict[str, bytes] = {}
        self._clients: dict[InProcessSiteBus, tuple[list[str], tuple[str, bytes]]] = {}
        self.running = True

    def connect(self, client: InProcessSiteBus, subscriptions: list[str],
                will: tuple[str, bytes]) -> None:
        if not self.running:
            raise ConnectionError("broker is down")
        self._clients[client] = (subscriptions, will)
        for topic, payload in list(self.retained.items()):
            if any(topic_matches(pattern, topic) for pattern in subscriptions):
                self._deliver(client, topic, payload, retained=True)

    def disconnect(self, client: InProcessSiteBus, clean: bool) -> None:
        entry = self._clients.pop(client, None)
        if entry is not None and not clean:
            topic, payload = entry[1]
            self.publish(topic, payload, retain=True)

    def publish(self, topic: str, payload: bytes, retain: bool) -> None:
        if retain:
            if payload:
                self.retained[topic] = payload
            else:
                self.retained.pop(topic, None)
        for client, (subscriptions, _) in list(self._clients.items()):
            if any(topic_matches(pattern, topic) for pattern in subscriptions):
                self._deliver(client, topic, payload, retained=False)

    def stop(self, forget_retained: bool = True) -> None:
        """The broker goes away: every client loses its connection."""
        self.running = False
        clients = list(self._clients)
        self._clients.clear()
        if forget_retained:
            self.retained.clear()
        for client in clients:
            client._broker_lost()

    def start(self) -> None:
        self.running = True

    @staticmethod
    def _deliver(client: InProcessSiteBus, topic: str, payload: bytes, retained: bool) -> None:
        # Never re-entrant: a handler that publishes does not recurse into handlers.
        asyncio.get_running_loop().call_soon(client._delivered, topic, payload, retained)


class InProcessSiteBus(BusCore):
    """One site on an :class:`InProcessBroker`; reconnects with backoff when it stops."""

    def __init__(self, broker: InProcessBroker, site: str, sites: Collection[str],
                 agent_sites: Mapping[str, str], *, topics: Topics | None = None,
                 emit: Emit | None = None, heartbeat_interval: float = 1.0,
                 reconnect_delays: tuple[float, float] = (0.05, 2.0),
                 sip_address: str | None = None,
                 **clocks: Callable[[], float]) -> None:
        super().__init__(site, sites, agent_sites, topics=topics, emit=emit,
                         heartbeat_interval=heartbeat_interval, sip_address=sip_address,
                         **clocks)
        self.broker = broker
        self._reconnect_delays = reconnect_delays
        self._runner: asyncio.Task[None] | None = None
        self._attached = False
        self._lost = asyncio.Event()

    async def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run())
        await asyncio.sleep(0)

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        if self._attached:
            self._send_status(SiteState.OFFLINE, "shutdown")
            self.broker.disconnect(self, clean=True)
            self._attached = False
        self._on_disconnected("closed")

    def crash(self) -> None:
        """The connection dies without a goodbye (tests): the broker sends the will."""
        if self._runner is not None:
            self._runner.cancel()
        self._attached = False
        self.broker.disconnect(self, clean=False)
        self._on_disconnected("crashed")

    async def _run(self) -> None:
        ticks = asyncio.get_running_loop().create_task(self.run_ticks())
        delay, longest = self._reconnect_delays
        try:
            while True:
                try:
                    self.broker.connect(self, self.topics.subscriptions(self.site),
                                        self.offline_status("connection lost"))
                except ConnectionError:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, longest)
                    continue
                delay = self._reconnect_delays[0]
                self._attached = True
                self._lost.clear()
                self._on_connected()
                await self._lost.wait()
        finally:
            ticks.cancel()

    def _broker_lost(self) -> None:
        self._attached = False
        self._on_disconnected("broker stopped")
        self._lost.set()

    def _delivered(self, topic: str, payload: bytes, retained: bool) -> None:
        if self._attached:
            self._receive(topic, payload, retained)

    def _send(self, topic: str, payload: bytes, retain: bool) -> None:
        if self._attached:
            self.broker.publish(topic, payload, retain)
