"""`pbx drill` against two real sites (PostgreSQL, Mosquitto, `pbx serve --site`).

The drill drains madrid: madrid answers SIP OPTIONS and new INVITEs 503 (what takes it
out of a front door's rotation: test_drill_load.py runs it behind Kamailio under load),
its pending callback requests are handed over and bogota adopts them, the report says so,
the drain shows in madrid's metrics and events log; ``--back`` restores madrid. A dry run
changes nothing; unknown sites, an unreachable server, a wrong token and a drill already
running are clear errors that change nothing either.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from integration import mosquitto_fixture, postgres_fixture
from integration import sipp_agents as sa
from integration.call_peers import random_port_range
from integration.postgres_fixture import PostgresServer, create_database, drop_database
from integration.server_fixture import REPO_ROOT, PbxServer
from peers.procs import LOOPBACK, free_port

pytestmark = pytest.mark.integration

postgres_server = postgres_fixture.postgres_server
mqtt_url = mosquitto_fixture.mqtt_url
bus_prefix = mosquitto_fixture.bus_prefix

TOKEN = "drill-token-0123456789"
SITES = {"madrid": "Europe/Madrid", "bogota": "America/Bogota"}


def two_sites_config(accounts: list[tuple[str, str]], store_url: str, mqtt_url: str,
                     bus_prefix: str, **options) -> dict:
    """One agent per site, in site order; a shared PostgreSQL database and broker; the API
    behind a token."""
    config = yaml.safe_load(sa.contact_center_config(accounts, **options))
    config["sites"] = [{"name": name, "timezone": zone} for name, zone in SITES.items()]
    for agent, site in zip(config["agents"], SITES, strict=True):
        agent["site"] = site
    config["store"]["url"] = store_url
    config["http"]["api_token"] = TOKEN
    config["bus"] = {"url": mqtt_url, "topic_prefix": bus_prefix, "heartbeat_interval": 0.5}
    return config


def api(server: PbxServer, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{server.http_url}/api/v1{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            text = reply.read()
            return reply.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def options_status(server: PbxServer) -> int:
    """The status a site answers a front door's OPTIONS probe with."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        sock.sendto((f"OPTIONS sip:{server.sip_address} SIP/2.0\r\n"
                     f"Via: SIP/2.0/UDP {LOOPBACK}:{port};branch=z9hG4bK-drill{port}\r\n"
                     "Max-Forwards: 70\r\n"
                     f"From: <sip:probe@{LOOPBACK}>;tag=probe\r\n"
                     f"To: <sip:{server.sip_address}>\r\n"
                     f"Call-ID: probe-{port}@drill\r\nCSeq: 1 OPTIONS\r\n"
                     "Content-Length: 0\r\n\r\n").encode(), (server.host, server.sip_port))
        reply = sock.recv(4096).decode()
    return int(reply.split()[1])


def run_drill(*args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pbx", "drill", *args]
    if token is not None:
        command += ["--token", token]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)


@pytest.fixture
def two_sites(pbx_server, postgres_server: PostgresServer, mqtt_url: str, bus_prefix: str):
    name = asyncio.run(create_database(postgres_server))
    config = two_sites_config(sa.agent_accounts(2), postgres_server.url(name), mqtt_url, bus_prefix)
    servers: dict[str, PbxServer] = {}
    try:
        for site in SITES:
            low, high = random_port_range(200)  # each site its own RTP ports
            config["media"].update(port_min=low, port_max=high)
            servers[site] = pbx_server(yaml.safe_dump(config, sort_keys=False),
                                       extra_args=("--site", site))
        yield servers
    finally:
        for server in servers.values():
            server.stop()  # before its database goes
        asyncio.run(drop_database(postgres_server, name))


