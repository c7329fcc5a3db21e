"""One site's callback desk in its own process, for the multi-site tests of the callback store.

    python -m integration.callback_site claim URL SITE
        connect, print "ready", wait for a line on stdin, then claim due requests
        (two tasks at once) until none is left; print the claimed ids as JSON.
    python -m integration.callback_site hold URL SITE COUNT LEASE_SECONDS
        create COUNT requests, claim the first, print its id, then renew the leases
        every LEASE_SECONDS / 6 until killed.

Run with ``tests/`` on ``PYTHONPATH`` and the repository as the working directory.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta

from callbacks import CallbackDesk
from pbx.store import Store
from pbx.store.callbacks import SqlCallbackStore


def wall_clock() -> datetime:
    return datetime.now(UTC)


async def claim_until_none_left(url: str, site: str) -> list[str]:
    store = await Store.open(url)
    await store.schema_version()  # connected
    print("ready", flush=True)
    desk = CallbackDesk(SqlCallbackStore(store.engine), site=site, clock=wall_clock,
                        lease=timedelta(minutes=5))
    claimed: list[str] = []

    async def claimer() -> None:
        empty_rounds = 0
        while empty_rounds < 3:
            taken = await desk.claim_due(limit=2)
            claimed.extend(request.id for request in taken)
            empty_rounds = 0 if taken else empty_rounds + 1
            if not taken:
                await asyncio.sleep(0.02)

    try:
        await asyncio.to_thread(sys.stdin.readline)  # both sites start together
        await asyncio.gather(claimer(), claimer())
    finally:
        await store.close()
    return claimed


async def hold(url: str, site: str, count: int, lease_seconds: float) -> None:
    store = await Store.open(url)
    desk = CallbackDesk(SqlCallbackStore(store.engine), site=site, clock=wall_clock,
                        lease=timedelta(seconds=lease_seconds))
    start = wall_clock()
    for n in range(count):
        await desk.request(f"60000{n:04d}", "sales", requested_at=start - timedelta(seconds=count - n))
    (dialing,) = await desk.claim_due()
    print(json.dumps({"dialing": dialing.id}), flush=True)
    while True:
        await asyncio.sleep(lease_seconds / 6)
        await desk.renew_leases()


def main(argv: list[str]) -> None:
    mode, url, site = argv[:3]
    if mode == "claim":
        print(json.dumps(asyncio.run(claim_until_none_left(url, site))), flush=True)
    elif mode == "hold":
        asyncio.run(hold(url, site, int(argv[3]), float(argv[4])))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
