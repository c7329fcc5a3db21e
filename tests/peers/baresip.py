"""baresip (1.0.0) as a scripted softphone: one config folder, one process per account.

Headless setup (see TEST-PEERS.md): no stdio UI, audio source ``aufile`` playing a WAV
(8 kHz mono 16-bit), player ``alsa,null``, ``sndfile`` dumping each call's decoded received
audio to ``<dir>/dump-*-dec.wav`` (proof that RTP arrived), ``ctrl_tcp`` for control: one
long-lived connection speaking netstring JSON (1.0.0 stops accepting new control
connections after a few short-lived ones).
"""

from __future__ import annotations

import json
import math
import queue
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import wave
import weakref
from dataclasses import dataclass
from pathlib import Path

from .procs import (
    LOOPBACK,
    free_port,
    free_port_pair,
    peer_unavailable,
    require_binary,
    stop_process_group,
    tail,
)

MODULE_PATH = Path("/usr/lib/baresip/modules")
REQUIRED_MODULES = ("g711", "aufile", "alsa", "sndfile", "account", "menu", "ctrl_tcp")
RTP_PORTS = 10
STARTS_ON_PORT_RACE = 3


class PortTaken(RuntimeError):
    """baresip could not bind a port that was free a moment before."""


def _free_sip_port() -> int:
    """A port free for UDP and TCP whose successor is free for TCP: baresip listens for
    TLS on sip_listen's port + 1."""
    for _ in range(50):
        port = free_port(udp=True, tcp=True)
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            probe.bind((LOOPBACK, port + 1))
            return port
        except OSError:
            continue
        finally:
            probe.close()
    raise RuntimeError("no free SIP port with a free TLS successor")


def write_tone_wav(path: Path, seconds: float = 20.0, frequency: float = 440.0,
                   rate: int = 8000) -> Path:
    """A mono 16-bit sine WAV: a source baresip's aufile accepts at 8 kHz."""
    frames = bytearray()
    for index in range(int(seconds * rate)):
        sample = int(8000 * math.sin(2 * math.pi * frequency * index / rate))
        frames += struct.pack("<h", sample)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(frames))
    return path


@dataclass
class Account:
    user: str
    password: str | None
    server: tuple[str, int]
    transport: str = "udp"
    register: bool = True
    answermode: str = "auto"

    def line(self) -> str:
        host, port = self.server
        params = [f"<sip:{self.user}@{host}:{port};transport={self.transport}>"]
        if self.password is not None:
            params.append(f"auth_user={self.user}")
            params.append(f"auth_pass={self.password}")
        params.append(f"answermode={self.answermode}")
        params.append("audio_codecs=PCMU,PCMA")
        params.append("regint=600" if self.register else "regint=0")
        params.append("ptime=20")
        return ";".join(params)


RUNNING: weakref.WeakSet[Baresip] = weakref.WeakSet()
"""Phones started and not stopped yet: the tests' teardown stops what a failed test left."""


