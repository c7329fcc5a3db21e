"""Start the real `pbx serve` process on free loopback ports, and stop it.

Used by tests/conftest.py (fixtures ``pbx_server`` and ``shared_pbx``) and by bench/.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from peers.procs import LOOPBACK, free_port, stop_process_group, tail

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 30.0


class ServerStartError(RuntimeError):
    pass


@dataclass
class PbxServer:
    """A running `pbx serve` process and how to reach it."""

    process: subprocess.Popen
    host: str
    sip_port: int
    http_port: int
    workdir: Path
    var_dir: Path
    log_path: Path
    config_path: Path | None
    _log_handle: object = field(repr=False, default=None)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def sip_address(self) -> str:
        return f"{self.host}:{self.sip_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def http_get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=timeout) as reply:
                return reply.status, reply.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode("utf-8", "replace")

    def healthz(self) -> dict:
        status, body = self.http_get("/healthz")
        if status != 200:
            raise AssertionError(f"/healthz answered {status}: {body[:500]}")
        return json.loads(body)

    def metrics_text(self) -> str:
        status, body = self.http_get("/metrics")
        if status != 200:
            raise AssertionError(f"/metrics answered {status}: {body[:500]}")
        return body

    def metrics(self) -> dict[str, float]:
        """Prometheus samples as ``{'name{labels}': value}`` (labels exactly as printed)."""
        return parse_prometheus(self.metrics_text())

    def metric(self, name: str, default: float | None = None, **labels: str) -> float | None:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        total = None
        for key, value in self.metrics().items():
            sample, _, label_text = key.partition("{")
            if sample != name:
                continue
            found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', label_text))
            if all(found.get(k) == v for k, v in labels.items()):
                total = (total or 0.0) + value
        return default if total is None else total

    def cpu_seconds(self) -> float:
        """utime + stime of the server process from /proc (Linux)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def log_tail(self, lines: int = 80) -> str:
        return tail(self.log_path, lines)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        code = stop_process_group(self.process)
        if self._log_handle is not None:
            self._log_handle.close()  # type: ignore[attr-defined]
            self._log_handle = None
        return code


def default_config_yaml(**sections: dict) -> str:
    """The embedded demo config as YAML text, with ``sections`` merged over it.

    ``default_config_yaml(sip={"digest_algorithms": ["MD5"]})`` keeps everything else. Queues
    given replace the demo's, and the demo's callback rules for queues gone go with them.
    """
    import yaml

    text = (REPO_ROOT / "pbx" / "default_config.yaml").read_text()
    config = yaml.safe_load(text)
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(config.get(name), dict):
            config[name].update(values)
        else:
            config[name] = values
    if "queues" in sections and "callbacks" not in sections:
        # The demo's callback rules name its queues: keep those of the queues still there.
        names = {queue["name"] for queue in config["queues"]}
        rules = config["callbacks"].get("queues") or {}
        config["callbacks"]["queues"] = {name: rule for name, rule in rules.items() if name in names}
    return yaml.safe_dump(config, sort_keys=False)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?)\s+(\S+)")


def parse_prometheus(text: str) -> dict[str, float]:
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match:
            try:
                samples[match.group(1)] = float(match.group(2))
            except ValueError:
                continue
    return samples


def start_pbx(
    workdir: Path,
    *,
    config_yaml: str | None = None,
    extra_args: tuple[str, ...] = (),
    sip_trace: bool = False,
    env: dict[str, str] | None = None,
    python: str | None = None,
    startup_timeout: float = STARTUP_TIMEOUT,
    ports: tuple[int, int] | None = None,
) -> PbxServer:
    """Start `python -m pbx serve` in ``workdir`` and wait until /healthz answers 200.

    ``ports``: the SIP and HTTP ports to listen on (a restart in place), else free ones."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for attempt in range(3):  # a free port can be taken between probe and bind
        try:
            return _start_once(workdir / f"run{attempt}", config_yaml, extra_args, sip_trace,
                               env, python or sys.executable, startup_timeout, ports)
        except ServerStartError as error:
            last_error = error
            # Retry a port lost to a race, or a start killed from outside by a signal.
            if "in use" not in str(error).lower() and "exited with -" not in str(error):
                raise
    raise ServerStartError(f"server failed to start 3 times: {last_error}")


def _start_once(workdir: Path, config_yaml: str | None, extra_args: tuple[str, ...],
                sip_trace: bool, env: dict[str, str] | None, python: str,
                startup_timeout: float, ports: tuple[int, int] | None = None) -> PbxServer:
    workdir.mkdir(parents=True, exist_ok=True)
    var_dir = workdir / "var"
    var_dir.mkdir(exist_ok=True)
    log_path = workdir / "pbx.log"
    if ports is not None:
        sip_port, http_port = ports
    else:
        sip_port = free_port(udp=True, tcp=True)
        http_port = free_port(udp=False, tcp=True, avoid={sip_port})
    command = [python, "-m", "pbx", "serve",
               "--sip-listen", f"{LOOPBACK}:{sip_port}",
               "--http-listen", f"{LOOPBACK}:{http_port}",
               "--var-dir", str(var_dir)]
    config_path = None
    if config_yaml is not None:
        config_path = workdir / "pbx.yaml"
        config_path.write_text(config_yaml)
        command += ["--config", str(config_path)]
    if sip_trace:
        command.append("--sip-trace")
    command += list(extra_args)
    process_env = dict(os.environ)
    process_env["PYTHONUNBUFFERED"] = "1"
    # The repo must be importable even when the venv has no editable install.
    process_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), process_env.get("PYTHONPATH", "")) if p)
    if env:
        process_env.update(env)
    log_handle = open(log_path, "wb")
    log_handle.write(("$ " + " ".join(command) + "\n").encode())
    log_handle.flush()
    process = subprocess.Popen(command, cwd=workdir, stdout=log_handle, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, env=process_env, start_new_session=True)
    server = PbxServer(process=process, host=LOOPBACK, sip_port=sip_port, http_port=http_port,
                       workdir=workdir, var_dir=var_dir, log_path=log_path,
                       config_path=config_path, _log_handle=log_handle)
    deadline = time.monotonic() + startup_timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            server.stop()
            raise ServerStartError(
                f"`pbx serve` exited with {process.returncode} before /healthz was ready;"
                f" log tail:\n{server.log_tail()}")
        try:
            status, body = server.http_get("/healthz", timeout=1.0)
            if status == 200:
                return server
            last = f"{status} {body[:200]}"
        except (OSError, urllib.error.URLError) as error:
            last = str(error)
        time.sleep(0.1)
    server.stop()
    raise ServerStartError(f"/healthz not ready after {startup_timeout}s ({last}); log tail:\n"
                           f"{server.log_tail()}")
