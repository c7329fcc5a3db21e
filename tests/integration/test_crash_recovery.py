"""kill -9 and restart: registrations and the calls in progress survive a crash.

A SIPp agent registers with digest and answers a queue call from a SIPp caller; while
they talk the server is killed with SIGKILL and started again on the same var dir /
store (SQLite, and the real PostgreSQL). Without re-registering, the agent is reachable
and available again and is offered the next queue call; the call that was in progress is
in the call records as ``interrupted``. Also: the call shows in ``/calls/live`` while it
runs, one INFO line per call start and end, and the shutdown is logged.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from integration import postgres_fixture
from integration import sipp_agents as sa
from integration.postgres_fixture import PostgresServer, create_database, drop_database
from integration.server_fixture import PbxServer
from integration.test_queue_agents import caller_xml, wait_until
from peers import sipp
from peers.procs import require_binary

pytestmark = pytest.mark.integration

postgres_server = postgres_fixture.postgres_server


def _get(server: PbxServer, path: str):
    status, body = server.http_get(path, timeout=10)
    assert status == 200, f"GET {path}: {status} {body[:300]}"
    return json.loads(body)


def _agent(server: PbxServer, extension: str) -> dict:
    return _get(server, f"/api/v1/agents/{extension}")


def _live_calls(server: PbxServer) -> list[dict]:
    return _get(server, "/api/v1/calls/live")


def _records(server: PbxServer) -> list[dict]:
    return _get(server, "/api/v1/calls")


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[tuple[str | None, tuple[str, ...]]]:
    # Both runs share one --var-dir, where the default SQLite store lives.
    yield None, ("--var-dir", str(tmp_path / "shared-var"))


@pytest.fixture
def postgres_store(postgres_server: PostgresServer) -> Iterator[tuple[str | None, tuple[str, ...]]]:
    name = asyncio.run(create_database(postgres_server))
    try:
        yield postgres_server.url(name), ()
    finally:
        asyncio.run(drop_database(postgres_server, name))


@pytest.mark.parametrize("backend", ["sqlite_store", "postgres_store"])
def test_registrations_and_calls_in_progress_survive_kill_9(pbx_server, tmp_path: Path,
                                                            backend: str, request) -> None:
    require_binary("sipp", "sip-tester")
    store_url, extra_args = request.getfixturevalue(backend)
    accounts = sa.agent_accounts(1)
    [(agent, _)] = accounts
    config = yaml.safe_load(sa.contact_center_config(accounts, rtp_timeout=600))
    config["store"]["url"] = store_url
    config_yaml = yaml.safe_dump(config, sort_keys=False)
    # The restarted server uses the same RTP ports: the dead process's phones keep streaming
    # to them for a while, and a new call's signalled address must win its port back.
    restart_yaml = config_yaml

    first = pbx_server(config_yaml, extra_args=extra_args)
    agents = sa.SippAgents(first.sip_address, accounts, tmp_path / "agents")
    caller = None
    second_caller = None
    with agents:
        assert sa.wait_for_agents(first, [agent], "available")[agent] == "available"
        caller = sipp.start(first.sip_address, scenario=caller_xml(digit="1", dtmf_after_ms=800),
                            service="100", calls=1, workdir=tmp_path / "caller")
        try:
            talking = wait_until(lambda: [c for c in _live_calls(first)
                                         if c["state"] == "talking" and c["agent"] == agent], 30)
            assert talking, f"the call never reached the agent: {_live_calls(first)}"
            [call] = talking
            assert (call["status"], call["queue"], call["kind"]) == ("live", sa.QUEUE, "application")
            assert call["waited_seconds"] is not None and call["ivr_path"][:2] == ["menu", "queue"]
            detail = _get(first, f"/api/v1/calls/{call['call_id']}")
            assert detail["status"] == "live" and detail["state"] == "talking"
            # The queue log is read from the store, which the background writer fills in batches.
            assert wait_until(lambda: [line["event"] for line in _get(
                first, f"/api/v1/calls/{call['call_id']}")["queue_log"]][:1] == ["ENTERQUEUE"], 10)
            # Noted in the store as in progress: what the crash must not lose. The note
            # naming the agent is queued before the CONNECT line and written in the same
            # transaction or earlier, so CONNECT read back from the store proves it durable.
            assert f"call {call['call_id']} started" in first.log_text()
            connected = wait_until(lambda: "CONNECT" in [
                line["event"] for line in _get(first, f"/api/v1/calls/{call['call_id']}")["queue_log"]], 15)
            assert connected, "the agent's answer never reached the store"

            os.kill(first.pid, signal.SIGKILL)
            first.process.wait(10)
            caller.stop()  # the caller hears silence and hangs up
            second = pbx_server(restart_yaml, extra_args=extra_args)

            # The agent's phone did not register again, yet the agent is back.
            assert _agent(second, agent)["live"]["reachable"] is True
            assert sa.wait_for_agents(second, [agent], "available")[agent] == "available"
            assert "restored 1 registration(s) from the store" in second.log_text()
            interrupted = [r for r in _records(second) if r["call_id"] == call["call_id"]]
            assert [(r["disposition"], r["caller"], r["callee"], r["queue"], r["agent"])
                    for r in interrupted] == [("interrupted", call["caller"], "100", sa.QUEUE, agent)]
            assert interrupted[0]["answered"] is not None and interrupted[0]["ended"] is None
            assert "recorded as interrupted" in second.log_text()

            # The next queue call reaches the agent at the address of its old REGISTER.
            second_caller = sipp.start(second.sip_address,
                                       scenario=caller_xml(digit="1", dtmf_after_ms=800,
                                                           hold_ms=3000, number="+34915550002"),
                                       service="100", calls=1, workdir=tmp_path / "second-caller")
            answered = wait_until(lambda: [r for r in _records(second)
                                          if r["disposition"] == "answered"], 60)
            assert answered, f"no answered call after the restart: {_records(second)}"
            [record] = answered
            assert (record["agent"], record["queue"]) == (agent, sa.QUEUE)
            assert second_caller.wait(30).successful == 1
            assert _live_calls(second) == []
            ended = [line for line in second.log_text().splitlines()
                     if f"call {record['call_id']} ended" in line]
            assert len(ended) == 1 and " INFO " in ended[0] and "answered" in ended[0], ended
            # Routing and context of the finished call come back from the store, even
            # after a clean restart.
            second.stop()
            assert "SIGTERM received: shutting down" in second.log_text()
            assert "Centralita stopped" in second.log_text()
            assert "shutting down: closing the store" in second.log_text()
            third = pbx_server(restart_yaml, extra_args=extra_args)
            routing = _get(third, f"/api/v1/calls/{record['call_id']}/routing")
            assert routing["decisions"] and routing["decisions"][-1]["chosen"] == agent
            context = _get(third, f"/api/v1/calls/{record['call_id']}/context")
            assert (context["agent"], context["queue"]) == (agent, sa.QUEUE)
            ivr = _get(third, f"/api/v1/calls/{record['call_id']}/ivr")
            assert ivr["outcome"] == "enqueued" and [s["node"] for s in ivr["path"]] == ["menu", "queue"]
        finally:
            caller.stop()
            if second_caller is not None:
                second_caller.stop()
