"""A private rtpengine (Debian ``rtpengine-daemon``) for tests and benches.

Userspace forwarding only (``--table=-1``, no kernel module), on a free ng control port
and a free RTP port range of loopback, with no configuration file. Fixtures:

* ``rtpengine`` (session): one engine for the tests that only need it to run.
* ``private_rtpengine`` (per test): one a test may ``kill()`` and ``start()`` again on
  the same ports (rtpengine dying mid-call).
* ``media_engine`` (per test, parametrized ``embedded`` / ``rtpengine``): the ``media``
  keys that select the engine, so a call test runs against both implementations.

When rtpengine is not installed the tests are skipped with the reason, or fail when
``CI=true``: CI must run them.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from peers.procs import LOOPBACK, free_port, peer_unavailable, stop_process_group, tail

# Far from the server's default RTP range (20000-29999) and SIPp's media ports.
_RANGE_FLOOR, _RANGE_CEILING, RANGE_SIZE = 40000, 59999, 600


def _bencode(value: object) -> bytes:
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(_bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        return b"d" + b"".join(_bencode(k) + _bencode(value[k]) for k in sorted(value)) + b"e"
    raise TypeError(type(value))


def _free_range(size: int) -> int:
    """A start port whose `size` successors look free (probing every 20th)."""
    for _ in range(100):
        start = random.randrange(_RANGE_FLOOR, _RANGE_CEILING - size) & ~1
        try:
            for port in range(start, start + size, 20):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.bind((LOOPBACK, port))
        except OSError:
            continue
        return start
    raise RuntimeError("no free port range for rtpengine")


class PrivateRtpengine:
    """``rtpengine`` on private loopback ports, in its own temporary folder."""

    def __init__(self, folder: Path, *, threads: int = 1, range_size: int = RANGE_SIZE) -> None:
        binary = shutil.which("rtpengine") or (
            "/usr/sbin/rtpengine" if Path("/usr/sbin/rtpengine").exists() else None)
        if binary is None:
            peer_unavailable("`rtpengine` is not installed (Debian package rtpengine-daemon)")
        assert binary is not None
        self.binary = binary
        self.folder = folder
        self.ng_port = free_port(udp=True, tcp=False)
        self.threads = threads
        self.port_min = _free_range(range_size)
        self.port_max = self.port_min + range_size - 1
        self.process: subprocess.Popen | None = None
        self.log_path = folder / "rtpengine.log"

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.ng_port}"

    @property
    def media_settings(self) -> dict[str, str]:
        return {"engine": "rtpengine", "rtpengine": self.address}

    def start(self, timeout: float = 15.0) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [self.binary, "--config-file=none", "--table=-1", f"--interface={LOOPBACK}",
                   f"--listen-ng={self.address}", f"--port-min={self.port_min}",
                   f"--port-max={self.port_max}", "--foreground", "--log-stderr",
                   f"--num-threads={self.threads}", "--timeout=120", f"--pidfile={self.folder / 'rtpengine.pid'}"]
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rtpengine exited {self.process.returncode}:\n{self.log_tail()}")
            if "Startup complete" in self.log_path.read_text(errors="replace") and self.answers():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"rtpengine did not start in {timeout:g} s:\n{self.log_tail()}")

    def command(self, name: str, timeout: float = 2.0, **arguments: object) -> bytes:
        """One ng command; the raw bencoded reply (the tests look for a few keys in it)."""
        cookie = secrets.token_hex(6).encode()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(cookie + b" " + _bencode({"command": name, **arguments}), (LOOPBACK, self.ng_port))
            while True:
                reply = sock.recv(65536)
                if reply.startswith(cookie + b" "):
                    return reply[len(cookie) + 1:]

    def answers(self) -> bool:
        try:
            return b"pong" in self.command("ping", timeout=0.5)
        except OSError:
            return False

    def call_ids(self) -> list[str]:
        """The calls rtpengine holds now (ng ``list``)."""
        reply = self.command("list", limit=1000)
        # d5:callsl<N>:<id>...e6:result2:oke
        calls = reply.split(b"5:callsl", 1)[1].split(b"e6:result", 1)[0]
        ids, at = [], 0
        while at < len(calls):
            colon = calls.index(b":", at)
            length = int(calls[at:colon])
            ids.append(calls[colon + 1:colon + 1 + length].decode())
            at = colon + 1 + length
        return ids

    def cpu_seconds(self) -> float:
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def kill(self) -> None:
        """Die at once (SIGKILL), as a crash would: no goodbye to anyone."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)

    def log_tail(self) -> str:
        return tail(self.log_path, 40)


@pytest.fixture(scope="session")
def rtpengine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRtpengine]:
    engine = PrivateRtpengine(tmp_path_factory.mktemp("rtpengine"))
    engine.start()
    yield engine
    engine.stop()


@pytest.fixture
def private_rtpengine(tmp_path: Path) -> Iterator[PrivateRtpengine]:
    engine = PrivateRtpengine(tmp_path / "rtpengine")
    engine.start()
    yield engine
    engine.stop()


@pytest.fixture(params=["embedded", "rtpengine"])
def media_engine(request: pytest.FixtureRequest) -> dict[str, str]:
    """The ``media`` keys choosing the engine this run of the test goes through."""
    if request.param == "embedded":
        return {"engine": "embedded"}
    engine: PrivateRtpengine = request.getfixturevalue("rtpengine")
    if not engine.answers():
        pytest.fail(f"the session's rtpengine stopped answering:\n{engine.log_tail()}")
    return engine.media_settings


def assert_bridged_through_rtpengine(server, engine: PrivateRtpengine) -> None:
    """The call in progress on `server` runs through `engine`: rtpengine holds a call, and
    the SDP the server sent names rtpengine's ports (the caller's answer and the offer to
    the phone it was bridged to), so the phones send their RTP there, not to the server."""
    assert engine.call_ids(), f"rtpengine holds no call:\n{engine.log_tail()}"
    ports = [int(port) for port in re.findall(r"m=audio (\d+) ", server.log_text())]
    through = [port for port in ports if engine.port_min <= port <= engine.port_max]
    assert len(through) >= 2, (f"the server's SDP named no rtpengine port ({engine.port_min}-"
                               f"{engine.port_max}) for both phones; m= ports seen: {ports}")