class Baresip:
    """One baresip process; call :meth:`stop` (or use it as a context manager)."""

    def __init__(self, workdir: Path, account: Account, *, source_wav: Path | None = None,
                 startup_timeout: float = 10.0, extra_config: tuple[str, ...] = ()) -> None:
        binary = require_binary("baresip", "baresip-core")
        missing = [m for m in REQUIRED_MODULES if not (MODULE_PATH / f"{m}.so").exists()]
        if missing:
            peer_unavailable(f"baresip modules missing in {MODULE_PATH}: {missing}")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.account = account
        self.source_wav = source_wav or write_tone_wav(self.workdir / "source.wav")
        self.dump_dir = self.workdir / "dumps"
        self.dump_dir.mkdir(exist_ok=True)
        # baresip 1.0's sndfile keeps 128 characters of a dump's path and silently loses the
        # ".wav" of a longer one (as under pytest-xdist's deeper folders): it writes through a
        # short link in the temporary folder instead.
        self._dump_link = Path(tempfile.mkdtemp(prefix="baresip-")) / "dumps"
        self._dump_link.symlink_to(self.dump_dir, target_is_directory=True)
        # The account is added over ctrl_tcp once connected (``uanew``), so its REGISTER
        # events are not lost before the control connection exists.
        (self.workdir / "accounts").write_text("")
        (self.workdir / "contacts").write_text("")
        self.log_path = self.workdir / "baresip.log"
        # Ports are checked free just before baresip binds them; another process on the
        # machine can still take one in between, so a start that lost that race is retried.
        for attempt in range(1, STARTS_ON_PORT_RACE + 1):
            try:
                self._start(binary, startup_timeout, extra_config)
                break
            except PortTaken:
                if attempt == STARTS_ON_PORT_RACE:
                    raise
        self.events: queue.Queue[dict] = queue.Queue()
        self.history: list[dict] = []
        self._responses: dict[str, queue.Queue[dict]] = {}
        self._token = 0
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        answer = self.command("uanew", account.line())
        if not answer.get("ok", False):
            self.stop()
            raise RuntimeError(f"baresip refused the account {account.line()!r}: {answer}")

    def _start(self, binary: str, startup_timeout: float, extra_config: tuple[str, ...]) -> None:
        self.sip_port = _free_sip_port()
        self.ctrl_port = free_port(udp=False, tcp=True,
                                   avoid={self.sip_port, self.sip_port + 1})
        rtp = free_port_pair(count=RTP_PORTS)
        (self.workdir / "config").write_text("\n".join([
            "poll_method epoll",
            "net_interface 127.0.0.1",
            f"sip_listen {LOOPBACK}:{self.sip_port}",
            "call_local_timeout 60",
            "call_max_calls 4",
            f"audio_source aufile,{self.source_wav}",
            "audio_player alsa,null",
            "audio_alert alsa,null",
            "ausrc_srate 8000",
            "ausrc_channels 1",
            "auplay_srate 8000",
            "auplay_channels 1",
            f"rtp_ports {rtp}-{rtp + RTP_PORTS - 1}",
            "rtcp_mux no",
            "jitter_buffer_delay 1-5",
            f"module_path {MODULE_PATH}",
            "module g711.so",
            "module aufile.so",
            "module alsa.so",
            "module sndfile.so",
            f"snd_path {self._dump_link}",
            "module_tmp account.so",
            "module_app menu.so",
            "module ctrl_tcp.so",
            f"ctrl_tcp_listen {LOOPBACK}:{self.ctrl_port}",
            # e.g. "sip_cafile FILE" for TLS (baresip listens for TLS on sip_listen's port + 1)
            *extra_config,
            "",
        ]))
        self._log = open(self.log_path, "wb")
        # stderr carries menu's per-100-ms call status line: keep it out of the log.
        self._status = open(self.workdir / "baresip.status", "wb")
        self.process = subprocess.Popen([binary, "-f", str(self.workdir), "-v"],
                                        cwd=self.workdir, stdout=self._log,
                                        stderr=self._status, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        RUNNING.add(self)
        self._sock = None
        try:
            self._sock = self._connect(startup_timeout)
        except RuntimeError as failure:
            if "Address already in use" in str(failure):
                raise PortTaken(str(failure)) from None
            raise

    # -- control connection ---------------------------------------------------------------

    def _connect(self, timeout: float) -> socket.socket:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"baresip exited with {self.process.returncode}:\n"
                                   f"{tail(self.log_path)}")
            try:
                return socket.create_connection((LOOPBACK, self.ctrl_port), timeout=2)
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"baresip ctrl_tcp not listening after {timeout}s:\n"
                           f"{tail(self.log_path)}")

    def _read_loop(self) -> None:
        buffer = b""
        self._sock.settimeout(None)
        while True:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while True:
                colon = buffer.find(b":")
                if colon < 0:
                    break
                try:
                    length = int(buffer[:colon])
                except ValueError:
                    buffer = b""
                    break
                if len(buffer) < colon + 1 + length + 1:
                    break
                payload = buffer[colon + 1: colon + 1 + length]
                buffer = buffer[colon + 1 + length + 1:]
                try:
                    message = json.loads(payload)
                except ValueError:
                    continue
                if message.get("event"):
                    self.history.append(message)
                    self.events.put(message)
                elif message.get("response"):
                    token = str(message.get("token", ""))
                    self._responses.setdefault(token, queue.Queue()).put(message)

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict:
        with self._lock:
            self._token += 1
            token = str(self._token)
            self._responses.setdefault(token, queue.Queue())
        payload = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._sock.sendall(str(len(payload)).encode() + b":" + payload + b",")
        try:
            return self._responses[token].get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"baresip gave no response to {command!r} within {timeout}s;"
                                 f" log:\n{tail(self.log_path)}") from None

    def wait_event(self, *types: str, timeout: float = 15.0) -> dict:
        """The next event whose type is one of ``types`` (others are kept in history)."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                break
            if event.get("type") in types:
                return event
        seen = [event.get("type") for event in self.history]
        raise AssertionError(f"baresip {self.account.user}: no {types} within {timeout}s; events"
                             f" seen: {seen}; log tail:\n{tail(self.log_path)}")

    def seen(self, event_type: str) -> list[dict]:
        return [event for event in self.history if event.get("type") == event_type]

    # -- phone actions ----------------------------------------------------------------------

    def wait_registered(self, timeout: float = 15.0) -> dict:
        if self.seen("REGISTER_OK"):
            return self.seen("REGISTER_OK")[-1]
        event = self.wait_event("REGISTER_OK", "REGISTER_FAIL", timeout=timeout)
        if event["type"] != "REGISTER_OK":
            raise AssertionError(f"baresip {self.account.user} failed to register: {event}\n"
                                 f"{tail(self.log_path)}")
        return event

    def dial(self, uri: str) -> dict:
        return self.command("dial", uri)

    def hangup(self) -> dict:
        return self.command("hangup")

    def dumps(self, kind: str = "dec") -> list[Path]:
        """WAV dumps of decoded received (``dec``) or encoded sent (``enc``) audio."""
        return sorted(self.dump_dir.glob(f"dump-*-{kind}.wav"))

    def received_audio_frames(self) -> int:
        total = 0
        for path in self.dumps("dec"):
            try:
                with wave.open(str(path)) as recording:
                    total += recording.getnframes()
            except (wave.Error, EOFError):
                # The header is finalised at call end; count raw bytes instead.
                total += max(0, path.stat().st_size - 44) // 2
        return total

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)

    def stop(self) -> None:
        try:
            if getattr(self, "_sock", None) is not None:
                self._sock.close()
        except OSError:
            pass
        stop_process_group(self.process, grace=3.0)
        RUNNING.discard(self)
        shutil.rmtree(self._dump_link.parent, ignore_errors=True)  # the link; dumps stay
        self._log.close()
        self._status.close()

    def __enter__(self) -> Baresip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
