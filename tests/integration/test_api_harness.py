"""The API test harness: a real Store on SQLite, a real Router and real HTTP on loopback.

Other ``test_api_*`` modules import the fixtures from here; the tests in this module
check the harness itself (mounting, the served description).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from events import EventBus
from pbx.api import create_api
from pbx.store import SiteRecord, Store
from router import Router

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"
API_PREFIX = "/api/v1"


class ManualClock:
    """The router's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any


@dataclass
class ApiClient:
    session: aiohttp.ClientSession
    base_url: str
    token: str | None

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        authorize: bool = True,
    ) -> Reply:
        sent_headers = dict(headers or {})
        if authorize and self.token is not None:
            sent_headers.setdefault("Authorization", f"Bearer {self.token}")
        async with self.session.request(
            method, self.base_url + path, json=json, data=data, headers=sent_headers
        ) as response:
            raw = await response.read()
            body = None
            if raw:
                assert response.content_type == "application/json", raw
                body = await response.json()
            return Reply(response.status, body, response.headers)

    async def get(self, path: str) -> Reply:
        return await self.call("GET", path)

    async def post(self, path: str, json: Any = None, **options: Any) -> Reply:
        return await self.call("POST", path, json=json, **options)

    async def put(self, path: str, json: Any) -> Reply:
        return await self.call("PUT", path, json=json)

    async def patch(self, path: str, json: Any) -> Reply:
        return await self.call("PATCH", path, json=json)

    async def delete(self, path: str) -> Reply:
        return await self.call("DELETE", path)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def event_bus() -> EventBus:
    """Where the router's events go, as in the server."""
    return EventBus()


@pytest.fixture
def router(clock: ManualClock, event_bus: EventBus) -> Router:
    return Router(clock, publish=event_bus.publish)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/api.db")
    await opened.save_site(SiteRecord("madrid", "Europe/Madrid"))
    yield opened
    await opened.close()


async def _serve(store: Store, router: Router, token: str | None) -> AsyncIterator[ApiClient]:
    root = web.Application()
    root.add_subapp(API_PREFIX, create_api(store, router, token))
    server = TestServer(root, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield ApiClient(session, f"http://127.0.0.1:{server.port}{API_PREFIX}", token)
    finally:
        await server.close()


@pytest.fixture
async def api(store: Store, router: Router) -> AsyncIterator[ApiClient]:
    async for client in _serve(store, router, TOKEN):
        yield client


@pytest.fixture
async def open_api(store: Store, router: Router) -> AsyncIterator[ApiClient]:
    """The API with no token configured."""
    async for client in _serve(store, router, None):
        yield client


def agent_body(extension: str = "1001", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "extension": extension,
        "name": "Ana",
        "site": "madrid",
        "skills": {"sales": 7, "billing": 4},
        "languages": ["es", "en"],
    }
    body.update(changes)
    return body


def queue_body(name: str = "sales", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "skills": {"sales": 5},
        "language": "es",
        "sla_seconds": 30,
        "sla_percent": 90,
        "strategy": "skill_weighted",
        "max_wait_seconds": 600,
        "expansion": [{"after_seconds": 30, "skills": {"sales": 3}}],
    }
    body.update(changes)
    return body


async def test_the_api_is_served_under_its_mount_point(api: ApiClient) -> None:
    reply = await api.get("/openapi.json")
    assert reply.status == 200
    assert reply.body["openapi"] == "3.1.0"
    assert reply.body["servers"] == [{"url": API_PREFIX}]


async def test_reads_need_the_token_too(api: ApiClient) -> None:
    reply = await api.call("GET", "/agents", authorize=False)
    assert reply.status == 401
    assert (await api.get("/agents")).body == []
