"""The site bus over MQTT (Mosquitto), with aiomqtt.

One connection per site. The connection carries the site's last will (its retained
status, ``offline``), so the broker marks the site down the moment the connection
dies. When the broker is unreachable the bus says so (``connected``, events),
keeps its views, retries with exponential backoff, and resynchronises on return.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
import uuid
from collections.abc import Callable, Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiomqtt

from pbx.bus.codec import SiteState
from pbx.bus.site_bus import BusCore, Emit
from pbx.bus.topics import Topics

log = logging.getLogger("pbx.bus")

# Retained state is published at QoS 1 (the PUBACK says the broker has it).
# Heartbeats and reservation messages at QoS 0: with a clean session QoS 1 would not
# redeliver them across a reconnection anyway, a lost one is a missed beat or a
# timeout, and each PUBACK costs a syscall. Subscriptions are QoS 0: a broker queues at
# most max_queued_messages (Mosquitto: 1,000) QoS 1 messages for a subscriber and drops
# the rest, so a site of 2,000 agents lost half of them on a resync (measured); QoS 0
# is not queued that way, TCP loses nothing while the connection lives, and a
# reconnection re-reads everything.
STATE_QOS = 1
SIGNAL_QOS = 0
SUBSCRIPTION_QOS = 0
IN_FLIGHT = 256  # publishes awaiting their PUBACK at once
KEEPALIVE = 5  # seconds; a silent (hung, unplugged) site is dropped after 1.5 x this
READ_BURST = 256  # packets read per wake-up of the event loop, at most


def read_in_bursts(client: aiomqtt.Client) -> None:
    """Have the client read every packet waiting on its socket when the event loop wakes
    it, not one: paho reads a single packet per call once nothing of ours is in flight, so
    a busy event loop (a site carrying calls) drained the bus one packet per iteration
    and fell seconds behind (heartbeats missed, reservation answers timed out)."""
    paho: Any = getattr(client, "_client", None)  # aiomqtt's paho client
    read_one = getattr(paho, "loop_read", None)
    if paho is None or read_one is None:
        return  # another aiomqtt: one packet per wake-up, as before

    def read_waiting(max_packets: int = 1) -> Any:
        result = read_one(max_packets)
        for _ in range(READ_BURST - 1):
            sock = paho.socket()
            if result != 0 or sock is None:  # 0: MQTT_ERR_SUCCESS
                break
            if not select.select([sock], [], [], 0)[0]:
                break
            result = read_one(max_packets)
        return result

    paho.loop_read = read_waiting


def parse_url(url: str) -> tuple[str, int]:
    """``mqtt://HOST:PORT`` (port 1883 when omitted) -> (host, port)."""
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ValueError(f"bus URL {url!r} is not mqtt://HOST:PORT")
    return parts.hostname, parts.port or 1883


