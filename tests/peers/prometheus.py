"""A private Prometheus (Debian's package) on a free loopback port, and its HTTP API.

``PrometheusServer(workdir, config)`` writes ``config`` (a prometheus.yml as a dict, for
example :func:`scraping` of the shipped deploy/prometheus/prometheus.yml), starts
``prometheus`` in its own process group and waits until it is ready; ``stop()`` ends that
group. ``query(expr)`` evaluates
PromQL through ``/api/v1/query``, now or at a given time (a scrape's timestamp, where
``increase()`` needs no extrapolation).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from peers.procs import LOOPBACK, free_port, require_binary, stop_process_group, tail


def scraping(base: dict[str, Any], targets: dict[str, str], rule_files: Sequence[Path],
             interval: str = "1s") -> dict[str, Any]:
    """``base`` with its first scrape job aimed at ``targets`` (site label -> HOST:PORT),
    scraping and evaluating every ``interval``, loading ``rule_files``."""
    config = dict(base)
    config["global"] = {**base.get("global", {}), "scrape_interval": interval,
                        "evaluation_interval": interval}
    config["rule_files"] = [str(path) for path in rule_files]
    job, *others = base["scrape_configs"]
    job = {**job, "static_configs": [{"targets": [address], "labels": {"site": site}}
                                     for site, address in targets.items()]}
    config["scrape_configs"] = [job, *others]
    return config


class PrometheusError(RuntimeError):
    pass


class PrometheusServer:
    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        binary = require_binary("prometheus", "prometheus")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = free_port(udp=False, tcp=True)
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.log_path = self.workdir / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [binary, f"--config.file={config_path}",
                 f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address={LOOPBACK}:{self.port}",
                 "--storage.tsdb.retention.time=1h"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready(60)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PrometheusError(f"prometheus exited ({self.process.returncode}):\n"
                                      + tail(self.log_path))
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise PrometheusError("prometheus never became ready:\n" + tail(self.log_path))

    def stop(self) -> None:
        stop_process_group(self.process)

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; returns ``data``, raises PrometheusError with Prometheus's error."""
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            body = json.loads(error.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant vector (or scalar, as one sample) evaluated now or at time ``at``."""
        params = {"query": expr} if at is None else {"query": expr, "time": repr(at)}
        data = self.api("query", **params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str, at: float | None = None) -> float | None:
        """The single value of ``expr`` (None when it returns nothing)."""
        result = self.query(expr, at)
        if not result:
            return None
        assert len(result) == 1, f"{expr} returned {len(result)} series: {result}"
        return float(result[0]["value"][1])

    def metric_names(self) -> set[str]:
        return set(self.api("label/__name__/values"))
