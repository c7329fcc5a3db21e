"""Call history over HTTP: CDRs and the queue log as the call recorder stores them.

Also the recorder end to end (events in, records out over the API) and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest

from events import CallAnswered, CallEnded, CallStarted, EventBus
from events.ivr import EnqueueRequested, IvrFinished, IvrNodeEntered, IvrStarted
from integration import postgres_fixture
from integration import test_api_harness as harness
from integration.postgres_fixture import PostgresServer, fresh_postgres_database
from integration.test_api_harness import ApiClient, ManualClock
from pbx.records import CallRecorder
from pbx.store import CallRecord, QueueLogEntry, Store
from router import AgentProfile, QueueConfig, Router, RoutingRequest

pytestmark = pytest.mark.integration

# The harness's fixtures, by name, for pytest to find in this module.
api = harness.api
clock = harness.clock
router = harness.router
event_bus = harness.event_bus
store = harness.store
postgres_server = postgres_fixture.postgres_server

NOON = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)


def minutes(n: float) -> datetime:
    return NOON + timedelta(minutes=n)


@pytest.fixture
async def history(store: Store) -> list[CallRecord]:
    """Three calls: answered in sales by 1001, abandoned in sales, answered in billing by 1002."""
    records = [
        CallRecord("c-1", "600111222", "100", minutes(0), minutes(1), minutes(5), "sales", "1001",
                   "answered", ("welcome", "to_sales"), 60.0, 240.0, "madrid"),
        CallRecord("c-2", "600333444", "100", minutes(10), None, minutes(12), "sales", None,
                   "abandoned", ("welcome", "to_sales"), 90.0, None, "madrid"),
        CallRecord("c-3", "600555666", "100", minutes(20), minutes(21), minutes(30), "billing",
                   "1002", "answered", ("welcome", "to_billing"), 30.0, 540.0, "madrid"),
    ]
    stored = [await store.append_call_record(record) for record in records]
    await store.append_queue_log([
        QueueLogEntry(minutes(0), "c-1", "ENTERQUEUE", "sales", None, {"position": 1}),
        QueueLogEntry(minutes(0.5), "c-1", "OFFER", "sales", "1001", {"reservation_id": "r1"}),
        QueueLogEntry(minutes(1), "c-1", "CONNECT", "sales", "1001", {"waited_seconds": 60.0}),
        QueueLogEntry(minutes(5), "c-1", "COMPLETE", "sales", "1001", {"talk_seconds": 240.0}),
        QueueLogEntry(minutes(10), "c-2", "ENTERQUEUE", "sales", None, {"position": 1}),
        QueueLogEntry(minutes(11.5), "c-2", "ABANDON", "sales", None, {"waited_seconds": 90.0}),
        QueueLogEntry(minutes(20), "c-3", "ENTERQUEUE", "billing", None, {"position": 1}),
        QueueLogEntry(minutes(21), "c-3", "CONNECT", "billing", "1002", {"waited_seconds": 30.0}),
    ])
    return stored


def call_ids(body: list[dict[str, Any]]) -> list[str]:
    return [item["call_id"] for item in body]


def q(moment: datetime) -> str:
    return quote(moment.isoformat())


# ---------------------------------------------------------------------- one call


async def test_a_call_with_its_queue_log(api: ApiClient, history: list[CallRecord]) -> None:
    reply = await api.get("/calls/c-1")
    assert reply.status == 200
    body = reply.body
    assert body["id"] == history[0].id
    assert {key: body[key] for key in ("caller", "queue", "agent", "disposition", "site")} == {
        "caller": "600111222", "queue": "sales", "agent": "1001", "disposition": "answered",
        "site": "madrid"}
    assert datetime.fromisoformat(body["started"]) == minutes(0)
    assert datetime.fromisoformat(body["answered"]) == minutes(1)
    assert (body["wait_seconds"], body["talk_seconds"]) == (60.0, 240.0)
    assert body["ivr_path"] == ["welcome", "to_sales"]
    assert [(line["event"], line["agent"]) for line in body["queue_log"]] == [
        ("ENTERQUEUE", None), ("OFFER", "1001"), ("CONNECT", "1001"), ("COMPLETE", "1001")]
    assert body["queue_log"][2]["data"] == {"waited_seconds": 60.0}
    assert datetime.fromisoformat(body["queue_log"][1]["time"]) == minutes(0.5)


async def test_an_unknown_call_is_a_json_404(api: ApiClient, history: list[CallRecord]) -> None:
    reply = await api.get("/calls/nope")
    assert reply.status == 404
    assert reply.body["error"]["code"] == "not_found"
    assert "nope" in reply.body["error"]["message"]


# ---------------------------------------------------------------------- lists


async def test_calls_are_listed_oldest_first_and_filtered(api: ApiClient,
                                                          history: list[CallRecord]) -> None:
    assert call_ids((await api.get("/calls")).body) == ["c-1", "c-2", "c-3"]
    assert call_ids((await api.get("/calls?queue=sales")).body) == ["c-1", "c-2"]
    assert call_ids((await api.get("/calls?agent=1002")).body) == ["c-3"]
    assert call_ids((await api.get("/calls?queue=sales&agent=1002")).body) == []
    window = f"/calls?since={q(minutes(10))}&until={q(minutes(20))}"
    assert call_ids((await api.get(window)).body) == ["c-2"]  # since inclusive, until exclusive
    assert call_ids((await api.get("/calls?since=2024-05-06T12:05:00Z")).body) == ["c-2", "c-3"]
    # The same instant with an offset, and naive (taken as UTC).
    assert call_ids((await api.get("/calls?since=2024-05-06T14:05:00%2B02:00")).body) == ["c-2", "c-3"]
    assert call_ids((await api.get("/calls?since=2024-05-06T12:05:00")).body) == ["c-2", "c-3"]
    # An unescaped "+" arrives as a space; the offset is still understood.
    assert call_ids((await api.get("/calls?until=2024-05-06T14:05:00+02:00")).body) == ["c-1"]


async def test_calls_are_paged(api: ApiClient, history: list[CallRecord]) -> None:
    assert call_ids((await api.get("/calls?limit=2")).body) == ["c-1", "c-2"]
    assert call_ids((await api.get("/calls?limit=2&offset=2")).body) == ["c-3"]
    assert (await api.get("/calls?offset=3")).body == []


async def test_the_queue_log_is_listed_filtered_and_paged(api: ApiClient,
                                                          history: list[CallRecord]) -> None:
    everything = (await api.get("/queue-log")).body
    assert len(everything) == 8
    assert [line["time"] for line in everything] == sorted(line["time"] for line in everything)
    billing = (await api.get("/queue-log?queue=billing")).body
    assert [(line["call_id"], line["event"]) for line in billing] == [
        ("c-3", "ENTERQUEUE"), ("c-3", "CONNECT")]
    abandoned = (await api.get("/queue-log?call_id=c-2")).body
    assert [line["event"] for line in abandoned] == ["ENTERQUEUE", "ABANDON"]
    assert abandoned[1]["data"] == {"waited_seconds": 90.0}
    late = (await api.get(f"/queue-log?since={q(minutes(11))}&limit=2&offset=1")).body
    assert [(line["call_id"], line["event"]) for line in late] == [
        ("c-3", "ENTERQUEUE"), ("c-3", "CONNECT")]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("/calls?since=yesterday", "since"),
        ("/calls?until=2024-13-01T00:00:00", "until"),
        ("/calls?limit=0", "limit"),
        ("/calls?limit=many", "limit"),
        ("/calls?offset=-1", "offset"),
        ("/calls?queue=no%20spaces", "queue"),
        ("/calls?agent=" + "x" * 65, "agent"),
        ("/calls?since=2024-05-06T12:00:00Z&until=2024-05-06T11:00:00Z", "until"),
        ("/queue-log?since=soon", "since"),
        ("/queue-log?limit=1001", "limit"),
        ("/queue-log?queue=%2Fetc", "queue"),
    ],
)
async def test_bad_query_parameters_are_named(api: ApiClient, query: str, field: str) -> None:
    reply = await api.get(query)
    assert reply.status == 422, reply.body
    assert reply.body["error"]["code"] == "validation_failed"
    assert [problem["field"] for problem in reply.body["error"]["fields"]] == [field]


async def test_history_is_described_in_openapi(api: ApiClient) -> None:
    document = (await api.get("/openapi.json")).body
    paths = document["paths"]
    one = paths["/calls/{call_id}"]["get"]
    assert one["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CallView"}
    assert document["components"]["schemas"]["CallView"]["anyOf"] == [
        {"$ref": "#/components/schemas/CallHistoryView"},
        {"$ref": "#/components/schemas/LiveCallDetailView"}]
    live = paths["/calls/live"]["get"]["responses"]["200"]["content"]["application/json"]
    assert live["schema"]["items"] == {"$ref": "#/components/schemas/LiveCallModel"}
    assert "404" in one["responses"]
    listing = paths["/calls"]["get"]
    assert listing["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "array"
    assert [p["name"] for p in listing["parameters"]] == ["limit", "offset"]
    assert "422" in listing["responses"]
    log_schema = paths["/queue-log"]["get"]["responses"]["200"]["content"]["application/json"]
    assert log_schema["schema"]["items"] == {"$ref": "#/components/schemas/QueueLogView"}
    schemas = document["components"]["schemas"]
    assert "queue_log" in schemas["CallHistoryView"]["properties"]
    assert "disposition" in schemas["CallRecordView"]["required"]


# ---------------------------------------------------------------------- the recorder end to end


def _one_queued_call(bus: EventBus, router: Router, clock: ManualClock, call_id: str) -> None:
    """A caller goes through the IVR to sales, agent 1001 answers, the caller hangs up
    (``router`` publishes to ``bus``)."""
    router.upsert_queue(QueueConfig("sales", {"sales": 1}, wrap_up_seconds=0))
    router.upsert_agent(AgentProfile("1001", "Ana", "madrid", {"sales": 5}, frozenset({"es"})))
    router.login("1001")
    bus.publish(CallStarted(call_id, "600111222", "100", "application"))
    bus.publish(CallAnswered(call_id, "application"))
    bus.publish(IvrStarted(call_id, "demo", "600111222"))
    bus.publish(IvrNodeEntered(call_id, "demo", "welcome", "play"))
    bus.publish(EnqueueRequested(call_id, "demo", "sales", 1))
    clock.now += 8
    router.enqueue(RoutingRequest(call_id, "sales", caller="600111222"))
    [reservation] = router.dispatch()
    router.ringing(reservation.reservation_id)
    clock.now += 4
    router.answered(reservation.reservation_id)
    clock.now += 120
    # The server's order: the line ends, the router is told, the IVR's enqueue node returns.
    bus.publish(CallEnded(call_id, "application", "caller_hangup", None, 132))
    router.call_ended(call_id)
    bus.publish(IvrFinished(call_id, "demo", "enqueued", "welcome"))


async def test_recorded_calls_are_served(api: ApiClient, store: Store, router: Router,
                                         clock: ManualClock, event_bus: EventBus) -> None:
    recorder = CallRecorder(store, event_bus, None, "madrid", clock)
    recorder.start()
    try:
        _one_queued_call(event_bus, router, clock, "e2e-1")
        await recorder.flush()
    finally:
        await recorder.close()
    body = (await api.get("/calls/e2e-1")).body
    assert (body["disposition"], body["queue"], body["agent"]) == ("answered", "sales", "1001")
    assert (body["wait_seconds"], body["talk_seconds"]) == (4.0, 120.0)
    assert body["ivr_path"] == ["welcome"]
    assert [line["event"] for line in body["queue_log"]] == [
        "ENTERQUEUE", "OFFER", "RINGING", "CONNECT", "COMPLETE", "WRAPUPEND"]
    assert call_ids((await api.get("/calls?agent=1001")).body) == ["e2e-1"]


@pytest.fixture
async def postgres_store(postgres_server: PostgresServer) -> AsyncIterator[Store]:
    async with fresh_postgres_database(postgres_server) as url:
        opened = await Store.open(url)
        try:
            yield opened
        finally:
            await opened.close()


async def test_the_recorder_writes_to_postgresql(postgres_store: Store) -> None:
    clock = ManualClock()
    clock.now = NOON.timestamp()
    bus = EventBus()
    router = Router(clock, publish=bus.publish)
    recorder = CallRecorder(postgres_store, bus, None, "lima", clock)
    recorder.start()
    try:
        _one_queued_call(bus, router, clock, "pg-1")
        await recorder.flush()
    finally:
        await recorder.close()
    [record] = await postgres_store.call_records(call_id="pg-1")
    assert (record.disposition, record.site, record.agent) == ("answered", "lima", "1001")
    assert record.started == NOON and record.ended == NOON + timedelta(seconds=132)
    lines = await postgres_store.queue_log(call_id="pg-1")
    assert [line.event for line in lines] == [
        "ENTERQUEUE", "OFFER", "RINGING", "CONNECT", "COMPLETE", "WRAPUPEND"]
    assert lines[3].data["rang_seconds"] == 4.0
