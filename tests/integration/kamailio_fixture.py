"""Debian's Kamailio running the shipped front-door configuration on free loopback ports.

:func:`start_front_door` renders ``deploy/kamailio/kamailio.cfg`` for the given sites and
agents' home sites (``deploy/kamailio/front_door_config.py``, as the README tells an
operator to), starts ``kamailio`` in the foreground in its own process group and waits
until it answers OPTIONS. ``FrontDoor.stop()`` ends it. Used by
tests/integration/test_front_door.py and bench/bench_failover.py.

Kamailio missing is a failure, never a skip: the front door is part of what ships.
"""

from __future__ import annotations

import importlib.util
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from peers.procs import LOOPBACK, free_port, stop_process_group, tail

REPO_ROOT = Path(__file__).resolve().parents[2]
RENDERER = REPO_ROOT / "deploy" / "kamailio" / "front_door_config.py"
STARTUP_TIMEOUT = 15.0


class KamailioMissing(RuntimeError):
    pass


def kamailio_binary() -> str:
    found = shutil.which("kamailio") or (
        "/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None)
    if found is None:
        raise KamailioMissing("`kamailio` is not installed (Debian package kamailio): "
                              "run scripts/install-test-deps")
    return found


def _renderer():
    spec = importlib.util.spec_from_file_location("front_door_config", RENDERER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@dataclass
class FrontDoor:
    process: subprocess.Popen
    port: int
    folder: Path
    sites: dict[str, str]  # name -> HOST:PORT
    _log: object = field(repr=False, default=None)

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.folder / "kamailio.log"

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process_group(self.process)
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None


def options_answer(address: tuple[str, int], timeout: float = 1.0) -> int | None:
    """Status of the answer to one OPTIONS sent to ``address`` over UDP, None if silent."""
    tag = secrets.token_hex(6)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.settimeout(timeout)
        local_port = sock.getsockname()[1]
        request = (f"OPTIONS sip:{address[0]}:{address[1]} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {LOOPBACK}:{local_port};branch=z9hG4bK{tag};rport\r\n"
                   f"From: <sip:probe@{LOOPBACK}:{local_port}>;tag={tag}\r\n"
                   f"To: <sip:{address[0]}:{address[1]}>\r\n"
                   f"Call-ID: {tag}@probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                   "Content-Length: 0\r\n\r\n")
        sock.sendto(request.encode(), address)
        try:
            data, _ = sock.recvfrom(65535)
        except (TimeoutError, ConnectionRefusedError):
            return None
    start_line = data.split(b"\r\n", 1)[0].split()
    return int(start_line[1]) if len(start_line) > 1 and start_line[1].isdigit() else None


def start_front_door(sites: dict[str, str], homes: dict[str, str] | None = None, *,
                     folder: Path | None = None, probe_interval: int = 1,
                     answer_timeout_ms: int = 1000, children: int = 2,
                     log_level: int = 1, port: int | None = None) -> FrontDoor:
    """Kamailio in front of ``sites`` (name -> HOST:PORT, in backup order), on ``port``
    (a free one when None: sites configured with the front door's address need it first)."""
    binary = kamailio_binary()
    renderer = _renderer()
    folder = Path(folder or tempfile.mkdtemp(prefix="centralita-kamailio-"))
    last_error = ""
    for _ in range(1 if port else 3):  # a free port can be taken between probe and bind
        listen_port = port or free_port(udp=True, tcp=False)
        renderer.write_folder(
            folder, listen=(LOOPBACK, listen_port),
            sites=[renderer.parse_site(f"{name}={address}") for name, address in sites.items()],
            homes=dict(homes or {}), probe_interval=probe_interval,
            answer_timeout_ms=answer_timeout_ms, log_level=log_level, children=children)
        log = open(folder / "kamailio.log", "ab")
        process = subprocess.Popen(
            [binary, "-DD", "-E", "-f", "kamailio.cfg", "-Y", str(folder),
             "-P", str(folder / "kamailio.pid")],
            cwd=folder, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        door = FrontDoor(process, listen_port, folder, dict(sites), log)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            if options_answer((LOOPBACK, listen_port), timeout=0.3) == 200:
                return door
        last_error = door.log_tail(30)
        door.stop()
        if "Address already in use" not in last_error:
            break
    raise RuntimeError(f"kamailio did not start (folder {folder}):\n{last_error}")