def test_a_drill_drains_madrid_hands_its_callbacks_to_bogota_and_back_restores_it(
        two_sites, tmp_path: Path) -> None:
    madrid, bogota = two_sites["madrid"], two_sites["bogota"]
    apis = ["--api", f"madrid={madrid.http_url}", "--api", f"bogota={bogota.http_url}"]
    # Callback requests taken at madrid are madrid's (no trunk: they wait there).
    numbers = ["+34910000101", "+34910000102", "+34910000103"]
    ids = []
    for number in numbers:
        status, created = api(madrid, "POST", "/callbacks", {"number": number, "queue": sa.QUEUE})
        assert status == 201, created
        assert created["site"] == "madrid"
        ids.append(created["id"])
    assert options_status(madrid) == 200

    # A dry run says what would happen and changes nothing.
    dry = run_drill("--from", "madrid", "--to", "bogota", "--dry-run", *apis)
    assert dry.returncode == 0, dry.stderr
    assert "Dry run: drill from madrid to bogota (nothing changed)" in dry.stdout
    assert "hand madrid's 3 pending callback request(s) over for bogota to adopt" in dry.stdout
    assert api(madrid, "GET", "/sites/madrid/drain")[1]["draining"] is False
    assert options_status(madrid) == 200

    report_path = tmp_path / "drill.json"
    drill = run_drill("--from", "madrid", "--to", "bogota", "--report", str(report_path), *apis)
    assert drill.returncode == 0, drill.stdout + drill.stderr
    report = json.loads(report_path.read_text())
    assert (report["from"], report["to"], report["dry_run"]) == ("madrid", "bogota", False)
    assert (report["calls_lost"], report["callbacks_pending"], report["callbacks_adopted"]) == (0, 3, 3)
    assert report["rto_seconds"] is not None and report["rto_seconds"] >= 0
    assert all(report["timestamps"][step] for step in
               ("started", "drained", "calls_finished", "callbacks_moved", "ended"))
    assert "Drill from madrid to bogota: 0 calls lost" in drill.stdout
    assert "callbacks adopted by the other sites: 3 of 3" in drill.stdout
    # Madrid refuses new calls; bogota owns madrid's callbacks.
    assert options_status(madrid) == 503
    assert options_status(bogota) == 200
    for request_id in ids:
        assert api(bogota, "GET", f"/callbacks/{request_id}")[1]["site"] == "bogota"
    status, state = api(madrid, "GET", "/sites/madrid/drain")
    assert (state["draining"], state["by"], state["callbacks_handed_over"]) == (
        True, "drill to bogota", 3)
    assert madrid.metric("centralita_site_draining", site="madrid") == 1
    assert madrid.metric("centralita_drill_callbacks_handed_over_total", site="madrid") == 3
    assert "site madrid drained by drill to bogota" in madrid.log_text()

    # A second drill while this one runs is refused, and changes nothing.
    again = run_drill("--from", "madrid", "--to", "bogota", *apis)
    assert again.returncode == 1
    assert "error: a drill is already running: site madrid is drained since" in again.stderr
    reverse = run_drill("--from", "bogota", "--to", "madrid", *apis)
    assert reverse.returncode == 1 and "a drill is already running" in reverse.stderr
    assert options_status(bogota) == 200

    back = run_drill("--back", *apis)
    assert back.returncode == 0, back.stderr
    assert "madrid take(s) new calls again" in back.stdout
    assert options_status(madrid) == 200
    assert madrid.metric("centralita_site_draining", site="madrid") == 0
    assert "site madrid takes new calls again (drill back)" in madrid.log_text()
    assert run_drill("--back", *apis).stdout.strip() == "no site was drained: nothing to restore"


def test_drill_errors_are_clear_and_change_nothing(two_sites) -> None:
    madrid, bogota = two_sites["madrid"], two_sites["bogota"]
    apis = ["--api", f"madrid={madrid.http_url}", "--api", f"bogota={bogota.http_url}"]

    unknown = run_drill("--from", "madrid", "--to", "lima", *apis)
    assert unknown.returncode == 1
    assert "error: unknown site 'lima': no --api lima=URL given (sites given: bogota, madrid)" \
        in unknown.stderr
    not_in_center = run_drill("--from", "madrid", "--to", "lima", *apis,
                              "--api", f"lima={bogota.http_url}")
    assert not_in_center.returncode == 1
    assert "unknown site 'lima': the contact center's sites are bogota, madrid" \
        in not_in_center.stderr
    closed = free_port(udp=False, tcp=True)
    unreachable = run_drill("--from", "madrid", "--to", "bogota", "--api",
                            f"madrid=http://{LOOPBACK}:{closed}", "--api", f"bogota={bogota.http_url}")
    assert unreachable.returncode == 1
    assert f"error: cannot reach site madrid's server at http://{LOOPBACK}:{closed}" \
        in unreachable.stderr
    wrong_token = run_drill("--from", "madrid", "--to", "bogota", *apis, token="not-the-token")
    assert wrong_token.returncode == 1
    assert "refused the API token" in wrong_token.stderr
    swapped = run_drill("--from", "madrid", "--to", "bogota", "--api", f"madrid={bogota.http_url}",
                        "--api", f"bogota={madrid.http_url}")
    assert swapped.returncode == 1
    assert "GET /sites/madrid/drain: 409 this server is site bogota: ask site madrid's own server" in swapped.stderr
    assert run_drill("--from", "madrid", *apis).returncode == 1
    # Nothing was drained by any of them.
    for server in (madrid, bogota):
        assert options_status(server) == 200
        site = "madrid" if server is madrid else "bogota"
        assert api(server, "GET", f"/sites/{site}/drain")[1]["draining"] is False
