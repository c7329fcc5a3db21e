"""The API token: with ``http.api_token`` set every API request needs it, reads included,
on every endpoint (walked from the application's routes and from the OpenAPI document, so
a new endpoint without the check fails here); /healthz and /metrics stay open; the token
never reaches the log; without a token the server warns, and refuses a non-loopback address.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request

import pytest

from integration import test_api_harness as harness
from integration.server_fixture import REPO_ROOT, PbxServer, default_config_yaml
from integration.test_api_harness import TOKEN, ApiClient
from pbx.api import create_api
from peers.procs import free_port

pytestmark = pytest.mark.integration

api = harness.api
clock = harness.clock
router = harness.router
event_bus = harness.event_bus  # the router's fixture needs it
store = harness.store

SERVER_TOKEN = "tok-7f3a9c1e5b2d4086a1c3e5f7"
WRONG_TOKEN = "tok-wrong-0123456789abcdef"


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1001", path)


def _routes(app) -> list[tuple[str, str]]:
    found = []
    for route in app.router.routes():
        canonical = route.resource.canonical if route.resource is not None else None
        if canonical is not None:
            found.append((route.method, canonical))
    return sorted(set(found))


async def test_every_route_of_the_api_refuses_a_request_without_the_token(api: ApiClient, store,
                                                                         router) -> None:
    routes = _routes(create_api(store, router, TOKEN))
    assert ("GET", "/agents") in routes and ("GET", "/calls/live") in routes
    assert len(routes) > 20
    for method, path in routes:
        for authorization in (None, "Bearer wrong", f"Basic {TOKEN}"):
            headers = {} if authorization is None else {"Authorization": authorization}
            reply = await api.call(method, _concrete(path), json={}, headers=headers,
                                   authorize=False)
            assert reply.status == 401, (method, path, authorization, reply.status)
            if method != "HEAD":
                assert reply.body["error"]["code"] == "unauthorized"
            assert reply.headers["WWW-Authenticate"].startswith("Bearer")
        # With the token the request reaches its handler (any answer but 401).
        reply = await api.call(method, _concrete(path), json={})
        assert reply.status != 401, (method, path)


async def test_every_operation_in_openapi_declares_the_token(api: ApiClient) -> None:
    document = (await api.get("/openapi.json")).body
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert operation["security"] == [{"bearer": []}], (method, path)
            assert "401" in operation["responses"], (method, path)


def _request(server: PbxServer, method: str, path: str, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(server.http_url + path, method=method,
                                     data=b"{}" if method in ("POST", "PUT", "PATCH") else None,
                                     headers={"Content-Type": "application/json"})
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_the_real_server_needs_the_token_everywhere_but_health_and_metrics(pbx_server) -> None:
    server = pbx_server(default_config_yaml(http={"api_token": SERVER_TOKEN}))
    assert server.http_get("/healthz")[0] == 200
    assert server.http_get("/metrics")[0] == 200
    status, body = _request(server, "GET", "/api/v1/openapi.json", SERVER_TOKEN)
    assert status == 200
    document = json.loads(body)
    assert _request(server, "GET", "/api/v1/openapi.json", None)[0] == 401
    walked = 0
    for path, operations in document["paths"].items():
        for method in operations:
            for token in (None, WRONG_TOKEN):
                status, body = _request(server, method.upper(), "/api/v1" + _concrete(path), token)
                assert status == 401, (method, path, token, body)
                walked += 1
    assert walked > 40
    status, body = _request(server, "GET", "/api/v1/agents", SERVER_TOKEN)
    assert status == 200 and "1001" in body
    log = server.log_text()
    assert SERVER_TOKEN not in log and WRONG_TOKEN not in log
    assert "has no token" not in log


def test_without_a_token_the_server_says_it_is_open_on_loopback_only(pbx_server) -> None:
    server = pbx_server()
    assert _request(server, "GET", "/api/v1/agents", None)[0] == 200
    warning = [line for line in server.log_text().splitlines() if "has no token" in line]
    assert len(warning) == 1 and " WARNING " in warning[0], warning
    assert f"loopback 127.0.0.1:{server.http_port} only" in warning[0]


def test_without_a_token_a_non_loopback_http_address_is_refused(tmp_path) -> None:
    # Refused before anything binds: nothing listens beyond loopback, even for a moment.
    port = free_port(udp=False, tcp=True)
    command = [sys.executable, "-m", "pbx", "serve", "--var-dir", str(tmp_path / "var"),
               "--sip-listen", f"127.0.0.1:{free_port()}", "--http-listen", f"0.0.0.0:{port}"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2, result.stderr
    assert "refusing to start" in result.stderr
    assert "http.api_token" in result.stderr and "0.0.0.0" in result.stderr
