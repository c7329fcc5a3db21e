"""Callback requests shared by sites, on SQLite and on a real PostgreSQL.

Two sites (two store instances, and two processes) race to claim the same due
requests: each is claimed exactly once. A site that stops renewing its leases
(killed) has its requests adopted by the survivor after the lease runs out, and
each is dialled once more, once. A restart (a new store on the same database)
finds the pending requests where they were.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from callbacks import CallbackDesk, CallbackRequest, CallbackState, Outcome, line_key
from integration import postgres_fixture
from integration.postgres_fixture import PostgresServer, fresh_postgres_database
from pbx.store import Store
from pbx.store.callbacks import SqlCallbackStore

pytestmark = pytest.mark.integration

postgres_server = postgres_fixture.postgres_server

REPOSITORY = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


class Clock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def postgres_or_sqlite(request: pytest.FixtureRequest) -> PostgresServer | None:
    # Taken here, outside the event loop: the PostgreSQL fixture runs its own loop.
    return None if request.param == "sqlite" else request.getfixturevalue("postgres_server")


@pytest.fixture
async def database_url(postgres_or_sqlite: PostgresServer | None,
                       tmp_path: Path) -> AsyncIterator[str]:
    if postgres_or_sqlite is None:
        yield f"sqlite+aiosqlite:///{tmp_path}/centralita.db"
        return
    async with fresh_postgres_database(postgres_or_sqlite) as url:
        yield url


async def _open(url: str) -> tuple[Store, SqlCallbackStore]:
    store = await Store.open(url)
    return store, SqlCallbackStore(store.engine)


async def _requests_of_a_dead_site(desk: CallbackDesk, count: int) -> list[CallbackRequest]:
    """``count`` due requests owned by ``desk``'s site, whose leases have run out by T0 + LEASE."""
    made = []
    for n in range(count):
        request, created = await desk.request(f"6{n:08d}", "sales", priority=1 + n % 3,
                                              requested_at=T0 - timedelta(seconds=count - n))
        assert created
        made.append(request)
    return made


async def test_two_sites_claiming_the_same_requests_each_get_it_once(database_url: str) -> None:
    (lisbon_store, lisbon), (madrid_store, madrid), (bogota_store, bogota) = [
        await _open(database_url) for _ in range(3)]
    clock = Clock()
    try:
        dead = CallbackDesk(lisbon, site="lisbon", clock=clock, lease=LEASE)
        sites = [CallbackDesk(madrid, site="madrid", clock=clock, lease=LEASE),
                 CallbackDesk(bogota, site="bogota", clock=clock, lease=LEASE)]
        wins: Counter[str] = Counter()
        for round_ in range(5):
            clock.now = T0 + timedelta(hours=round_)
            requests = await _requests_of_a_dead_site(dead, 20)
            clock.now += LEASE
            # Both sites go for every request at the same moment: the hardest race there is.
            for request in requests:
                results = await asyncio.gather(*(site.claim(request.id) for site in sites))
                winners = [result for result in results if result is not None]
                assert len(winners) == 1, (request.id, results)
                wins[winners[0].site] += 1
                stored = await madrid.callback(request.id)
                assert stored == winners[0] and stored.state is CallbackState.DIALING
                await sites[0 if winners[0].site == "madrid" else 1].report(
                    winners[0], Outcome.ANSWERED)
        assert sum(wins.values()) == 5 * 20
        print(f"claims won: {dict(wins)}")
    finally:
        for store in (lisbon_store, madrid_store, bogota_store):
            await store.close()


async def test_two_site_processes_claiming_due_requests_claim_each_once(database_url: str) -> None:
    store, callbacks = await _open(database_url)
    past = Clock(datetime.now(UTC) - timedelta(hours=1))
    try:
        made = await _requests_of_a_dead_site(
            CallbackDesk(callbacks, site="lisbon", clock=past, lease=LEASE), 120)
        environment = {**os.environ, "PYTHONPATH": str(REPOSITORY / "tests")}
        processes = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-m", "integration.callback_site", "claim", database_url, site,
                cwd=REPOSITORY, env=environment, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for site in ("madrid", "bogota")
        ]
        for process in processes:  # both connected before either starts
            assert process.stdout is not None and process.stderr is not None
            ready = await asyncio.wait_for(process.stdout.readline(), 60)
            assert ready == b"ready\n", (ready, (await process.stderr.read()).decode())
        outputs = await asyncio.wait_for(
            asyncio.gather(*(process.communicate(b"go\n") for process in processes)), 120)
        claimed: dict[str, list[str]] = {}
        for site, process, (stdout, stderr) in zip(("madrid", "bogota"), processes, outputs,
                                                   strict=True):
            assert process.returncode == 0, stderr.decode()
            claimed[site] = json.loads(stdout)
        every_claim = claimed["madrid"] + claimed["bogota"]
        assert sorted(every_claim) == sorted(request.id for request in made)  # each exactly once
        for site, ids in claimed.items():
            for request_id in ids:
                stored = await callbacks.callback(request_id)
                assert stored is not None
                assert (stored.state, stored.site) == (CallbackState.DIALING, site)
        print(f"claimed: madrid {len(claimed['madrid'])}, bogota {len(claimed['bogota'])}")
    finally:
        await store.close()


