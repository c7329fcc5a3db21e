"""Callback requests over HTTP: create (with every refusal), dedupe, list, read, cancel.

Against a real Store (SQLite), a real Router and real HTTP; the last test goes through
the real `pbx serve` process.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from callbacks import CallbackDesk, Outcome
from integration import test_api_harness as harness
from integration.test_api_harness import API_PREFIX, TOKEN, ApiClient, queue_body
from pbx.api import create_api
from pbx.configuration.callbacks import CallbackConfig, CallbackSettings, QueueCallbackSettings
from pbx.configuration.models import QueueCreate, queue_config
from pbx.store import Store
from pbx.store.callbacks import SqlCallbackStore
from router import Router

pytestmark = pytest.mark.integration

clock = harness.clock
router = harness.router
event_bus = harness.event_bus  # the router's fixture needs it
store = harness.store

# A Wednesday, 10:00 in Madrid.
NOW = datetime(2026, 3, 4, 9, 0, tzinfo=UTC)


class WallClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def callback_clock() -> WallClock:
    return WallClock()


@pytest.fixture
async def desk(store: Store, callback_clock: WallClock) -> CallbackDesk:
    return CallbackDesk(SqlCallbackStore(store.engine), site="madrid", clock=callback_clock)


CONFIG = CallbackConfig(callbacks=CallbackSettings(queues={
    "sales": QueueCallbackSettings.model_validate({
        "business_hours": {"timezone": "Europe/Madrid", "weekly": {"mon-fri": "09:00-18:00"}}}),
}))


@pytest.fixture
async def api(store: Store, router: Router, desk: CallbackDesk) -> AsyncIterator[ApiClient]:
    for name in ("sales", "support"):
        config = queue_config(name, QueueCreate.model_validate(queue_body(name)))
        await store.save_queue(config)
        router.upsert_queue(config)
    root = web.Application()
    root.add_subapp(API_PREFIX, create_api(store, router, TOKEN, callback_desk=desk,
                                           callback_config=CONFIG))
    server = TestServer(root, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield ApiClient(session, f"http://127.0.0.1:{server.port}{API_PREFIX}", TOKEN)
    finally:
        await server.close()


async def test_a_request_is_stored_pending_in_the_queue_and_readable(api: ApiClient) -> None:
    reply = await api.post("/callbacks", {"number": "+34 600-123 456", "queue": "sales"})
    assert reply.status == 201, reply.body
    body = reply.body
    assert body["number"] == "+34600123456"
    assert body["queue"] == "sales" and body["state"] == "pending" and body["site"] == "madrid"
    assert body["requested_at"] == body["earliest_at"] == "2026-03-04T09:00:00Z"
    assert body["attempts"] == 0 and body["history"] == []
    assert reply.headers["Location"] == f"{API_PREFIX}/callbacks/{body['id']}"
    assert (await api.get(f"/callbacks/{body['id']}")).body == body


@pytest.mark.parametrize(("number", "words"), [
    ("", "empty"),
    ("   ", "empty"),
    ("1234567890123456", "at most 15 are allowed"),
    ("600abc123", "letters"),
    ("12", "at least 3"),
    ("600#123", "digits only"),
])
async def test_an_undialable_number_is_a_400_saying_why(api: ApiClient, number: str,
                                                         words: str) -> None:
    reply = await api.post("/callbacks", {"number": number, "queue": "sales"})
    assert reply.status == 400
    error = reply.body["error"]
    assert error["code"] == "invalid_number"
    assert words in error["message"]
    assert error["fields"][0]["field"] == "number"
    assert (await api.get("/callbacks")).body == []  # nothing stored


async def test_an_unknown_queue_is_a_400(api: ApiClient) -> None:
    reply = await api.post("/callbacks", {"number": "600123456", "queue": "nowhere"})
    assert reply.status == 400
    assert reply.body["error"]["code"] == "unknown_queue"
    assert "'nowhere'" in reply.body["error"]["message"]


async def test_a_scheduled_time_must_be_in_the_queues_hours_and_not_past(api: ApiClient) -> None:
    sunday = "2026-03-08T11:00:00+01:00"
    reply = await api.post("/callbacks", {"number": "600123456", "queue": "sales",
                                          "earliest_at": sunday})
    assert reply.status == 400
    assert reply.body["error"]["code"] == "outside_business_hours"
    assert "closed at 2026-03-08T11:00:00+01:00" in reply.body["error"]["message"]
    assert "mon-fri 09:00-18:00" in reply.body["error"]["message"]

    evening = "2026-03-04T19:30:00+01:00"
    reply = await api.post("/callbacks", {"number": "600123456", "queue": "sales",
                                          "earliest_at": evening})
    assert reply.body["error"]["code"] == "outside_business_hours"

    yesterday = "2026-03-03T12:00:00+01:00"
    reply = await api.post("/callbacks", {"number": "600123456", "queue": "sales",
                                          "earliest_at": yesterday})
    assert reply.status == 400
    assert reply.body["error"]["code"] == "in_the_past"

    thursday_noon = "2026-03-05T12:00:00+01:00"
    reply = await api.post("/callbacks", {"number": "600123456", "queue": "sales",
                                          "earliest_at": thursday_noon})
    assert reply.status == 201
    assert reply.body["earliest_at"] == "2026-03-05T11:00:00Z"
    assert reply.body["requested_at"] == "2026-03-04T09:00:00Z"  # its place in line is now


async def test_a_queue_without_hours_takes_any_future_time(api: ApiClient) -> None:
    reply = await api.post("/callbacks", {"number": "600123456", "queue": "support",
                                          "earliest_at": "2026-03-08T03:00:00Z"})
    assert reply.status == 201


async def test_a_time_without_offset_is_refused(api: ApiClient) -> None:
    reply = await api.post("/callbacks", {"number": "600123456", "queue": "sales",
                                          "earliest_at": "2026-03-05T12:00:00"})
    assert reply.status == 422
    assert reply.body["error"]["fields"][0]["field"] == "earliest_at"


async def test_a_second_request_for_the_same_number_and_queue_is_a_409_with_the_first(
        api: ApiClient, callback_clock: WallClock) -> None:
    first = await api.post("/callbacks", {"number": "600 123 456", "queue": "sales"})
    callback_clock.now += timedelta(minutes=1)
    again = await api.post("/callbacks", {"number": "600-123-456", "queue": "sales"})
    assert again.status == 409
    assert again.body["error"]["code"] == "duplicate_callback"
    assert again.body["callback"] == first.body
    assert again.headers["Location"] == first.headers["Location"]
    other_queue = await api.post("/callbacks", {"number": "600123456", "queue": "support"})
    assert other_queue.status == 201


async def test_the_list_filters_by_state_and_queue_in_line_order_a_page_at_a_time(
        api: ApiClient, callback_clock: WallClock) -> None:
    ids = []
    for n, queue in enumerate(["sales", "support", "sales", "sales"]):
        callback_clock.now = NOW + timedelta(seconds=n)
        ids.append((await api.post("/callbacks", {"number": f"60000000{n}", "queue": queue})).body["id"])
    assert (await api.delete(f"/callbacks/{ids[2]}")).status == 200

    everything = (await api.get("/callbacks")).body
    assert [item["id"] for item in everything] == ids
    sales_pending = (await api.get("/callbacks?queue=sales&state=pending")).body
    assert [item["id"] for item in sales_pending] == [ids[0], ids[3]]
    cancelled = (await api.get("/callbacks?state=cancelled")).body
    assert [item["id"] for item in cancelled] == [ids[2]]
    page = (await api.get("/callbacks?limit=2&offset=1")).body
    assert [item["id"] for item in page] == ids[1:3]

    bad_state = await api.get("/callbacks?state=ringing")
    assert bad_state.status == 422
    assert "pending" in bad_state.body["error"]["message"]
    assert (await api.get("/callbacks?limit=0")).status == 422


async def test_cancel_ends_a_pending_request_once(api: ApiClient, desk: CallbackDesk) -> None:
    created = (await api.post("/callbacks", {"number": "600123456", "queue": "sales"})).body
    reply = await api.delete(f"/callbacks/{created['id']}")
    assert reply.status == 200
    assert reply.body["state"] == "cancelled"
    assert reply.body["history"][-1]["outcome"] == Outcome.CANCELLED.value
    again = await api.delete(f"/callbacks/{created['id']}")
    assert again.status == 409
    assert again.body["error"]["code"] == "invalid_transition"
    assert "cancelled" in again.body["error"]["message"]
    assert await desk.claim_due() == []  # nothing left to dial
    # A new request for the same number is allowed once the first has ended.
    assert (await api.post("/callbacks", {"number": "600123456", "queue": "sales"})).status == 201


async def test_unknown_ids_are_404(api: ApiClient) -> None:
    assert (await api.get("/callbacks/nope")).status == 404
    assert (await api.delete("/callbacks/nope")).body["error"]["code"] == "not_found"


async def test_callbacks_need_the_token_and_are_in_the_description(api: ApiClient) -> None:
    assert (await api.call("GET", "/callbacks", authorize=False)).status == 401
    document = (await api.get("/openapi.json")).body
    post = document["paths"]["/callbacks"]["post"]
    assert set(post["responses"]) >= {"201", "400", "409", "422"}
    assert post["responses"]["409"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/DuplicateCallbackBody")
    assert set(document["paths"]["/callbacks/{callback_id}"]) == {"get", "delete"}


def _http(server, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.http_url + API_PREFIX + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_real_server_takes_lists_and_cancels_callbacks(pbx_server) -> None:
    import yaml

    from integration.server_fixture import default_config_yaml

    # A site standing alone: with other sites' agents it would need a broker and PostgreSQL.
    demo = yaml.safe_load(default_config_yaml())
    server = pbx_server(default_config_yaml(
        agents=[agent for agent in demo["agents"] if agent["site"] == "madrid"]),
        extra_args=("--site", "madrid"))
    status, created = _http(server, "POST", "/callbacks", {"number": "+34600111222", "queue": "billing"})
    assert status == 201, created
    assert created["site"] == "madrid" and created["state"] == "pending"
    status, duplicate = _http(server, "POST", "/callbacks", {"number": "+34 600 111 222", "queue": "billing"})
    assert status == 409 and duplicate["callback"]["id"] == created["id"]
    status, refused = _http(server, "POST", "/callbacks", {"number": "call me", "queue": "billing"})
    assert status == 400 and refused["error"]["code"] == "invalid_number"
    status, listed = _http(server, "GET", "/callbacks?state=pending&queue=billing")
    assert [item["id"] for item in listed] == [created["id"]]
    status, cancelled = _http(server, "DELETE", f"/callbacks/{created['id']}")
    assert status == 200 and cancelled["state"] == "cancelled"


def test_a_customer_who_reaches_an_agent_has_their_callbacks_cancelled(pbx_server) -> None:
    from integration.call_peers import reply, ring_agent_through_ivr
    from integration.server_fixture import default_config_yaml
    from integration.test_stuck_states import FLOW, SDP, _wait_for
    from peers import raw
    from peers.procs import silent_rtp_port

    server = pbx_server(default_config_yaml(
        extensions={"100": {"application": "ivr", "flow": str(FLOW)}}, routing={"auto_login": True}))
    customer = "+34910000002"
    _, waiting = _http(server, "POST", "/callbacks", {"number": customer, "queue": "billing"})
    _, other = _http(server, "POST", "/callbacks", {"number": "+34910000003", "queue": "billing"})
    target = (server.host, server.sip_port)
    with raw.UdpPeer(target) as agent, raw.UdpPeer(target) as caller:
        invite = ring_agent_through_ivr(server, agent, caller, customer, SDP.format(port=silent_rtp_port(10)).encode())
        status, still = _http(server, "GET", f"/callbacks/{waiting['id']}")
        assert still["state"] == "pending"  # ringing is not reaching an agent
        agent.send(reply(invite, 200, "OK", tag="agent", body=SDP.format(port=silent_rtp_port(20)).encode(),
                         contact=f"<sip:1001@{agent.local[0]}:{agent.local[1]}>"))
        assert _wait_for(
            lambda: _http(server, "GET", f"/callbacks/{waiting['id']}")[1]["state"] == "cancelled", 5)
    _, cancelled = _http(server, "GET", f"/callbacks/{waiting['id']}")
    assert "the customer reached an agent" in cancelled["history"][-1]["detail"]
    assert _http(server, "GET", f"/callbacks/{other['id']}")[1]["state"] == "pending"
