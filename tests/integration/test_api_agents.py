"""Agents over HTTP: CRUD kept in step with the router, validation, state changes."""

from __future__ import annotations

import pytest

from integration import test_api_harness as harness
from integration.test_api_harness import ApiClient, agent_body, queue_body
from pbx.store import Store
from router import AgentState, Router, RoutingRequest, UnknownAgent

pytestmark = pytest.mark.integration

# The harness's fixtures, by name, for pytest to find in this module.
api = harness.api
clock = harness.clock
router = harness.router
event_bus = harness.event_bus  # the router's fixture needs it
store = harness.store


async def test_create_then_read_an_agent(api: ApiClient, store: Store, router: Router) -> None:
    created = await api.post("/agents", agent_body())
    assert created.status == 201
    assert created.headers["Location"] == "/api/v1/agents/1001"
    assert created.body["skills"] == {"sales": 7, "billing": 4}
    assert created.body["languages"] == ["en", "es"]
    assert created.body["live"]["state"] == "offline"

    fetched = await api.get("/agents/1001")
    assert fetched.status == 200
    assert fetched.body == created.body
    listed = await api.get("/agents")
    assert [agent["extension"] for agent in listed.body] == ["1001"]

    record = await store.agent("1001")
    assert record is not None and dict(record.profile.skills) == {"sales": 7, "billing": 4}
    assert router.agent("1001").profile == record.profile


async def test_creating_an_existing_agent_conflicts(api: ApiClient) -> None:
    await api.post("/agents", agent_body())
    reply = await api.post("/agents", agent_body(name="Other"))
    assert reply.status == 409
    assert reply.body["error"]["code"] == "already_exists"
    assert (await api.get("/agents/1001")).body["name"] == "Ana"


async def test_unknown_agent_is_404(api: ApiClient) -> None:
    for reply in (
        await api.get("/agents/9999"),
        await api.patch("/agents/9999", {"name": "x"}),
        await api.delete("/agents/9999"),
        await api.post("/agents/9999/login"),
    ):
        assert reply.status == 404
        assert reply.body["error"]["code"] == "not_found"
        assert "9999" in reply.body["error"]["message"]


@pytest.mark.parametrize(
    ("changes", "field", "kind"),
    [
        ({"skills": {"sales": 11}}, "skills.sales", "less_than_equal"),
        ({"skills": {"sales": 0}}, "skills.sales", "greater_than_equal"),
        ({"skills": {"sales": "5"}}, "skills.sales", "int_type"),
        ({"capacity": 2}, "capacity", "less_than_equal"),
        ({"capacity": "1"}, "capacity", "int_type"),
        ({"active": "yes"}, "active", "bool_type"),
        ({"languages": "es"}, "languages", "list_type"),
        ({"name": None}, "name", "string_type"),
        ({"extension": ""}, "extension", "string_too_short"),
        ({"shoe_size": 42}, "shoe_size", "extra_forbidden"),
        ({"site": "atlantis"}, "site", "unknown_reference"),
    ],
)
async def test_invalid_agents_are_refused_naming_the_field(
    api: ApiClient, router: Router, changes: dict[str, object], field: str, kind: str
) -> None:
    reply = await api.post("/agents", agent_body(**changes))
    assert reply.status == 422, reply.body
    error = reply.body["error"]
    assert error["code"] == "validation_failed"
    assert {"field": field, "type": kind} in [
        {"field": problem["field"], "type": problem["type"]} for problem in error["fields"]
    ]
    assert field in error["message"]
    assert (await api.get("/agents")).body == []
    assert router.agents() == []


async def test_missing_fields_are_listed(api: ApiClient) -> None:
    reply = await api.post("/agents", {"extension": "1001"})
    assert reply.status == 422
    missing = {problem["field"] for problem in reply.body["error"]["fields"] if problem["type"] == "missing"}
    assert missing == {"name", "site"}


async def test_put_creates_then_replaces(api: ApiClient, router: Router) -> None:
    body = agent_body()
    del body["extension"]
    created = await api.put("/agents/1002", body)
    assert created.status == 201
    assert created.body["extension"] == "1002"
    replaced = await api.put("/agents/1002", {**body, "skills": {"support": 9}, "languages": []})
    assert replaced.status == 200
    assert replaced.body["skills"] == {"support": 9}
    assert dict(router.agent("1002").profile.skills) == {"support": 9}
    mismatch = await api.put("/agents/1002", {**body, "extension": "1003"})
    assert mismatch.status == 422
    assert mismatch.body["error"]["fields"][0]["field"] == "extension"


