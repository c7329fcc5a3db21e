"""Run SIPp (Debian `sip-tester`) against the server and read back what happened.

Built-in scenarios go by name (``uac``, ``uas``, ``uac_pcap``, ...), custom ones as an XML
file path or as XML text. Every run gets its own work folder holding the scenario, the
injection file, the statistics CSV, the error log and (for ``uac_pcap``) the ``pcap``
symlink SIPp expects. Exit code 0 means every call succeeded.
"""

from __future__ import annotations

import contextlib
import csv
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .procs import LOOPBACK, free_port, free_port_pair, require_binary, stop_process_group, tail

BUILTIN_SCENARIOS = {"uac", "uas", "uac_pcap", "regexp", "branchc", "branchs",
                     "3pcc-A", "3pcc-B", "3pcc-C-A", "3pcc-C-B"}
PCAP_DIR = Path("/usr/share/sip-tester")

EXIT_MEANINGS = {0: "all calls succeeded", 1: "at least one call failed",
                 97: "exit on internal command", 99: "normal exit without calls processed",
                 255: "fatal error", -1: "fatal error", -9: "killed after the Python timeout"}


def sipp_binary() -> str:
    return require_binary("sipp", "sip-tester")


@dataclass
class SippResult:
    command: list[str]
    returncode: int
    workdir: Path
    stats: dict[str, str] = field(default_factory=dict)
    output: str = ""
    timed_out: bool = False

    def stat(self, name: str) -> int:
        value = self.stats.get(name, "0") or "0"
        try:
            return int(float(value))
        except ValueError:
            return 0

    @property
    def successful(self) -> int:
        return self.stat("SuccessfulCall(C)")

    @property
    def failed(self) -> int:
        return self.stat("FailedCall(C)")

    @property
    def created(self) -> int:
        return self.stat("TotalCallCreated")

    @property
    def retransmissions(self) -> int:
        return self.stat("Retransmissions(C)")

    @property
    def errors_log(self) -> str:
        path = self.workdir / "errors.log"
        return tail(path, 40) if path.exists() else ""

    @property
    def messages_log(self) -> str:
        path = self.workdir / "messages.log"
        return tail(path, 200) if path.exists() else ""

    def failures(self) -> dict[str, int]:
        return {key: self.stat(key) for key in self.stats
                if key.startswith("Failed") and key.endswith("(C)") and self.stat(key)}

    def describe(self) -> str:
        meaning = EXIT_MEANINGS.get(self.returncode, "?")
        lines = [
            f"$ {' '.join(self.command)}",
            f"exit {self.returncode} ({meaning}){' TIMED OUT' if self.timed_out else ''}; "
            f"created={self.created} successful={self.successful} failed={self.failed} "
            f"retransmissions={self.retransmissions} failure kinds={self.failures()}",
        ]
        if self.errors_log:
            lines += ["--- sipp errors.log (tail) ---", self.errors_log]
        if self.output.strip():
            lines += ["--- sipp output (tail) ---", "\n".join(self.output.splitlines()[-25:])]
        return "\n".join(lines)


def _scenario_args(scenario: str | os.PathLike, workdir: Path) -> list[str]:
    text = str(scenario)
    if isinstance(scenario, str) and text in BUILTIN_SCENARIOS:
        return ["-sn", text]
    if isinstance(scenario, str) and text.lstrip().startswith("<"):
        path = workdir / "scenario.xml"
        path.write_text(text)
        return ["-sf", str(path)]
    return ["-sf", str(Path(scenario).resolve())]


def build_command(
    target: str | None,
    *,
    scenario: str | os.PathLike = "uac",
    workdir: Path,
    service: str | None = None,
    calls: int | None = None,
    rate: float | None = None,
    rate_period_ms: int | None = None,
    limit: int | None = None,
    transport: str = "u1",
    duration_ms: int | None = None,
    auth: tuple[str, str] | None = None,
    auth_uri: str | None = None,
    inject: Sequence[str] | None = None,
    local_port: int | None = None,
    media_port: int | None = None,
    global_timeout_s: float | None = None,
    trace_msg: bool = False,
    extra: Sequence[str] = (),
) -> list[str]:
    command = [sipp_binary(), *_scenario_args(scenario, workdir)]
    if target:
        command.append(target)
    local_port = local_port or free_port(udp=True, tcp=True)
    command += ["-i", LOOPBACK, "-p", str(local_port), "-t", transport, "-nostdin",
                "-trace_stat", "-stf", str(workdir / "stats.csv"), "-fd", "1",
                "-trace_err", "-error_file", str(workdir / "errors.log"),
                "-trace_screen", "-screen_file", str(workdir / "screen.log")]
    command += ["-mp", str(media_port or free_port_pair(count=4))]  # audio and video RTP/RTCP
    if service is not None:
        command += ["-s", service]
    if calls is not None:
        command += ["-m", str(calls)]
    if rate is not None:
        command += ["-r", f"{rate:g}"]
    if rate_period_ms is not None:
        command += ["-rp", f"{rate_period_ms}ms"]
    if limit is not None:
        command += ["-l", str(limit)]
    if duration_ms is not None:
        command += ["-d", str(duration_ms)]
    if auth is not None:
        command += ["-au", auth[0], "-ap", auth[1]]
    if auth_uri is not None:
        command += ["-auth_uri", auth_uri]
    if inject is not None:
        inject_path = workdir / "inject.csv"
        inject_path.write_text("SEQUENTIAL\n" + "".join(line + "\n" for line in inject))
        command += ["-inf", str(inject_path)]
    if global_timeout_s is not None:
        command += ["-timeout", f"{int(global_timeout_s)}s", "-timeout_error"]
    if trace_msg:
        command += ["-trace_msg", "-message_file", str(workdir / "messages.log")]
    command += list(extra)
    return command