class MqttSiteBus(BusCore):
    def __init__(self, url: str, site: str, sites: Collection[str],
                 agent_sites: Mapping[str, str], *, topics: Topics | None = None,
                 emit: Emit | None = None, heartbeat_interval: float = 1.0,
                 keepalive: int = KEEPALIVE,
                 reconnect_delays: tuple[float, float] = (0.2, 5.0),
                 sip_address: str | None = None,
                 **clocks: Callable[[], float]) -> None:
        super().__init__(site, sites, agent_sites, topics=topics, emit=emit,
                         heartbeat_interval=heartbeat_interval, sip_address=sip_address,
                         **clocks)
        self.url = url
        self.host, self.port = parse_url(url)
        self.keepalive = keepalive
        self._reconnect_delays = reconnect_delays
        self._outbox: asyncio.Queue[tuple[str, bytes, bool]] = asyncio.Queue()
        self._runner: asyncio.Task[None] | None = None
        self._ticks: asyncio.Task[None] | None = None
        self._closing = False
        self.connections = 0  # successful connections so far (1 + reconnections)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._runner = loop.create_task(self._run(), name=f"bus-{self.site}")
        self._ticks = loop.create_task(self.run_ticks(), name=f"bus-ticks-{self.site}")

    async def wait_connected(self, timeout: float) -> None:
        """Until connected (start-up, tests); TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while not self.connected:
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        """Say goodbye (status offline, retained), then disconnect cleanly."""
        self._closing = True
        if self._ticks is not None:
            self._ticks.cancel()
        if self.connected:
            self._send_status(SiteState.OFFLINE, "shutdown")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await self._outbox.join()
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        self._on_disconnected("closed")

    def _send(self, topic: str, payload: bytes, retain: bool) -> None:
        if self.connected:
            self._outbox.put_nowait((topic, payload, retain))

    async def _run(self) -> None:
        delay, longest = self._reconnect_delays
        while not self._closing:
            will_topic, will_payload = self.offline_status("connection lost")
            client = aiomqtt.Client(
                self.host, self.port, identifier=f"centralita-{self.site}-{uuid.uuid4().hex[:12]}",
                will=aiomqtt.Will(will_topic, will_payload, qos=STATE_QOS, retain=True),
                keepalive=self.keepalive, clean_session=True, timeout=5,
                max_inflight_messages=IN_FLIGHT,
                # Small messages answered by small messages: without this, Nagle's
                # algorithm and delayed ACKs add ~40 ms to each hop of a reservation.
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
            client.pending_calls_threshold = IN_FLIGHT + 1  # it warns above this many
            read_in_bursts(client)
            try:
                async with client:
                    for pattern in self.topics.subscriptions(self.site):
                        await client.subscribe(pattern, qos=SUBSCRIPTION_QOS)
                    delay = self._reconnect_delays[0]
                    self.connections += 1
                    log.info("bus: site %s connected to %s", self.site, self.url)
                    await self._serve(client)
            except (aiomqtt.MqttError, OSError) as error:
                reason = str(error) or type(error).__name__
            else:
                reason = "connection ended"
            was_connected = self.connected
            self._on_disconnected(reason)
            self._drop_outbox()
            if self._closing:
                return
            # Once per outage at WARNING; the retries themselves only at DEBUG.
            log.log(logging.WARNING if was_connected else logging.DEBUG,
                    "bus: site %s cannot reach %s (%s); retrying in %.1f s", self.site, self.url,
                    reason, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)

    async def _serve(self, client: aiomqtt.Client) -> None:
        self._on_connected()
        loop = asyncio.get_running_loop()
        tasks = {loop.create_task(self._read_all(client)), loop.create_task(self._send_all(client))}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            failure = task.exception()
            if failure is not None:
                raise failure

    async def _read_all(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if isinstance(payload, str):
                payload = payload.encode()
            elif not isinstance(payload, bytes | bytearray):
                payload = b""
            self._receive(message.topic.value, bytes(payload), message.retain)

    async def _send_all(self, client: aiomqtt.Client) -> None:
        # Publishes overlap (up to IN_FLIGHT awaiting their PUBACK): one at a time, a
        # site of 2,000 agents took 13 s to republish. Each task hands its message to
        # the client in its first step, and tasks start in creation order: order holds.
        window = asyncio.Semaphore(IN_FLIGHT)
        publishing: set[asyncio.Task[None]] = set()
        try:
            while True:
                topic, payload, retain = await self._outbox.get()
                await window.acquire()
                task = asyncio.get_running_loop().create_task(
                    self._publish(client, topic, payload, retain, window))
                publishing.add(task)
                task.add_done_callback(publishing.discard)
        finally:
            for task in publishing:
                task.cancel()

    async def _publish(self, client: aiomqtt.Client, topic: str, payload: bytes, retain: bool,
                       window: asyncio.Semaphore) -> None:
        try:
            await client.publish(topic, payload, qos=STATE_QOS if retain else SIGNAL_QOS,
                                 retain=retain)
        except aiomqtt.MqttError as error:
            # The connection is going: the reader sees it too and reconnects, and
            # state is republished then.
            log.debug("bus: publishing on %s failed: %s", topic, error)
        finally:
            window.release()
            self._outbox.task_done()

    def _drop_outbox(self) -> None:
        # What was queued is republished on reconnection if it was state; requests
        # that never left time out at the asking site.
        while not self._outbox.empty():
            self._outbox.get_nowait()
            self._outbox.task_done()