async def test_a_killed_site_is_adopted_after_its_lease_and_each_request_dialled_once(
        database_url: str) -> None:
    lease_seconds = 3.0  # madrid renews every 0.5 s: a loaded machine never lets it lapse
    count = 20
    store, callbacks = await _open(database_url)
    bogota = CallbackDesk(callbacks, site="bogota", clock=lambda: datetime.now(UTC),
                          lease=timedelta(seconds=lease_seconds))
    madrid = subprocess.Popen(
        [sys.executable, "-m", "integration.callback_site", "hold", database_url, "madrid",
         str(count), str(lease_seconds)],
        cwd=REPOSITORY, env={**os.environ, "PYTHONPATH": str(REPOSITORY / "tests")},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert madrid.stdout is not None
        line = await asyncio.to_thread(madrid.stdout.readline)
        assert line, madrid.stderr.read() if madrid.stderr else ""
        interrupted_id = json.loads(line)["dialing"]

        # Madrid is alive and renewing: for longer than a lease, bogota may take nothing.
        watched_until = time.monotonic() + 2.5 * lease_seconds
        while time.monotonic() < watched_until:
            assert await bogota.adopt_lapsed() == []
            assert await bogota.claim_due(limit=count) == []
            await asyncio.sleep(0.1)

        madrid.send_signal(signal.SIGKILL)
        madrid.wait(10)
        killed_at = time.monotonic()
        adopted: list[CallbackRequest] = []
        while len(adopted) < count and time.monotonic() < killed_at + 5 * lease_seconds:
            adopted += await bogota.adopt_lapsed()
            await asyncio.sleep(0.05)
        waited = time.monotonic() - killed_at
        assert len(adopted) == count and {r.site for r in adopted} == {"bogota"}
        # Madrid renewed at most lease/6 before the kill: its leases outlived it by the rest.
        assert waited >= lease_seconds * 5 / 6 - 0.1
        print(f"adopted {count} requests {waited:.2f} s after the kill (lease {lease_seconds} s)")

        requeued = next(r for r in adopted if r.id == interrupted_id)
        assert requeued.state is CallbackState.PENDING
        assert [r.outcome for r in requeued.history] == [Outcome.INTERRUPTED]

        dialled = await bogota.claim_due(limit=count)
        assert sorted(r.id for r in dialled) == sorted(r.id for r in adopted)
        assert await bogota.claim_due(limit=count) == []
        assert await bogota.adopt_lapsed() == []
    finally:
        if madrid.poll() is None:
            madrid.kill()
            madrid.wait(10)
        await store.close()


async def test_a_restart_finds_the_pending_requests_and_dials_each_once(database_url: str) -> None:
    clock = Clock()
    first_store, first = await _open(database_url)
    desk = CallbackDesk(first, site="madrid", clock=clock, lease=LEASE)
    try:
        now_due = await _requests_of_a_dead_site(desk, 5)
        scheduled, _ = await desk.request("699999999", "sales", requested_at=T0 - timedelta(hours=1),
                                          earliest_at=T0 + timedelta(minutes=10),
                                          origin_call_id="call-7")
        (dialing,) = await desk.claim_due()
    finally:
        await first_store.close()

    second_store, second = await _open(database_url)
    try:
        assert await second.callback(scheduled.id) == scheduled
        pending = await second.callbacks(state=CallbackState.PENDING)
        assert {r.id for r in pending} == {r.id for r in now_due if r.id != dialing.id} | {scheduled.id}
        desk = CallbackDesk(second, site="madrid", clock=clock, lease=LEASE)
        assert [r.id for r in await desk.recover_interrupted()] == [dialing.id]
        clock.now = T0 + timedelta(minutes=10)
        dialled = await desk.claim_due(limit=10)
        assert sorted(r.id for r in dialled) == sorted([*(r.id for r in now_due), scheduled.id])
        assert [line_key(r) for r in dialled] == sorted(line_key(r) for r in dialled)
        assert await desk.claim_due(limit=10) == []
    finally:
        await second_store.close()


async def test_simultaneous_requests_from_two_sites_store_one(database_url: str) -> None:
    (one_store, one), (other_store, other) = [await _open(database_url) for _ in range(2)]
    clock = Clock()
    try:
        desks = [CallbackDesk(one, site="madrid", clock=clock),
                 CallbackDesk(other, site="bogota", clock=clock)]
        for attempt in range(10):
            number = f"+34 600 000 {attempt:03d}"
            results = await asyncio.gather(*(desks[n % 2].request(number, "sales") for n in range(6)))
            assert sum(created for _, created in results) == 1
            assert len({request.id for request, _ in results}) == 1
        assert len(await one.callbacks(limit=100)) == 10
    finally:
        await one_store.close()
        await other_store.close()


async def test_active_numbers_are_those_with_a_pending_or_dialing_request(database_url: str) -> None:
    store, callbacks = await _open(database_url)
    clock = Clock()
    try:
        desk = CallbackDesk(callbacks, site="madrid", clock=clock, lease=LEASE)
        await desk.request("600111222", "sales")
        await desk.request("600111222", "billing")  # one number, two queues: listed once
        dialing, _ = await desk.request("600333444", "sales")
        cancelled, _ = await desk.request("600555666", "sales")
        claimed = await desk.claim(dialing.id)
        assert claimed is not None and claimed.state is CallbackState.DIALING
        await desk.cancel(cancelled.id, "the customer called in")
        assert await callbacks.active_numbers() == {"600111222", "600333444"}
    finally:
        await store.close()
