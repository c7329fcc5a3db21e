"""Customers: who calls, their tier (call priority), language and preferred agent."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aiohttp import web

from pbx.api.bodies import merge_patch, read_json_object, read_model, validate
from pbx.api.endpoint import STORE, Endpoint, QueryParameter, query_int
from pbx.api.errors import not_found
from pbx.api.schemas import CustomerView
from pbx.configuration.models import CustomerCreate, CustomerFields, customer_record
from pbx.store import MAX_PAGE_SIZE, CustomerRecord, Store

LIMIT = QueryParameter("limit", "page size", 1, MAX_PAGE_SIZE, 100)
OFFSET = QueryParameter("offset", "customers to skip, in number order", 0, 2**31 - 1, 0)


async def _existing(store: Store, number: str) -> CustomerRecord:
    customer = await store.customer(number)
    if customer is None:
        raise not_found(f"unknown customer {number!r}")
    return customer


def _fields_of(customer: CustomerRecord) -> dict[str, Any]:
    fields = CustomerFields(
        name=customer.name,
        tier=customer.tier,
        language=customer.language,
        preferred_agent=customer.preferred_agent,
        notes=customer.notes,
    )
    return fields.model_dump(mode="json")


def _view(customer: CustomerRecord) -> dict[str, Any]:
    return CustomerView.model_validate(asdict(customer)).model_dump(mode="json")


async def list_customers(request: web.Request) -> web.Response:
    limit, offset = query_int(request, LIMIT), query_int(request, OFFSET)
    customers = await request.app[STORE].customers(limit=limit, offset=offset)
    return web.json_response([_view(customer) for customer in customers])


async def get_customer(request: web.Request) -> web.Response:
    return web.json_response(_view(await _existing(request.app[STORE], request.match_info["number"])))


async def create_customer(request: web.Request) -> web.Response:
    body = await read_model(request, CustomerCreate)
    customer = customer_record(body.number, body, last_agent=None)
    await request.app[STORE].create_customer(customer)
    location = f"{request.app.router['get_customer'].url_for(number=customer.number)}"
    return web.json_response(_view(customer), status=201, headers={"Location": location})


async def replace_customer(request: web.Request) -> web.Response:
    store = request.app[STORE]
    number = request.match_info["number"]
    fields = validate(CustomerFields, merge_patch({}, await read_json_object(request), "number", number))
    previous = await store.customer(number)
    # last_agent is the server's record of history, not something a client sets.
    customer = customer_record(number, fields, None if previous is None else previous.last_agent)
    created = await store.save_customer(customer)
    return web.json_response(_view(customer), status=201 if created else 200)


async def patch_customer(request: web.Request) -> web.Response:
    store = request.app[STORE]
    number = request.match_info["number"]
    previous = await _existing(store, number)
    document = await read_json_object(request)
    fields = validate(CustomerFields, merge_patch(_fields_of(previous), document, "number", number))
    customer = customer_record(number, fields, previous.last_agent)
    await store.save_customer(customer)
    return web.json_response(_view(customer))


async def delete_customer(request: web.Request) -> web.Response:
    await request.app[STORE].delete_customer(request.match_info["number"])
    return web.Response(status=204)


_ONE = "/customers/{number}"

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/customers", list_customers, "list_customers",
             "List customers in number order, a page at a time", "customers",
             response=CustomerView, response_is_list=True, errors=(422,), query=(LIMIT, OFFSET)),
    Endpoint("POST", "/customers", create_customer, "create_customer", "Create a customer",
             "customers", request=CustomerCreate, response=CustomerView, status=201,
             errors=(400, 409, 415, 422)),
    Endpoint("GET", _ONE, get_customer, "get_customer", "Get a customer", "customers",
             response=CustomerView, errors=(404,)),
    Endpoint("PUT", _ONE, replace_customer, "replace_customer", "Create or replace a customer",
             "customers", request=CustomerFields, response=CustomerView, also_created=True,
             errors=(400, 415, 422)),
    Endpoint("PATCH", _ONE, patch_customer, "patch_customer",
             "Change some fields of a customer (each field given replaces the stored one)",
             "customers", request=CustomerFields, request_is_patch=True, response=CustomerView,
             errors=(400, 404, 415, 422)),
    Endpoint("DELETE", _ONE, delete_customer, "delete_customer", "Delete a customer", "customers",
             status=204, errors=(404,)),
)
