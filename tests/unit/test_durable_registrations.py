"""Registrations kept in the store across a restart: the registrar's loop-clock expiries
become wall-clock times in the store and loop-clock times again in the next process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pbx.configuration.server import load_config
from pbx.registration.durable import DurableRegistrations
from pbx.registration.registrar import Binding, Registrar
from pbx.sip.address import parse_name_address
from pbx.sip.digest import DigestAuthenticator
from pbx.store import Store

CONFIG = load_config(None, var_dir=Path("var"))


def registrar() -> Registrar:
    authenticator = DigestAuthenticator(CONFIG.sip.realm, b"test-secret", 300, ("MD5",))
    return Registrar(CONFIG.accounts, authenticator, CONFIG.sip)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/registrations.db")
    yield opened
    await opened.close()


def phone(user: str, port: int, expires_at: float, transport: str = "UDP") -> Binding:
    contact = parse_name_address(
        f'<sip:{user}@127.0.0.1:{port};transport={transport.lower()}>;+sip.instance="<urn:x>"')
    return Binding(user, contact, expires_at, f"reg-{user}", 7, ("127.0.0.1", port + 1), transport,
                   "baresip")


async def test_bindings_survive_a_restart_with_their_remaining_time(store: Store) -> None:
    before = registrar()
    keeper = DurableRegistrations(store, before, loop_clock=lambda: 100.0, wall_clock=lambda: 1000.0)
    keeper.start()
    bindings = {"1001": [phone("1001", 5070, 700.0), phone("1001", 5072, 260.0)],
                "1002": [phone("1002", 5074, 400.0)],
                # Its connection dies with the server: the phone registers again by itself.
                "1003": [phone("1003", 5076, 700.0, "TCP")]}
    for user, found in bindings.items():
        for listener in before.bindings_listeners:
            listener(user, found)
    for listener in before.bindings_listeners:  # 1002 unregistered again
        listener("1002", [])
    await keeper.close()

    # The next process: its loop clock starts near zero, 100 wall seconds later.
    after = registrar()
    reachable: list[tuple[str, bool]] = []
    after.listeners.append(lambda user, now_reachable: reachable.append((user, now_reachable)))
    restored = DurableRegistrations(store, after, loop_clock=lambda: 5.0, wall_clock=lambda: 1100.0)
    assert await restored.restore() == 2
    assert reachable == [("1001", True)]
    [long, short] = sorted(after.bindings("1001", 5.0), key=lambda b: b.expires_at, reverse=True)
    assert long.expires_at == pytest.approx(505.0) and short.expires_at == pytest.approx(65.0)
    original = bindings["1001"][0]
    assert (long.contact_uri, long.contact.params, long.source, long.transport, long.call_id,
            long.cseq, long.user_agent) == (
        original.contact_uri, original.contact.params, original.source, original.transport,
        original.call_id, original.cseq, original.user_agent)
    assert after.bindings("1002", 5.0) == [] and after.bindings("1003", 5.0) == []
    # One that expired while the server was down is not restored (and is gone from the store).
    later = DurableRegistrations(store, registrar(), loop_clock=lambda: 1.0, wall_clock=lambda: 1300.0)
    assert await later.restore() == 1


async def test_a_binding_made_through_a_proxy_comes_back_with_its_path(store: Store) -> None:
    before = registrar()
    keeper = DurableRegistrations(store, before, loop_clock=lambda: 100.0, wall_clock=lambda: 1000.0)
    keeper.start()
    through = phone("1001", 5070, 700.0)
    through.path = ("<sip:127.0.0.1:5090;lr;received=sip:127.0.0.1:5070>",)
    for listener in before.bindings_listeners:
        listener("1001", [through])
    await keeper.close()

    after = registrar()
    assert await DurableRegistrations(store, after, loop_clock=lambda: 5.0,
                                      wall_clock=lambda: 1100.0).restore() == 1
    [restored] = after.bindings("1001", 5.0)
    assert restored.path == through.path


async def test_a_failed_write_is_retried_with_the_newest_bindings(store: Store,
                                                                  monkeypatch) -> None:
    keeper = DurableRegistrations(store, registrar(), loop_clock=lambda: 0.0,
                                  wall_clock=lambda: 1000.0)
    real = store.replace_registrations
    attempts: list[list[str]] = []

    async def flaky(bindings):  # type: ignore[no-untyped-def]
        attempts.append(sorted(bindings))
        if len(attempts) == 1:
            raise OSError("database away")
        await real(bindings)

    monkeypatch.setattr(store, "replace_registrations", flaky)
    monkeypatch.setattr("pbx.registration.durable.RETRY_INITIAL_SECONDS", 0.01)
    keeper.start()
    keeper._changed("1001", [phone("1001", 5070, 600.0)])
    await asyncio.sleep(0)  # the writer takes 1001 and fails
    keeper._changed("1002", [phone("1002", 5074, 600.0)])
    for _ in range(200):
        if len(await store.registrations(datetime.fromtimestamp(1000.0, UTC))) == 2:
            break
        await asyncio.sleep(0.01)
    await keeper.close()
    assert attempts[0] == ["1001"] and attempts[-1] == ["1001", "1002"]
