"""An agent registered through the Kamailio front door is still called through it after
its site's server is killed -9 and restarted: the stored registration keeps its Path.

The phone (SIPp) registers once, through the front door, at its home site; the site is
killed with SIGKILL and started again on the same ports and store; without registering
again, the phone is called through the front door: the restarted site's INVITE carries the
Path as its Route and the phone sees the front door's Via on top.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from integration.server_fixture import start_pbx
from integration.test_front_door import (
    AGENT,
    call_account,
    front_door_factory,
    register_agent,
    sent_invites,
    wait_for,
)
from pbx.store import RegistrationRecord, Store
from peers import sipp
from peers.procs import free_port

pytestmark = pytest.mark.integration

__all__ = ["front_door_factory"]  # the fixture, imported for pytest to find here


def stored_registrations(store_url: str) -> list[RegistrationRecord]:
    async def read() -> list[RegistrationRecord]:
        store = await Store.open(store_url)
        try:
            return await store.registrations(datetime.now(UTC))
        finally:
            await store.close()
    return asyncio.run(read())


def test_a_phone_registered_through_the_front_door_is_called_through_it_after_a_kill_9(
        pbx_server, front_door_factory, tmp_path: Path) -> None:  # noqa: F811 (the fixture)
    madrid = pbx_server(sip_trace=True)
    door = front_door_factory({"madrid": madrid}, homes={"1001": "madrid", "1002": "madrid"})
    phone_port = free_port(udp=True, tcp=False)
    path = register_agent(door, tmp_path / "register", "1001", "demo1001", phone_port)
    # The binding is in the store, with its Path, before the kill.
    store_url = f"sqlite+aiosqlite:///{madrid.var_dir / 'centralita.db'}"
    assert wait_for(lambda: [r.path for r in stored_registrations(store_url)] == [(f"<{path}>",)]), \
        stored_registrations(store_url)

    os.kill(madrid.pid, signal.SIGKILL)
    madrid.process.wait(10)
    restarted = start_pbx(tmp_path / "restarted", extra_args=("--var-dir", str(madrid.var_dir)),
                          sip_trace=True, ports=(madrid.sip_port, madrid.http_port))
    try:
        assert "restored 1 registration(s) from the store" in restarted.log_text()
        # The front door took madrid out at the kill; its next OPTIONS probe answered puts it
        # back (a call before that is refused "503 No site available", rightly).
        assert wait_for(lambda: "OPTIONS sip:" in restarted.log_text()), restarted.log_text()
        time.sleep(0.5)
        agent_log = tmp_path / "agent" / "agent.log"
        (tmp_path / "agent").mkdir()
        phone = sipp.start(None, workdir=tmp_path / "agent", scenario=AGENT, port=phone_port,
                           calls=1, extra=["-trace_logs", "-log_file", str(agent_log)])
        try:
            assert call_account(door, tmp_path / "caller", "1001", ("1002", "demo1002")) == "200"
            assert wait_for(lambda: "bye-received" in agent_log.read_text(errors="replace"))
        finally:
            phone.stop()
        [invite] = sent_invites(restarted)
        assert f"Route: <{path}>" in invite.splitlines(), invite
        [via] = [line.split(" ", 1)[1] for line in agent_log.read_text().splitlines()
                 if line.startswith("invite-via ")]
        assert f"SIP/2.0/UDP {door.address}" in via, via
    finally:
        restarted.stop()
