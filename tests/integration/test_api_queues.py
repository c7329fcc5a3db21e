"""Queues over HTTP: CRUD kept in step with the router, validation, live stats, routing decisions."""

from __future__ import annotations

import pytest

from integration import test_api_harness as harness
from integration.test_api_harness import ApiClient, ManualClock, agent_body, queue_body
from pbx.store import Store
from router import Router, RoutingRequest, Strategy, UnknownQueue

pytestmark = pytest.mark.integration

# The harness's fixtures, by name, for pytest to find in this module.
api = harness.api
clock = harness.clock
router = harness.router
event_bus = harness.event_bus  # the router's fixture needs it
store = harness.store


async def test_create_then_read_a_queue(api: ApiClient, store: Store, router: Router) -> None:
    created = await api.post("/queues", queue_body())
    assert created.status == 201
    assert created.headers["Location"] == "/api/v1/queues/sales"
    body = created.body
    assert body["strategy"] == "skill_weighted"
    assert body["expansion"] == [{"after_seconds": 30.0, "skills": {"sales": 3}}]
    assert body["wrap_up_seconds"] == 10  # defaulted
    assert (await api.get("/queues/sales")).body == body
    assert [queue["name"] for queue in (await api.get("/queues")).body] == ["sales"]

    stored = await store.queue("sales")
    assert stored is not None and stored.strategy is Strategy.SKILL_WEIGHTED
    assert router.queue("sales") == stored


async def test_unknown_strategy_is_refused_with_the_choices(api: ApiClient) -> None:
    reply = await api.post("/queues", queue_body(strategy="random"))
    assert reply.status == 422
    [problem] = reply.body["error"]["fields"]
    assert problem["field"] == "strategy"
    assert "longest_idle" in problem["message"] and "skill_weighted" in problem["message"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"sla_percent": 120}, "sla_percent"),
        ({"sla_seconds": 0}, "sla_seconds"),
        ({"sla_seconds": "20"}, "sla_seconds"),
        ({"max_wait_seconds": -1}, "max_wait_seconds"),
        ({"skills": {"sales": 11}}, "skills.sales"),
        ({"expansion": [{"after_seconds": -5, "skills": {}}]}, "expansion.0.after_seconds"),
        ({"expansion": [{"skills": {"sales": 2}}]}, "expansion.0.after_seconds"),
        ({"overflow": "nowhere"}, "overflow"),
        ({"language": "not a language"}, "language"),
    ],
)
async def test_invalid_queues_are_refused_naming_the_field(
    api: ApiClient, router: Router, changes: dict[str, object], field: str
) -> None:
    reply = await api.post("/queues", queue_body(**changes))
    assert reply.status == 422, reply.body
    assert field in [problem["field"] for problem in reply.body["error"]["fields"]]
    assert (await api.get("/queues")).body == []
    assert router.queues() == []


async def test_a_queue_cannot_overflow_into_itself(api: ApiClient) -> None:
    await api.post("/queues", queue_body())
    reply = await api.patch("/queues/sales", {"overflow": "sales"})
    assert reply.status == 422
    assert "itself" in reply.body["error"]["message"]


async def test_put_patch_and_delete(api: ApiClient, router: Router) -> None:
    body = queue_body()
    del body["name"]
    assert (await api.put("/queues/support", body)).status == 201
    assert (await api.put("/queues/support", {**body, "sla_seconds": 10})).status == 200
    patched = await api.patch("/queues/support", {"strategy": "round_robin"})
    assert patched.status == 200
    assert patched.body["sla_seconds"] == 10 and patched.body["strategy"] == "round_robin"
    assert router.queue("support").strategy is Strategy.ROUND_ROBIN

    assert (await api.post("/queues", queue_body("general"))).status == 201
    assert (await api.patch("/queues/support", {"overflow": "general"})).status == 200
    in_use = await api.delete("/queues/general")
    assert in_use.status == 409 and in_use.body["error"]["code"] == "in_use"

    assert (await api.delete("/queues/support")).status == 204
    assert (await api.get("/queues/support")).status == 404
    with pytest.raises(UnknownQueue):
        router.queue("support")


async def test_a_queue_with_waiting_calls_is_not_deleted(
    api: ApiClient, store: Store, router: Router
) -> None:
    await api.post("/queues", queue_body())
    router.enqueue(RoutingRequest("call-1", "sales", language="es"))
    reply = await api.delete("/queues/sales")
    assert reply.status == 409
    assert reply.body["error"]["code"] == "queue_in_use"
    assert await store.queue("sales") is not None
    assert router.queue("sales").name == "sales"


async def test_stats_show_waiting_calls_and_available_agents(
    api: ApiClient, router: Router, clock: ManualClock
) -> None:
    await api.post("/queues", queue_body(expansion=[]))
    router.enqueue(RoutingRequest("call-1", "sales", language="es"))
    clock.now += 12
    router.enqueue(RoutingRequest("call-2", "sales", language="es"))
    clock.now += 3

    stats = await api.get("/queues/sales/stats")
    assert stats.status == 200
    assert stats.body["name"] == "sales"
    assert stats.body["waiting"] == 2
    assert stats.body["longest_wait"] == pytest.approx(15)
    assert stats.body["agents_available"] == 0
    assert stats.body["service_level"] is None

    await api.post("/agents", agent_body("1001"))
    await api.post("/agents", agent_body("1002", skills={"support": 9}))
    await api.post("/agents/1001/login")
    await api.post("/agents/1002/login")
    staffed = await api.get("/queues/sales/stats")
    assert staffed.body["agents_available"] == 1  # 1002 lacks the sales skill
    assert staffed.body["ewt_seconds"] is not None

    assert (await api.get("/queues/nope/stats")).status == 404


async def test_routing_explanation_after_a_dispatch(api: ApiClient, router: Router) -> None:
    await api.post("/queues", queue_body(expansion=[]))
    await api.post("/agents", agent_body("1001", skills={"sales": 9}))
    await api.post("/agents", agent_body("1002", skills={"sales": 2}))
    await api.post("/agents/1001/login")
    await api.post("/agents/1002/login")
    router.enqueue(RoutingRequest("call-7", "sales", language="es", caller="+34600000001"))
    [reservation] = router.dispatch()

    reply = await api.get("/calls/call-7/routing")
    assert reply.status == 200
    assert reply.body["call_id"] == "call-7"
    decisions = reply.body["decisions"]
    assert decisions, "a dispatch must leave at least one decision"
    last = decisions[-1]
    assert last["chosen"] == reservation.agent == "1001"
    assert last["queue"] == "sales"
    assert last["policy"] == "skill_weighted"

    unknown = await api.get("/calls/no-such-call/routing")
    assert unknown.status == 404
    assert unknown.body["error"]["code"] == "not_found"