async def test_patch_changes_only_the_fields_given(api: ApiClient, router: Router) -> None:
    await api.post("/agents", agent_body())
    reply = await api.patch("/agents/1001", {"skills": {"sales": 9}})
    assert reply.status == 200
    assert reply.body["skills"] == {"sales": 9}
    assert reply.body["name"] == "Ana"
    assert reply.body["languages"] == ["en", "es"]
    assert dict(router.agent("1001").profile.skills) == {"sales": 9}

    refused = await api.patch("/agents/1001", {"skills": {"sales": 15}})
    assert refused.status == 422
    assert (await api.get("/agents/1001")).body["skills"] == {"sales": 9}


async def test_deactivating_takes_the_agent_out_of_the_router(
    api: ApiClient, router: Router
) -> None:
    await api.post("/agents", agent_body())
    reply = await api.patch("/agents/1001", {"active": False})
    assert reply.status == 200
    assert reply.body["active"] is False and reply.body["live"] is None
    with pytest.raises(UnknownAgent):
        router.agent("1001")
    login = await api.post("/agents/1001/login")
    assert login.status == 409
    assert login.body["error"]["code"] == "agent_inactive"

    await api.patch("/agents/1001", {"active": True})
    assert router.agent("1001").state is AgentState.OFFLINE


async def test_delete_removes_from_store_and_router(
    api: ApiClient, store: Store, router: Router
) -> None:
    await api.post("/agents", agent_body())
    reply = await api.delete("/agents/1001")
    assert reply.status == 204 and reply.body is None
    assert await store.agent("1001") is None
    with pytest.raises(UnknownAgent):
        router.agent("1001")
    assert (await api.get("/agents/1001")).status == 404


async def test_an_agent_holding_a_call_cannot_be_deleted(
    api: ApiClient, store: Store, router: Router
) -> None:
    await api.post("/queues", queue_body(expansion=[]))
    await api.post("/agents", agent_body())
    await api.post("/agents/1001/login")
    router.enqueue(RoutingRequest("call-1", "sales", language="es", caller="+34600000001"))
    [reservation] = router.dispatch()
    assert reservation.agent == "1001"

    reply = await api.delete("/agents/1001")
    assert reply.status == 409
    assert reply.body["error"]["code"] == "agent_busy"
    assert await store.agent("1001") is not None
    assert (await api.get("/agents/1001")).body["live"]["state"] == "reserved"


async def test_login_break_available_logout(api: ApiClient) -> None:
    await api.post("/agents", agent_body())

    login = await api.post("/agents/1001/login")
    assert login.status == 200
    assert login.body["live"]["state"] == "available"

    on_break = await api.post("/agents/1001/break", {"reason": "lunch"})
    assert on_break.status == 200
    assert on_break.body["live"]["state"] == "break"
    assert on_break.body["live"]["reason"] == "lunch"

    back = await api.post("/agents/1001/available")
    assert back.status == 200
    assert back.body["live"]["state"] == "available"

    logout = await api.post("/agents/1001/logout")
    assert logout.status == 200
    assert logout.body["live"]["state"] == "offline"


async def test_invalid_state_changes_conflict(api: ApiClient) -> None:
    await api.post("/agents", agent_body())
    on_break = await api.post("/agents/1001/break", {"reason": "lunch"})
    assert on_break.status == 409
    assert on_break.body["error"]["code"] == "invalid_transition"
    available = await api.post("/agents/1001/available")
    assert available.status == 409
    await api.post("/agents/1001/login")
    twice = await api.post("/agents/1001/login")
    assert twice.status == 409
    assert (await api.get("/agents/1001")).body["live"]["state"] == "available"


async def test_break_needs_a_reason(api: ApiClient) -> None:
    await api.post("/agents", agent_body())
    await api.post("/agents/1001/login")
    empty = await api.post("/agents/1001/break", {"reason": ""})
    assert empty.status == 422
    assert empty.body["error"]["fields"][0]["field"] == "reason"
    missing = await api.post("/agents/1001/break", {})
    assert missing.status == 422
    not_json = await api.post("/agents/1001/break", data="lunch", headers={"Content-Type": "text/plain"})
    assert not_json.status == 415
    assert (await api.get("/agents/1001")).body["live"]["state"] == "available"
