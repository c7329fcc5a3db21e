"""The background writer: call logic hands it records, one task stores them in batches.

``put`` never blocks: items wait on a bounded queue that one task drains in
batches of ``batch_size``. After the first item of a batch it gathers for up to
``gather_seconds`` (unless the batch fills or someone flushes), because every transaction
costs about as much as the rows it carries: a call puts about ten items over its life, and
written one at a time each paid its own transaction. A database outage is logged and retried with backoff; while it
lasts the queue stays bounded and the oldest writes are dropped (and counted) rather than
memory growing without limit. A batch the database refuses for good is written item by
item, so one bad line loses only itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from functools import partial

import sqlalchemy.exc as sa_exc
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge as PromGauge

from pbx.store import (
    CallDetails,
    CallRecord,
    ConstraintViolation,
    LastAgent,
    LiveCallRecord,
    QueueLogEntry,
    Store,
)

log = logging.getLogger("pbx.records")

# Errors that will not go away by retrying: the write is dropped (and counted), not retried.
_PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    ConstraintViolation,
    sa_exc.IntegrityError,
    sa_exc.DataError,
    ValueError,
    TypeError,
)

Write = CallRecord | QueueLogEntry | LiveCallRecord | CallDetails | LastAgent

_WRITE_KINDS: dict[type, str] = {CallRecord: "call_record", QueueLogEntry: "queue_log",
                                  LiveCallRecord: "live_call", CallDetails: "call_details",
                                  LastAgent: "last_agent"}


class RecordWriter:
    """Stores what it is given in the background; ``start()`` inside the running loop."""

    def __init__(self, store: Store, *, registry: CollectorRegistry | None = None,
                 max_pending: int = 10_000, batch_size: int = 200, gather_seconds: float = 0.0,
                 retry_initial_seconds: float = 0.5, retry_max_seconds: float = 30.0) -> None:
        self._store = store
        self._batch_size = batch_size
        self._max_pending = max_pending
        self._gather = gather_seconds
        self._hurry = asyncio.Event()  # set: write what is there now (a flush, a full batch)
        self._retry_initial = retry_initial_seconds
        self._retry_max = retry_max_seconds
        # A deque, not an asyncio.Queue: about ten puts per call, and a Queue's put and get
        # cost a dozen Python calls each where the deque's are one.
        self._items: deque[Write] = deque()
        self._unfinished = 0  # put and neither stored nor dropped yet
        self._arrival: asyncio.Future[None] | None = None  # the idle drainer waits on it
        self._all_done: list[asyncio.Future[None]] = []  # flushes waiting
        self._task: asyncio.Task[None] | None = None
        self.dropped: Counter[str] = Counter()  # "overflow" / "rejected" -> writes lost
        self.write_failures = 0
        self._dropped_metric: PromCounter | None = None
        self._failures_metric: PromCounter | None = None
        if registry is not None:
            self._dropped_metric = PromCounter(
                "centralita_call_records_dropped",
                "CDR and queue-log writes lost: the write queue overflowed or the database refused them",
                ["kind", "reason"], registry=registry)
            self._failures_metric = PromCounter(
                "centralita_call_records_write_failures",
                "Failed CDR/queue-log write attempts (retried with backoff)", registry=registry)
            pending = PromGauge("centralita_call_records_pending",
                                "CDR and queue-log writes waiting for the database", registry=registry)
            pending.set_function(lambda: len(self._items))

    @property
    def started(self) -> bool:
        return self._task is not None

    @property
    def pending(self) -> int:
        return len(self._items)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="call-recorder")

    def put(self, item: Write) -> None:
        items = self._items
        if len(items) >= self._max_pending:
            lost = items.popleft()
            self._unfinished -= 1
            self._count_drop(lost, "overflow")
        items.append(item)
        self._unfinished += 1
        arrival = self._arrival
        if arrival is not None:
            self._arrival = None
            if not arrival.done():
                arrival.set_result(None)
        if len(items) >= self._batch_size:
            self._hurry.set()

    async def flush(self) -> None:
        """Wait until every item put so far is stored (or dropped)."""
        if self._unfinished == 0:
            return
        self._hurry.set()
        done = asyncio.get_running_loop().create_future()
        self._all_done.append(done)
        await done

    async def close(self, timeout: float) -> None:
        """Give the task ``timeout`` seconds to store what is queued, then stop it."""
        if self._task is None:
            if self._items:
                log.error("call recorder closed unstarted: %d writes not stored", len(self._items))
            return
        try:
            async with asyncio.timeout(timeout):
                await self.flush()
        except TimeoutError:
            log.error("call recorder closed with %d writes not stored", len(self._items))
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    def _finished(self, count: int) -> None:
        self._unfinished -= count
        if self._unfinished == 0 and self._all_done:
            waiting, self._all_done = self._all_done, []
            for done in waiting:
                if not done.done():
                    done.set_result(None)

    def _count_drop(self, item: Write, reason: str, count: int = 1) -> None:
        self.dropped[reason] += count
        if self._dropped_metric is not None:
            kind = _WRITE_KINDS[type(item)]
            self._dropped_metric.labels(kind, reason).inc(count)
        if reason == "overflow" and self.dropped[reason] & (self.dropped[reason] - 1) == 0:
            # Logged at 1, 2, 4, 8, ... drops so an outage does not flood the log.
            log.error("call recorder: write queue full, %d writes dropped so far",
                      self.dropped[reason])

    async def _drain(self) -> None:
        while True:
            await self._drain_one_batch()

    async def _drain_one_batch(self) -> None:
        # A frame of its own: the batch written is let go before waiting for the next one,
        # so an idle writer holds no record (the memory census counts what stays).
        items = self._items
        while not items:
            self._arrival = arrival = asyncio.get_running_loop().create_future()
            await arrival
        if self._gather > 0 and not self._hurry.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._gather):
                    await self._hurry.wait()
        take = min(len(items), self._batch_size)
        batch = [items.popleft() for _ in range(take)]
        if not items:  # else the rest goes at once too (a backlog, a flush)
            self._hurry.clear()
        try:
            await self._write(batch)
        finally:
            self._finished(len(batch))

    async def _write(self, batch: list[Write]) -> None:
        entries = [item for item in batch if isinstance(item, QueueLogEntry)]
        records = [item for item in batch if isinstance(item, CallRecord)]
        started = [item for item in batch if isinstance(item, LiveCallRecord)]
        details = [item for item in batch if isinstance(item, CallDetails)]
        last_agents = [item for item in batch if isinstance(item, LastAgent)]
        if await self._persist(partial(self._store.append_history, records, entries,
                                       started=started, details=details,
                                       last_agents=last_agents)):
            return
        # The batch was refused: write item by item, so one bad line loses only itself.
        for call in started:
            if not await self._persist(partial(self._store.append_history, (), (), started=[call])):
                self._count_drop(call, "rejected")
        for entry in entries:
            if not await self._persist(partial(self._store.append_history, (), [entry])):
                self._count_drop(entry, "rejected")
        for record in records:
            if not await self._persist(partial(self._store.append_history, [record], ())):
                self._count_drop(record, "rejected")
        for detail in details:
            if not await self._persist(partial(self._store.append_history, (), (), details=[detail])):
                self._count_drop(detail, "rejected")
        for note in last_agents:
            if not await self._persist(partial(self._store.append_history, (), (),
                                               last_agents=[note])):
                self._count_drop(note, "rejected")

    async def _persist(self, write: Callable[[], Awaitable[object]]) -> bool:
        """Run ``write`` until it succeeds (True) or is refused for good (False)."""
        delay = self._retry_initial
        while True:
            try:
                await write()
                return True
            except _PERMANENT_ERRORS:
                log.exception("call recorder: the database refused a write; dropping it")
                return False
            except Exception as error:
                self.write_failures += 1
                if self._failures_metric is not None:
                    self._failures_metric.inc()
                log.warning("call recorder: write failed (%s), retrying in %.1f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
