"""Registrations that survive a restart: the registrar's bindings mirrored in the store.

Every REGISTER that changes an account's bindings queues that account's new set; one
background task writes the latest set per account (a burst of re-registrations costs one
write per account, not one per REGISTER). At start-up the bindings that have not expired
are given back to the registrar, so agents are reachable again without waiting for their
phones to re-register; a binding made through a proxy keeps its Path (RFC 3327), so the
phone is still called through that proxy. Bindings expire in the registrar's loop clock; the store keeps wall
time, converted at both ends.

Only bindings over UDP come back: a TCP or TLS binding is reachable only through the
phone's connection, which died with the previous process (the phone notices and registers
again); ringing it at its old source port would only time out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime

from pbx.registration.registrar import Binding, Registrar
from pbx.sip.address import parse_name_address
from pbx.sip.errors import SipParseError
from pbx.store import RegistrationRecord, Store

log = logging.getLogger("pbx.registrations")

RETRY_INITIAL_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0


class DurableRegistrations:
    def __init__(self, store: Store, registrar: Registrar, loop_clock: Callable[[], float],
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._registrar = registrar
        self._loop_clock = loop_clock
        self._wall_clock = wall_clock
        self._pending: dict[str, list[RegistrationRecord]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        registrar.bindings_listeners.append(self._changed)

    async def restore(self, users: Collection[str] | None = None) -> int:
        """Give the registrar every stored binding still valid (of ``users`` only, when
        given: agents another site's phone registrations brought here); returns how many."""
        wall_now, loop_now = self._wall_clock(), self._loop_clock()
        restored = connection_bound = 0
        for record in await self._store.registrations(datetime.fromtimestamp(wall_now, UTC)):
            if users is not None and record.user not in users:
                continue
            if record.transport.upper() != "UDP":
                connection_bound += 1
                continue
            try:
                contact = parse_name_address(record.contact)
            except SipParseError as error:
                log.warning("stored registration of %s has a bad contact %r (%s): dropped",
                            record.user, record.contact, error)
                continue
            binding = Binding(record.user, contact,
                              loop_now + (record.expires_at.timestamp() - wall_now),
                              record.call_id, record.cseq, (record.source_host, record.source_port),
                              record.transport, record.user_agent, path=record.path)
            if self._registrar.restore(binding, loop_now):
                restored += 1
        log.info("restored %d registration(s) from the store%s", restored,
                 f" ({connection_bound} over TCP/TLS left for their phones to renew)"
                 if connection_bound else "")
        return restored

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._write_forever(),
                                                              name="registrations-writer")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._pending:
            pending, self._pending = self._pending, {}
            try:
                await self._store.replace_registrations(pending)
            except Exception as error:
                log.error("registrations of %d account(s) not stored at shutdown: %s",
                          len(pending), error)

    def _changed(self, user: str, bindings: list[Binding]) -> None:
        wall_offset = self._wall_clock() - self._loop_clock()
        self._pending[user] = [
            RegistrationRecord(
                user=b.user, contact=str(b.contact), contact_uri=b.contact_uri,
                expires_at=datetime.fromtimestamp(b.expires_at + wall_offset, UTC),
                call_id=b.call_id, cseq=b.cseq, source_host=b.source[0], source_port=b.source[1],
                transport=b.transport, user_agent=b.user_agent, path=b.path)
            for b in bindings
        ]
        self._wake.set()

    async def _write_forever(self) -> None:
        delay = RETRY_INITIAL_SECONDS
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending, self._pending = self._pending, {}
            if not pending:
                continue
            try:
                await self._store.replace_registrations(pending)
                delay = RETRY_INITIAL_SECONDS
            except Exception as error:
                # Newer changes that arrived meanwhile win over the ones that failed.
                self._pending = {**pending, **self._pending}
                log.warning("storing registrations failed (%s), retrying in %.1f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                self._wake.set()