def _prepare_workdir(workdir: Path | None) -> Path:
    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="sipp-"))
    workdir.mkdir(parents=True, exist_ok=True)
    pcap_link = workdir / "pcap"
    if not pcap_link.exists() and PCAP_DIR.is_dir():
        pcap_link.symlink_to(PCAP_DIR)  # uac_pcap plays pcap/g711a.pcap
    return workdir


def read_stats(workdir: Path) -> dict[str, str]:
    path = workdir / "stats.csv"
    if not path.exists():
        return {}
    with open(path, newline="", errors="replace") as handle:
        rows = [row for row in csv.reader(handle, delimiter=";") if row]
    if len(rows) < 2:
        return {}
    header = rows[0]
    return {name: value for name, value in zip(header, rows[-1], strict=False) if name}


def run(target: str | None, *, timeout: float = 120.0, workdir: Path | None = None,
        **options) -> SippResult:
    """Run SIPp to completion (it must be given -m / calls, or a scenario that ends)."""
    workdir = _prepare_workdir(workdir)
    command = build_command(target, workdir=workdir, global_timeout_s=timeout, **options)
    output_path = workdir / "output.txt"
    with open(output_path, "wb") as output:
        process = subprocess.Popen(command, cwd=workdir, stdout=output, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        timed_out = False
        try:
            process.wait(timeout + 15)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            stop_process_group(process)
    returncode = -9 if timed_out else process.returncode
    return SippResult(command=command, returncode=returncode, workdir=workdir,
                      stats=read_stats(workdir), output=tail(output_path, 40),
                      timed_out=timed_out)


class SippProcess:
    """A SIPp left running (e.g. a ``uas``) until :meth:`stop`."""

    def __init__(self, command: list[str], workdir: Path, port: int) -> None:
        self.command = command
        self.workdir = workdir
        self.port = port
        self._output = open(workdir / "output.txt", "wb")
        self.process = subprocess.Popen(command, cwd=workdir, stdout=self._output,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def wait(self, timeout: float) -> SippResult:
        timed_out = False
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        return self.stop(timed_out=timed_out)

    def stop(self, timed_out: bool = False) -> SippResult:
        stop_process_group(self.process)
        self._output.close()
        return SippResult(command=self.command,
                          returncode=-9 if timed_out else (self.process.returncode or 0),
                          workdir=self.workdir, stats=read_stats(self.workdir),
                          output=tail(self.workdir / "output.txt", 40), timed_out=timed_out)


def start(target: str | None, *, workdir: Path | None = None, port: int | None = None,
          **options) -> SippProcess:
    """Start SIPp in the background; returns once its SIP socket is bound."""
    workdir = _prepare_workdir(workdir)
    for _ in range(1 if port else 3):  # a free port can be taken by a neighbour before SIPp binds
        chosen = port or free_port(udp=True, tcp=True)
        command = build_command(target, workdir=workdir, local_port=chosen, **options)
        started = SippProcess(command, workdir, chosen)
        if _bound_or_done(started.process, chosen):
            return started
        result = started.stop()
        if not any(word in result.describe().lower() for word in ("bind", "in use")):
            break
    raise RuntimeError(f"sipp exited at start:\n{result.describe()}")


def _bound_or_done(process: subprocess.Popen, port: int, timeout: float = 10.0) -> bool:
    """Wait until SIPp holds ``port`` on loopback; False if it failed first.

    Read from /proc, not by binding a probe, which could take the port from SIPp."""
    local = (f"0100007F:{port:04X}", f"00000000:{port:04X}")  # 127.0.0.1 or any address
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return process.returncode == 0  # a short run may end before we look
        if _socket_inodes(process.pid) & _inodes_on(local):
            return True
        time.sleep(0.05)
    return process.poll() is None or process.returncode == 0


def _inodes_on(local: tuple[str, ...]) -> set[str]:
    inodes = set()
    for table in ("/proc/net/udp", "/proc/net/tcp"):
        with open(table) as sockets:
            for line in sockets.readlines()[1:]:
                fields = line.split()
                if fields[1] in local:
                    inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    except OSError:
        pass  # gone
    return inodes
