"""Linphone (Debian's ``linphone-cli``: ``linphonec`` 5.1) as a headless softphone.

One ``linphonec`` process per phone, driven through its stdin (the same commands as the
interactive prompt) with its output collected line by line. Its own ``$HOME`` (it needs a
writable ``~/.local/share/linphone``, or every incoming INVITE gets 503), its own rc file
with the account, and ``ports sip N`` sent after start (it ignores ``sip_port`` from the rc
file, see TEST-PEERS.md). ``soundcard use files``: no audio device needed.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path

from .procs import LOOPBACK, free_port, free_port_pair, require_binary, stop_process_group


class Linphone:
    def __init__(self, workdir: Path, user: str, password: str, server: tuple[str, int], *,
                 auto_answer: bool = False, realm: str = "centralita") -> None:
        binary = require_binary("linphonec", "linphone-cli")
        self.workdir = Path(workdir)
        home = self.workdir / "home"
        (home / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        self.user = user
        self.sip_port = free_port(udp=True, tcp=False)
        rtp_port = free_port_pair()
        server_uri = f"sip:{server[0]}:{server[1]};transport=udp"
        rc = self.workdir / "linphonerc"
        rc.write_text(
            f"[sip]\nsip_port={self.sip_port}\ndefault_proxy=0\n"
            f"[rtp]\naudio_rtp_port={rtp_port}\n"
            f"[video]\nenabled=0\nautomatically_initiate=0\n"
            f"[auth_info_0]\nusername={user}\nuserid={user}\npasswd={password}\nrealm={realm}\n"
            f"[proxy_0]\nreg_proxy=<{server_uri}>\nreg_identity=sip:{user}@{server[0]}\n"
            f"reg_expires=600\nreg_sendregister=1\n")
        self.log_path = self.workdir / "linphonec.out"
        self._log = self.log_path.open("w")
        self._lines: list[str] = []
        self._lock = threading.Condition()
        arguments = [binary, "-c", str(rc), "-d", "0"] + (["-a"] if auto_answer else [])
        self.process = subprocess.Popen(
            arguments, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(home)}, text=True, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        self.command(f"ports sip {self.sip_port}")
        self.command("soundcard use files")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._log.write(line)
            self._log.flush()
            with self._lock:
                self._lines.append(line.rstrip("\n"))
                self._lock.notify_all()

    def command(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def wait_output(self, pattern: str, timeout: float = 15.0, start: int = 0) -> re.Match[str]:
        """The first output line from index ``start`` on matching ``pattern``."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for line in self._lines[start:]:
                    found = compiled.search(line)
                    if found:
                        return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.process.poll() is not None:
                    raise AssertionError(f"linphonec {self.user}: no line matching {pattern!r}"
                                         f" within {timeout} s\n{self.log_tail()}")
                self._lock.wait(min(remaining, 0.5))

    def mark(self) -> int:
        """The current end of the output, to wait for what comes after it."""
        with self._lock:
            return len(self._lines)

    def wait_registered(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            start = self.mark()
            self.command("proxy list")
            try:
                self.wait_output(r"^registered: yes", timeout=1.0, start=start)
                return
            except AssertionError:
                if time.monotonic() > deadline:
                    raise

    def dial(self, uri: str) -> int:
        start = self.mark()
        self.command(f"call {uri}")
        return start

    def hangup(self) -> None:
        self.command("terminate")

    def log_tail(self, lines: int = 40) -> str:
        with self._lock:
            return "\n".join(self._lines[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.command("quit")
                self.process.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop_process_group(self.process)
        self._log.close()

    def __enter__(self) -> Linphone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["LOOPBACK", "Linphone"]
