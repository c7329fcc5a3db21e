"""Asterisk 22 as the reference server of the side-by-side benchmark (``bench_vs_asterisk.py``).

Runs a locally built Asterisk (not in Debian 12: see bench/README.md, "Asterisk, the
reference") in the foreground with the configuration of ``bench/asterisk/``: the same flow,
queue and agents as Centralita's benchmark server, on free loopback ports. It answers the
questions the benchmark asks a server (address, CPU seconds, RSS, calls up, agents ready)
through /proc and Asterisk's CLI (``asterisk -rx``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_TEMPLATES = REPO_ROOT / "bench" / "asterisk"
MENU_PROMPT = REPO_ROOT / "pbx" / "media" / "prompts" / "en" / "number_1.wav"
LOOPBACK = "127.0.0.1"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


class AsteriskNotFound(RuntimeError):
    pass


def find_asterisk(explicit: str | None = None) -> Path:
    """The asterisk binary: ``explicit``, $ASTERISK, or ``asterisk`` on PATH."""
    candidate = explicit or os.environ.get("ASTERISK") or shutil.which("asterisk")
    if not candidate or not Path(candidate).is_file():
        raise AsteriskNotFound(
            "no asterisk binary: build Asterisk 22.10.1 as bench/README.md says and pass "
            "--asterisk PATH (or set ASTERISK)")
    return Path(candidate)


def agent_sections(accounts: Sequence[tuple[str, str]]) -> str:
    """pjsip.conf sections for each agent: an endpoint, its digest auth and its AOR."""
    sections = []
    for user, password in accounts:
        sections.append(
            f"[{user}]\ntype = endpoint\ncontext = agents\ndisallow = all\nallow = alaw,ulaw\n"
            f"dtmf_mode = rfc4733\ndirect_media = no\nrtp_symmetric = yes\n"
            f"auth = {user}\naors = {user}\n\n"
            f"[{user}]\ntype = auth\nauth_type = userpass\nusername = {user}\n"
            f"password = {password}\n\n"
            f"[{user}]\ntype = aor\nmax_contacts = 1\nremove_existing = yes\n")
    return "\n".join(sections)


class AsteriskServer:
    """One Asterisk process; ``stop()`` ends it. Same questions as the bench's ``PbxServer``."""

    def __init__(self, binary: Path, run_dir: Path, accounts: Sequence[tuple[str, str]],
                 sip_port: int, rtp_range: tuple[int, int] = (20000, 29999)) -> None:
        self.binary = binary
        self.run_dir = run_dir
        self.accounts = list(accounts)
        self.sip_port = sip_port
        self.sip_address = f"{LOOPBACK}:{sip_port}"
        self._write_config(rtp_range)
        self.log = open(run_dir / "asterisk.out", "wb")
        self.process = subprocess.Popen(
            [str(binary), "-f", "-C", str(self.config_file)], stdout=self.log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.process.pid
        self._wait_until_serving()

    @property
    def config_file(self) -> Path:
        return self.run_dir / "etc" / "asterisk.conf"

    def _write_config(self, rtp_range: tuple[int, int]) -> None:
        etc = self.run_dir / "etc"
        for folder in ("etc", "var/lib", "var/spool", "run", "log", "data/sounds/en"):
            (self.run_dir / folder).mkdir(parents=True, exist_ok=True)
        values = {"run": str(self.run_dir), "sip_port": str(self.sip_port),
                  "rtp_start": str(rtp_range[0]), "rtp_end": str(rtp_range[1]),
                  "modules": str(self.binary.resolve().parents[1] / "lib" / "asterisk" / "modules")}
        for template in CONFIG_TEMPLATES.glob("*.conf"):
            text = template.read_text()
            for key, value in values.items():
                text = text.replace("{" + key + "}", value)
            (etc / template.name).write_text(text)
        with (etc / "pjsip.conf").open("a") as pjsip:
            pjsip.write("\n" + agent_sections(self.accounts))
        with (etc / "queues.conf").open("a") as queues:
            queues.writelines(f"member => PJSIP/{user}\n" for user, _ in self.accounts)
        shutil.copy(MENU_PROMPT, self.run_dir / "data" / "sounds" / "en" / "bench_menu.wav")
        # Asterisk reads its modules' documentation at start and refuses to run without it
        documentation = self.run_dir / "data" / "documentation"
        if not documentation.exists():
            documentation.symlink_to(self.binary.resolve().parents[1] / "var" / "lib" / "asterisk"
                                     / "documentation")

    def cli(self, command: str, timeout: float = 10.0) -> str:
        result = subprocess.run([str(self.binary), "-C", str(self.config_file), "-rx", command],
                                capture_output=True, text=True, timeout=timeout)
        return ANSI_ESCAPE.sub("", result.stdout)

    def _wait_until_serving(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"asterisk exited {self.process.returncode}: "
                                   + (self.run_dir / "asterisk.out").read_text()[-2000:])
            try:
                if "transport-udp" in self.cli("pjsip show transports", timeout=5):
                    return
            except subprocess.TimeoutExpired:
                pass
            time.sleep(0.3)
        raise RuntimeError("asterisk did not start serving SIP within 60 s")

    # -- what the benchmark asks ---------------------------------------------------------
    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def active_calls(self) -> int:
        match = re.search(r"(\d+) active call", self.cli("core show channels count"))
        return int(match.group(1)) if match else 0

    def active_channels(self) -> int:
        match = re.search(r"(\d+) active channel", self.cli("core show channels count"))
        return int(match.group(1)) if match else 0

    def agents_ready(self) -> bool:
        """Every member of the bench queue registered and not in use."""
        return self.cli("queue show bench").count("(Not in use)") >= len(self.accounts)

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self.process.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.pid, signal.SIGKILL)
                self.process.wait(5)
        self.log.close()

    def metric(self, name: str, default: float = 0.0) -> float:
        """The two gauges a benchmark step reads, from the CLI: calls up, and channels left."""
        if name == "centralita_calls_active":
            return float(self.active_calls())
        if name == "centralita_sip_dialogs_active":
            return float(self.active_channels())
        return default

    def metrics(self) -> dict[str, float]:
        return {}  # no collector passes or loop-lag probes to read in Asterisk
