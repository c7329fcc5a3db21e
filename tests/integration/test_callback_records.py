"""The callback call's record names the call the customer asked from and the request.

A real call (SIPp to the demo's greeting) ends and has its record; a callback request is
made for it through the callbacks desk on the server's store, as the IVR's offer makes
them; the real server claims it, rings an agent (baresip) and calls the customer through a
SIPp trunk. The
callback call's record, read through ``GET /api/v1/calls``, names the original call and
the request, and its queue log has the try's outcome.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from callbacks.desk import CallbackDesk
from integration.server_fixture import PbxServer
from integration.test_callback_trunk import (
    ANSWERS_AFTER_CHALLENGE,
    NUMBER,
    _agent,
    _config,
    _first_outcome,
    _hang_up,
    _refuses,
)
from pbx.store import Store
from pbx.store.callbacks import SqlCallbackStore
from peers import sipp

pytestmark = pytest.mark.integration


def _calls(server: PbxServer) -> list[dict]:
    status, body = server.http_get("/api/v1/calls?limit=1000", timeout=10)
    assert status == 200, body
    return json.loads(body)


def _request_callback(store_url: str, origin_call_id: str) -> str:
    async def request() -> str:
        store = await Store.open(store_url)
        try:
            desk = CallbackDesk(SqlCallbackStore(store.engine), site="madrid",
                                clock=lambda: datetime.now(UTC))
            created, new = await desk.request(NUMBER, "billing", origin_call_id=origin_call_id)
            assert new
            return created.id
        finally:
            await store.close()
    return asyncio.run(request())


@pytest.mark.parametrize(("trunk_scenario", "outcome", "disposition"), [
    (ANSWERS_AFTER_CHALLENGE, "answered", "answered"),
    (_refuses("486 Busy Here"), "busy", "rejected"),
], ids=["answered", "busy"])
def test_the_callback_calls_record_names_the_original_call_and_the_request(
        pbx_server, tmp_path: Path, trunk_scenario: str, outcome: str, disposition: str) -> None:
    store_url = f"sqlite+aiosqlite:///{tmp_path}/madrid.db"
    trunk = sipp.start(None, scenario=trunk_scenario, workdir=tmp_path / "trunk", calls=1)
    try:
        server = pbx_server(_config(trunk.port, store={"url": store_url}),
                            extra_args=("--site", "madrid"))
        agent = _agent(server, tmp_path / "agent")  # a callback rings an agent first
        caller = sipp.start(server.sip_address, service="101", calls=1, duration_ms=500,
                            workdir=tmp_path / "caller")
        assert caller.wait(30).successful == 1
        deadline = time.monotonic() + 15
        while not (records := [r for r in _calls(server) if r["callee"] == "101"]) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        [origin] = records
        request_id = _request_callback(store_url, origin["call_id"])
        body = _first_outcome(server, request_id)
        assert [entry["outcome"] for entry in body["history"]] == [outcome]
        _hang_up(agent)
        trunk.wait(15)
    finally:
        trunk.stop()

    deadline = time.monotonic() + 15
    while not (records := [r for r in _calls(server) if r["callback_request_id"] == request_id]) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    [callback] = records
    assert (callback["origin_call_id"], callback["callback_request_id"]) == (origin["call_id"], request_id)
    assert (callback["callee"], callback["queue"], callback["disposition"]) == (
        NUMBER, "billing", disposition)
    assert (callback["answered"] is not None) == (outcome == "answered")
    assert callback["ended"] is not None
    # The original call's record names no origin; the callback call's queue log has the try.
    assert (origin["origin_call_id"], origin["callback_request_id"]) == (None, None)
    status, detail = server.http_get(f"/api/v1/calls/{callback['call_id']}")
    assert status == 200, detail
    [line] = [line for line in json.loads(detail)["queue_log"] if line["event"] == "CALLBACK"]
    assert line["queue"] == "billing"
    assert (line["data"]["request_id"], line["data"]["origin_call_id"], line["data"]["outcome"]) == (
        request_id, origin["call_id"], outcome)
