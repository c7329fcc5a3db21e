"""A real Mosquitto for tests: the local one, or a private one we start and can stop.

Use from a test module by binding the fixtures to module names (``tests/conftest.py``
puts ``tests/`` on ``sys.path``)::

    from integration import mosquitto_fixture

    mqtt_url = mosquitto_fixture.mqtt_url
    private_mosquitto = mosquitto_fixture.private_mosquitto

* ``mqtt_url`` (session): ``mqtt://127.0.0.1:1883`` when a broker answers there
  (``CENTRALITA_TEST_MQTT_URL`` names another), else a private broker's URL.
* ``private_mosquitto`` (per test): a :class:`PrivateMosquitto` on a free port that a
  test may ``stop()`` and ``start()`` again on the same port (no persistence, so a
  restart forgets retained messages, like a fresh broker).
* ``bus_prefix`` (per test): a unique topic prefix, so tests sharing a broker never
  see each other's messages; its retained messages are cleared afterwards.

When ``mosquitto`` is not installed the tests are skipped with the reason, or fail
when ``CI=true``: CI must run them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from peers.procs import free_port, peer_unavailable

MQTT_URL_VARIABLE = "CENTRALITA_TEST_MQTT_URL"
LOCAL_URL = "mqtt://127.0.0.1:1883"
HOST = "127.0.0.1"


def _host_port(url: str) -> tuple[str, int]:
    rest = url.removeprefix("mqtt://")
    host, _, port = rest.partition(":")
    return host, int(port or 1883)


def answers(url: str, timeout: float = 2.0) -> bool:
    """Whether an MQTT broker accepts a connection at ``url`` (a real MQTT CONNECT)."""
    host, port = _host_port(url)

    async def probe() -> None:
        async with aiomqtt.Client(host, port, timeout=timeout,
                                  identifier=f"probe-{secrets.token_hex(4)}"):
            pass

    try:
        asyncio.run(asyncio.wait_for(probe(), timeout + 1))
    except (aiomqtt.MqttError, OSError, TimeoutError):
        return False
    return True


class PrivateMosquitto:
    """``mosquitto`` on a private loopback port, in its own temporary folder."""

    def __init__(self) -> None:
        binary = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if binary is None:
            peer_unavailable("`mosquitto` is not installed (Debian package mosquitto)")
        assert binary is not None
        self.binary = binary
        self.port = free_port(udp=False)
        self.folder = Path(tempfile.mkdtemp(prefix="centralita-mqtt-"))
        self.config = self.folder / "mosquitto.conf"
        self.log = self.folder / "mosquitto.log"
        # set_tcp_nodelay: as deployed (see pbx/bus/README.md), not Nagle-delayed.
        lines = [f"listener {self.port} {HOST}", "allow_anonymous true", "persistence false",
                 "set_tcp_nodelay true",
                 f"log_dest file {self.log}", "log_type error", "log_type warning",
                 "log_type notice"]
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise it drops to `mosquitto`, who cannot write the log
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = subprocess.Popen([self.binary, "-c", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode(errors="replace") if \
                    self.process.stderr else ""
                raise RuntimeError(f"mosquitto exited {self.process.returncode}: {error} "
                                   f"{self.log_tail()}")
            with socket.socket() as probe:
                if probe.connect_ex((HOST, self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def stop(self) -> None:
        """Stop it (its clients see their connections drop) and wait until it is gone."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def log_tail(self, lines: int = 20) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def remove(self) -> None:
        self.stop()
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def running_private_mosquitto() -> Iterator[PrivateMosquitto]:
    broker = PrivateMosquitto()
    try:
        broker.start()
        yield broker
    finally:
        broker.remove()


@pytest.fixture(scope="session")
def mqtt_url() -> Iterator[str]:
    configured = os.environ.get(MQTT_URL_VARIABLE, LOCAL_URL)
    if answers(configured):
        yield configured
        return
    with running_private_mosquitto() as broker:
        yield broker.url


@pytest.fixture
def private_mosquitto() -> Iterator[PrivateMosquitto]:
    with running_private_mosquitto() as broker:
        yield broker


async def clear_retained(url: str, prefix: str, settle: float = 0.3) -> int:
    """Empty every retained message under ``prefix``; how many there were."""
    host, port = _host_port(url)
    found: set[str] = set()
    async with aiomqtt.Client(host, port, identifier=f"cleaner-{secrets.token_hex(4)}") as client:
        await client.subscribe(f"{prefix}/#")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settle):
                async for message in client.messages:
                    if message.retain and message.payload:
                        found.add(message.topic.value)
        for topic in found:
            await client.publish(topic, b"", qos=1, retain=True)
    return len(found)


@pytest.fixture
def bus_prefix(mqtt_url: str) -> Iterator[str]:
    prefix = f"centralita-test-{secrets.token_hex(6)}"
    yield prefix
    with contextlib.suppress(aiomqtt.MqttError, OSError):
        asyncio.run(clear_retained(mqtt_url, prefix))
