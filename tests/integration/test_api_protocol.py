"""The API's HTTP contract: JSON errors, the token, the OpenAPI description; sites and customers."""

from __future__ import annotations

from typing import Any

import pytest

from integration import test_api_harness as harness
from integration.test_api_harness import TOKEN, ApiClient, agent_body
from pbx.api import ENDPOINTS
from pbx.store import Store
from router import Router

pytestmark = pytest.mark.integration

# The harness's fixtures, by name, for pytest to find in this module.
api = harness.api
clock = harness.clock
open_api = harness.open_api
router = harness.router
event_bus = harness.event_bus  # the router's fixture needs it
store = harness.store


def _error(reply: Any) -> dict[str, Any]:
    assert set(reply.body) == {"error"}, reply.body
    error: dict[str, Any] = reply.body["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    return error


# -- token ------------------------------------------------------------------------------


async def test_changes_without_a_token_are_refused(api: ApiClient, store: Store) -> None:
    reply = await api.call("POST", "/agents", json=agent_body(), authorize=False)
    assert reply.status == 401
    assert _error(reply)["code"] == "unauthorized"
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert await store.agent("1001") is None


@pytest.mark.parametrize(
    "authorization", ["Bearer wrong", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x", ""]
)
async def test_a_wrong_token_is_refused(api: ApiClient, authorization: str) -> None:
    for method, path in (("POST", "/agents"), ("DELETE", "/agents/1001"), ("PATCH", "/sites/madrid")):
        reply = await api.call(
            method, path, json=agent_body(), headers={"Authorization": authorization}
        )
        assert reply.status == 401, (method, path)
        assert _error(reply)["code"] == "unauthorized"


async def test_the_right_token_is_accepted(api: ApiClient) -> None:
    reply = await api.call("POST", "/agents", json=agent_body(), headers={"Authorization": f"bearer {TOKEN}"})
    assert reply.status == 201


async def test_without_a_configured_token_changes_are_open(open_api: ApiClient) -> None:
    reply = await open_api.call("POST", "/agents", json=agent_body(), authorize=False)
    assert reply.status == 201


# -- malformed requests ---------------------------------------------------------------


async def test_invalid_json_is_400(api: ApiClient) -> None:
    reply = await api.call(
        "POST", "/agents", data='{"extension": "1001",', headers={"Content-Type": "application/json"}
    )
    assert reply.status == 400
    assert _error(reply)["code"] == "invalid_json"


async def test_a_json_body_that_is_not_an_object_is_422(api: ApiClient) -> None:
    reply = await api.post("/agents", [agent_body()])
    assert reply.status == 422
    assert _error(reply)["fields"][0]["field"] == "(body)"


async def test_a_body_that_is_not_json_is_415(api: ApiClient) -> None:
    reply = await api.call(
        "POST", "/agents", data="extension=1001", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert reply.status == 415
    assert _error(reply)["code"] == "unsupported_media_type"


async def test_a_wrong_method_is_405_with_allow(api: ApiClient) -> None:
    reply = await api.call("DELETE", "/agents")
    assert reply.status == 405
    assert _error(reply)["code"] == "method_not_allowed"
    assert {"GET", "POST"} <= {method.strip() for method in reply.headers["Allow"].split(",")}


async def test_an_unknown_path_is_a_json_404(api: ApiClient) -> None:
    reply = await api.get("/no/such/thing")
    assert reply.status == 404
    assert _error(reply)["code"] == "not_found"


async def test_an_oversized_body_is_413(api: ApiClient) -> None:
    reply = await api.post("/agents", agent_body(name="x" * 400_000))
    assert reply.status == 413
    assert _error(reply)["code"] == "payload_too_large"


async def test_bad_paging_parameters_are_422(api: ApiClient) -> None:
    for query, field in (("?limit=0", "limit"), ("?limit=abc", "limit"), ("?offset=-1", "offset")):
        reply = await api.get("/customers" + query)
        assert reply.status == 422, query
        assert _error(reply)["fields"][0]["field"] == field


# -- OpenAPI ----------------------------------------------------------------------------


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


async def test_openapi_describes_every_route(api: ApiClient) -> None:
    document = (await api.get("/openapi.json")).body
    assert document["openapi"].startswith("3.1")
    described = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    declared = {(endpoint.method, endpoint.path) for endpoint in ENDPOINTS} | {("GET", "/openapi.json")}
    assert described == declared

    schemas = document["components"]["schemas"]
    for ref in _refs(document):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref

    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert operation["responses"], (method, path)
            assert "401" in operation["responses"], (method, path)
            assert operation["security"] == [{"bearer": []}], (method, path)
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    if schema == {"$ref": "#/components/schemas/ErrorBody"}:
                        continue
                    # An error with more than the error (a duplicate's existing resource)
                    # still carries the same error object.
                    extended = schemas[schema["$ref"].rsplit("/", 1)[1]]
                    assert extended["properties"]["error"] == {
                        "$ref": "#/components/schemas/ErrorDetail"}, (method, path, status)
                    assert "error" in extended["required"], (method, path, status)

    [proficiency] = schemas["AgentCreate"]["properties"]["skills"]["patternProperties"].values()
    assert (proficiency["minimum"], proficiency["maximum"]) == (1, 10)
    assert set(schemas["Strategy"]["enum"]) == {
        "longest_idle",
        "least_occupancy",
        "round_robin",
        "skill_weighted",
    }
    assert "required" not in schemas["AgentFieldsPatch"]
    patch_body = document["paths"]["/agents/{extension}"]["patch"]["requestBody"]
    assert patch_body["content"]["application/json"]["schema"]["$ref"].endswith("AgentFieldsPatch")


# -- sites ------------------------------------------------------------------------------


async def test_site_crud_and_health_reach_the_router(api: ApiClient, router: Router) -> None:
    created = await api.post("/sites", {"name": "lima", "timezone": "America/Lima"})
    assert created.status == 201
    assert created.body == {"name": "lima", "timezone": "America/Lima", "healthy": True,
                            "business_hours": None}
    assert (await api.post("/sites", {"name": "lima"})).status == 409

    await api.post("/agents", agent_body(site="lima"))
    down = await api.patch("/sites/lima", {"healthy": False})
    assert down.status == 200
    assert down.body == {"name": "lima", "timezone": "America/Lima", "healthy": False,
                         "business_hours": None}
    assert router.agent("1001").site_healthy is False
    assert (await api.get("/agents/1001")).body["live"]["site_healthy"] is False

    await api.patch("/sites/lima", {"healthy": True})
    assert router.agent("1001").site_healthy is True

    in_use = await api.delete("/sites/lima")
    assert in_use.status == 409 and _error(in_use)["code"] == "in_use"
    await api.delete("/agents/1001")
    assert (await api.delete("/sites/lima")).status == 204
    assert (await api.get("/sites/lima")).status == 404
    assert [site["name"] for site in (await api.get("/sites")).body] == ["madrid"]


async def test_a_sites_business_hours_are_stored_and_reach_the_router(api: ApiClient,
                                                                      router: Router) -> None:
    closed = {"weekly": {"mon-sun": "closed"}, "holidays": ["2026-12-25"]}
    created = await api.post("/sites", {"name": "lima", "timezone": "America/Lima",
                                        "business_hours": closed})
    assert created.status == 201 and created.body["business_hours"] == closed
    await api.post("/agents", agent_body(site="lima"))
    assert router.site_open("lima") is False
    assert (await api.get("/agents/1001")).body["live"]["site_open"] is False
    assert (await api.get("/sites/lima")).body["business_hours"] == closed
    # A PATCH that leaves the hours alone keeps them; null opens the site for good.
    assert (await api.patch("/sites/lima", {"healthy": True})).body["business_hours"] == closed
    opened = await api.patch("/sites/lima", {"business_hours": None})
    assert opened.status == 200 and opened.body["business_hours"] is None
    assert router.site_open("lima") is True
    assert (await api.get("/agents/1001")).body["live"]["site_open"] is True
    wrong = await api.patch("/sites/lima", {"business_hours": {"weekly": {"mon": "20:00-08:00"}}})
    assert wrong.status == 422, wrong.body
    assert _error(wrong)["fields"][0]["field"] == "business_hours.weekly", _error(wrong)
    assert router.site_open("lima") is True  # a refused change changes nothing


async def test_site_validation(api: ApiClient) -> None:
    reply = await api.post("/sites", {"name": "mars", "timezone": "Mars/Olympus"})
    assert reply.status == 422
    assert _error(reply)["fields"][0]["field"] == "timezone"
    assert "unknown time zone" in _error(reply)["message"]
    put = await api.put("/sites/bogota", {"timezone": "America/Bogota"})
    assert put.status == 201


# -- customers --------------------------------------------------------------------------


async def test_customer_crud(api: ApiClient, store: Store) -> None:
    body = {"number": "+34600000001", "name": "Bob", "tier": "vip", "language": "es"}
    created = await api.post("/customers", body)
    assert created.status == 201
    assert created.headers["Location"] == "/api/v1/customers/+34600000001"
    assert created.body["tier"] == "vip" and created.body["last_agent"] is None
    assert (await api.post("/customers", body)).status == 409

    await store.record_last_agent("+34600000001", "1001")
    patched = await api.patch("/customers/+34600000001", {"tier": "paid", "notes": "moved plan"})
    assert patched.status == 200
    assert patched.body["tier"] == "paid" and patched.body["name"] == "Bob"
    assert patched.body["last_agent"] == "1001"
    replaced = await api.put("/customers/+34600000001", {"name": "Robert"})
    assert replaced.status == 200
    assert replaced.body["tier"] == "free"  # PUT replaces: omitted fields take defaults
    assert replaced.body["last_agent"] == "1001"  # history is not the client's to erase

    refused = await api.patch("/customers/+34600000001", {"last_agent": "9999"})
    assert refused.status == 422
    bad_tier = await api.post("/customers", {"number": "+1", "tier": "gold"})
    assert bad_tier.status == 422 and _error(bad_tier)["fields"][0]["field"] == "tier"

    assert (await api.delete("/customers/+34600000001")).status == 204
    assert (await api.get("/customers/+34600000001")).status == 404


async def test_customers_are_listed_a_page_at_a_time(api: ApiClient) -> None:
    for number in ("300", "100", "200"):
        assert (await api.post("/customers", {"number": number})).status == 201
    first = await api.get("/customers?limit=2")
    rest = await api.get("/customers?limit=2&offset=2")
    assert [c["number"] for c in first.body] == ["100", "200"]
    assert [c["number"] for c in rest.body] == ["300"]
