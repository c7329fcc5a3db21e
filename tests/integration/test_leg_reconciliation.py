"""Reconciliation built on the call-leg state table, on the whole server run in this
process: a leg left in a state its call no longer matches (what a lost message or a
handler failing halfway leaves) is found by ``CallManager.reconcile`` and its call ended,
the caller is sent a BYE, everything the call held is given back and the repair is counted;
an event a leg's state does not allow is refused, logged and counted."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from events import StaleCallsRepaired
from integration.call_peers import Caller
from integration.test_hangup_races import place_call, start_server, wait_until
from pbx.calls.call_leg import LegEvent, LegState

pytestmark = pytest.mark.integration


def metric(server, name: str, **labels: str) -> float:
    value = server.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_a_call_whose_caller_leg_is_over_is_ended_by_reconciliation(tmp_path: Path) -> None:
    running = await start_server(tmp_path)
    server = running.server
    caller = Caller(running, "100")
    repaired: list[StaleCallsRepaired] = []
    server.events.subscribe(repaired.append, StaleCallsRepaired)
    try:
        await place_call(caller)
        call = next(c for c in server.calls.calls.values() if c.call_id == caller.dialog.call_id)
        leg = call.caller_leg
        assert leg is not None and leg.state is LegState.CONFIRMED
        before = metric(server, "centralita_stale_calls_repaired_total", found_by="reconciliation")

        # A BYE handled halfway: the leg moved to ended, the call itself never torn down.
        leg.life.move(LegEvent.BYE_RECEIVED)
        assert server.calls.reconcile(asyncio.get_running_loop().time(), full=False) == []
        assert call.call_id in {c.call_id for c in server.calls.calls.values()}, \
            "dead-leg detection alone must not judge leg states"

        stale = server.calls.reconcile(asyncio.get_running_loop().time())
        assert caller.dialog.call_id in stale
        assert call.ended and call.end_cause == "stale"
        assert [e.found_by for e in repaired] == ["reconciliation"]
        assert metric(server, "centralita_stale_calls_repaired_total",
                      found_by="reconciliation") == before + 1
        await wait_until(lambda: not any(server.calls.resources().values()))
        # Reconciling again finds nothing more.
        assert server.calls.reconcile(asyncio.get_running_loop().time()) == []
    finally:
        caller.close()
        await server.stop()


async def test_an_event_the_leg_state_does_not_allow_is_refused_logged_and_counted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    running = await start_server(tmp_path)
    server = running.server
    caller = Caller(running, "100")
    try:
        await place_call(caller)
        call = next(c for c in server.calls.calls.values() if c.call_id == caller.dialog.call_id)
        leg = call.caller_leg
        assert leg is not None
        assert server.calls._move(leg, LegEvent.ANSWER_RECEIVED) is False
        assert leg.state is LegState.CONFIRMED, "a refused event leaves the leg where it was"
        assert metric(server, "centralita_call_leg_transitions_refused_total",
                      state="confirmed", event="ANSWER_RECEIVED") == 1
        assert any("cannot take ANSWER_RECEIVED" in r.getMessage() for r in caplog.records)
        # The call is not harmed: reconciliation sees a live leg and leaves it alone.
        assert server.calls.reconcile(asyncio.get_running_loop().time()) == []
        assert not call.ended
    finally:
        caller.close()
        await server.stop()
