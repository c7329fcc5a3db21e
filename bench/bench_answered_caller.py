"""What a caller reaching an agent costs the callback desk: cancelling their active
callback requests, for a caller who has none (nearly every call) and one who has.

Every answered queue call runs ``CallbackDesk.cancel_for_customer``. Without the desk's
index of numbers with an active request that is a store query per call (the queue-flow
regression of issue #10); with it (loaded, as the callback service does every round) the
store is asked only for numbers that have one. Both ways run in one process on a SQLite
store file holding ``--requests`` active requests, alternating ``--rounds`` times; CPU is
the process's (the aiosqlite thread included), per call.

    .venv/bin/python bench/bench_answered_caller.py --calls 2000 --requests 500
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from callbacks import CallbackDesk
from pbx.store import Store
from pbx.store.callbacks import SqlCallbackStore


async def per_call_cpu(desk: CallbackDesk, numbers: list[str]) -> float:
    """Process CPU microseconds per ``cancel_for_customer`` of numbers with no request."""
    started = time.process_time()
    for number in numbers:
        assert await desk.cancel_for_customer(number) == []
    return (time.process_time() - started) / len(numbers) * 1e6


async def main(calls: int, requests: int, rounds: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-answered-caller-"))
    store = await Store.open(f"sqlite+aiosqlite:///{folder}/centralita.db")
    try:
        callbacks = SqlCallbackStore(store.engine)
        desk = CallbackDesk(callbacks, site="madrid", clock=lambda: datetime.now(UTC))
        for n in range(requests):
            await desk.request(f"+3491{n:07d}", "sales")
        callers = [f"+3460{n:07d}" for n in range(calls)]  # none of them asked for a callback
        asked, indexed = [], []
        for _ in range(rounds):
            without = CallbackDesk(callbacks, site="madrid", clock=lambda: datetime.now(UTC))
            asked.append(await per_call_cpu(without, callers))  # never loaded: asks the store
            await desk.load_active_numbers()
            indexed.append(await per_call_cpu(desk, callers))
        started = time.process_time()
        cancelled = await desk.cancel_for_customer("+34910000000")
        with_request = (time.process_time() - started) * 1e6
        print(f"{requests} active requests in the store, {calls} answered callers with none, "
              f"{rounds} rounds alternating")
        print(f"  store asked for every caller:  {statistics.median(asked):8.1f} µs CPU per call "
              f"(rounds: {', '.join(f'{v:.0f}' for v in asked)})")
        print(f"  index of numbers with requests: {statistics.median(indexed):8.1f} µs CPU per call "
              f"(rounds: {', '.join(f'{v:.1f}' for v in indexed)})")
        print(f"  a caller with a request: {len(cancelled)} cancelled, {with_request:.0f} µs CPU")
    finally:
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.requests, args.rounds))
