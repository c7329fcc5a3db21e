"""A softphone library run in a child Python process that reports JSON events on stdout.

pyVoIP and pjsua2 each want a process of their own (threads, one endpoint per process);
the parent side is the same for both: start it, read its events, wait for one, stop it.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from .procs import peer_unavailable, stop_process_group, tail


class ChildPhone:
    kind = "phone"  # names the phone in failure messages
    module = ""  # the library the child imports

    def __init__(self, workdir: Path, user: str, python: str | None) -> None:
        self.python = python or sys.executable
        check = subprocess.run([self.python, "-c", f"import {self.module}"], capture_output=True,
                               text=True)
        if check.returncode != 0:
            peer_unavailable(f"{self.module} not importable by {self.python}:"
                             f" {check.stderr.strip()[-300:]}")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.user = user
        self.events: queue.Queue[dict] = queue.Queue()
        self.history: list[dict] = []

    def _spawn(self, arguments: list[str]) -> None:
        """Run ``python -m <arguments>`` with the tests folder importable."""
        self.stderr_path = self.workdir / f"{self.kind}.stderr"
        self._stderr = open(self.stderr_path, "wb")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen([self.python, "-m", *arguments], cwd=self.workdir,
                                        stdout=subprocess.PIPE, stderr=self._stderr,
                                        stdin=subprocess.DEVNULL, start_new_session=True,
                                        text=True, env=env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.history.append(event)
            self.events.put(event)

    def wait_event(self, *names: str, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if self.process.poll() is not None and self.events.empty():
                    break
                continue
            if event.get("event") in names:
                return event
        raise AssertionError(
            f"{self.kind} {self.user}: no {names} within {timeout}s (exit={self.process.poll()});"
            f" events: {[e.get('event') for e in self.history]}"
            f" errors: {[e.get('error') for e in self.history if e.get('event') == 'error']}"
            "\nstderr tail:\n"
            f"{tail(self.stderr_path, 40)}")

    def last(self, name: str) -> dict | None:
        found = [event for event in self.history if event.get("event") == name]
        return found[-1] if found else None

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.stderr_path, lines)

    def stop(self) -> None:
        stop_process_group(self.process, grace=5.0)
        self._stderr.close()

    def __enter__(self):  # noqa: ANN204 - returns the subclass
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
