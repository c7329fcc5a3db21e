"""The front door of compose.yaml, run as its container runs it: the service's entrypoint
and command, with the mounted folder, the runtime folder and the addresses moved to this
machine's free loopback ports. It renders the shipped kamailio.cfg and starts Kamailio,
and calls through it reach both real sites (Docker itself cannot run here)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from integration.front_door_calls import read_call_traces, start_callers
from integration.kamailio_fixture import kamailio_binary, options_answer
from peers.procs import LOOPBACK, free_port, stop_process_group, tail

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def compose_front_door_argv(folder: Path, listen_port: int, sites: dict[str, str]) -> list[str]:
    """The container's argv (entrypoint + command) for this machine: the same words, with
    the mount and runtime paths, the listen port and the sites' addresses replaced."""
    service = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())["services"]["front-door"]
    [mount] = [volume.split(":") for volume in service["volumes"]]
    source, target = mount[0], mount[1]
    assert source == "./deploy/kamailio"
    command = []
    for argument in service["command"]:
        name, _, value = argument.partition("=")
        if name == "--listen":
            argument = f"--listen={LOOPBACK}:{listen_port}"
        elif name == "--site":
            site = value.split("=", 1)[0]
            argument = f"--site={site}={sites[site]}"
        command.append(argument)
    argv = []
    for word in service["entrypoint"]:
        word = word.replace("$$", "$")  # Compose's escape for a literal $
        word = word.replace(target, str(REPO_ROOT / "deploy" / "kamailio"))
        word = word.replace("/run/front-door", str(folder))
        argv.append(word)
    return argv + command


def test_the_compose_front_door_starts_kamailio_and_carries_calls_to_both_sites(
        pbx_server, tmp_path: Path) -> None:
    binary = kamailio_binary()
    sites = {"madrid": pbx_server(), "bogota": pbx_server()}
    port = free_port(udp=True, tcp=False)
    folder = tmp_path / "front-door"
    argv = compose_front_door_argv(folder, port, {n: s.sip_address for n, s in sites.items()})
    env = dict(os.environ, PATH=f"{Path(binary).parent}:{os.environ.get('PATH', '')}")
    log_path = tmp_path / "front-door.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        try:
            answered = None
            for _ in range(60):
                if process.poll() is not None:
                    break
                answered = options_answer((LOOPBACK, port), timeout=0.25)
                if answered == 200:
                    break
            assert answered == 200, tail(log_path, 40)
            # The rendered folder holds the shipped configuration, unchanged.
            assert (folder / "kamailio.cfg").read_text() == (
                REPO_ROOT / "deploy" / "kamailio" / "kamailio.cfg").read_text()
            assert "1001" in (folder / "front-door.homes.cfg").read_text()

            callers, calls_log = start_callers(f"{LOOPBACK}:{port}", tmp_path / "callers",
                                               calls=20, rate=10, talk_ms=300)
            result = callers.wait(60)
            traces = read_call_traces(calls_log)
            assert result.returncode == 0, result.describe()
            assert len(traces) == 20 and all(t.answered_at is not None for t in traces), traces
            assert {t.site_port for t in traces} == {s.sip_port for s in sites.values()}
        finally:
            stop_process_group(process)
