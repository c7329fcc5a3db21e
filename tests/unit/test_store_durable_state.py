"""The store's durable runtime state on SQLite: registrations, calls in progress, and
finished calls' details (routing, IVR path, screen-pop context)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from events.sites import SiteDown
from pbx.records.interruptions import KeptPlaces, record_interrupted_calls
from pbx.store import CallDetails, CallRecord, LiveCallRecord, RegistrationRecord, Store

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/state.db")
    yield opened
    await opened.close()


def binding(user: str, port: int, *, expires_in: float = 3600, cseq: int = 1) -> RegistrationRecord:
    return RegistrationRecord(
        user=user, contact=f"<sip:{user}@127.0.0.1:{port}>;+sip.instance=\"<urn:x>\"",
        contact_uri=f"sip:{user}@127.0.0.1:{port}", expires_at=NOW + timedelta(seconds=expires_in),
        call_id=f"reg-{user}", cseq=cseq, source_host="127.0.0.1", source_port=port,
        transport="udp", user_agent="SIPp")


async def test_registrations_are_replaced_per_user_and_expired_ones_dropped(store: Store) -> None:
    await store.replace_registrations({"1001": [binding("1001", 5071), binding("1001", 5072)],
                                       "1002": [binding("1002", 5073, expires_in=10)]})
    assert await store.registrations(NOW) == [binding("1001", 5071), binding("1001", 5072),
                                              binding("1002", 5073, expires_in=10)]
    # A re-REGISTER of one account leaves the others alone; an unregistration empties it.
    await store.replace_registrations({"1001": [binding("1001", 5072, cseq=2)]})
    await store.replace_registrations({"1003": [binding("1003", 5074)], "1004": []})
    assert await store.registrations(NOW) == [binding("1001", 5072, cseq=2),
                                              binding("1002", 5073, expires_in=10),
                                              binding("1003", 5074)]
    later = NOW + timedelta(seconds=60)
    assert [r.user for r in await store.registrations(later)] == ["1001", "1003"]
    # Gone for good, not just filtered.
    assert [r.user for r in await store.registrations(NOW)] == ["1001", "1003"]


async def test_calls_left_in_progress_become_interrupted_records(store: Store) -> None:
    await store.append_history([], [], started=[
        LiveCallRecord("a", "600100", "100", NOW, "application"),
        LiveCallRecord("b", "1001", "1002", NOW + timedelta(seconds=1), "bridge"),
        LiveCallRecord("c", "600200", "100", NOW + timedelta(seconds=2), "application")])
    # Noted again when it entered a queue and an agent answered.
    await store.append_history([], [], started=[
        LiveCallRecord("c", "600200", "100", NOW + timedelta(seconds=2), "application",
                       queue="sales"),
        LiveCallRecord("c", "600200", "100", NOW + timedelta(seconds=2), "application",
                       queue="sales", agent="1001", answered=NOW + timedelta(seconds=20))])
    # "b" ended normally: its record closes its in-progress row in the same transaction.
    await store.append_history([CallRecord("b", "1001", "1002", NOW + timedelta(seconds=1),
                                           ended=NOW + timedelta(seconds=9),
                                           disposition="answered")], [])
    assert [call.call_id for call in await store.live_calls()] == ["a", "c"]

    interrupted = await store.close_interrupted_calls()
    assert [(r.call_id, r.caller, r.callee, r.started, r.disposition, r.ended)
            for r in interrupted] == [
        ("a", "600100", "100", NOW, "interrupted", None),
        ("c", "600200", "100", NOW + timedelta(seconds=2), "interrupted", None)]
    assert (interrupted[1].queue, interrupted[1].agent, interrupted[1].answered) == (
        "sales", "1001", NOW + timedelta(seconds=20))
    assert await store.live_calls() == []
    assert [(r.call_id, r.disposition) for r in await store.call_records()] == [
        ("a", "interrupted"), ("b", "answered"), ("c", "interrupted")]
    assert await store.close_interrupted_calls() == []


async def test_a_site_closes_only_its_own_interrupted_calls(store: Store) -> None:
    await store.append_history([], [], started=[
        LiveCallRecord("m", "1", "100", NOW, site="madrid"),
        LiveCallRecord("b", "2", "100", NOW, site="bogota")])
    assert [r.call_id for r in await store.close_interrupted_calls(site="madrid")] == ["m"]
    assert [c.call_id for c in await store.live_calls(site="bogota")] == ["b"]


async def test_finished_calls_details_round_trip_and_the_latest_wins(store: Store) -> None:
    assert await store.call_details("x") is None
    routing = [{"trigger": "enqueue", "chosen": "1001", "candidates": []}]
    ivr = {"call_id": "x", "path": [{"node": "welcome", "at": 0.0}], "outcome": "enqueued"}
    context = {"call_id": "x", "agent": "1001", "queue": "billing", "ivr": ivr}
    await store.append_history([], [], details=[CallDetails("x", NOW, routing, None, None)])
    await store.append_history([], [], details=[CallDetails("x", NOW, routing, ivr, context)])
    assert await store.call_details("x") == CallDetails("x", NOW, routing, ivr, context)


async def test_infinite_and_nan_scores_in_details_are_stored_as_null(store: Store) -> None:
    routing = [{"eligible": [{"score": (float("-inf"), 2.5), "nan": float("nan")}]}]
    await store.append_history([], [], details=[CallDetails("y", NOW, routing, None, None)])
    stored = await store.call_details("y")
    assert stored is not None and stored.routing == [{"eligible": [{"score": [None, 2.5],
                                                                     "nan": None}]}]


async def test_an_adopted_call_that_was_alive_after_all_keeps_only_its_real_record(
        store: Store) -> None:
    # Bogota took Madrid for dead and recorded Madrid's call as interrupted; Madrid was alive
    # and ends the call: its record replaces the interrupted one, so the call has one record.
    await store.append_history([], [], started=[LiveCallRecord("m1", "600", "100", NOW, site="madrid"),
                                                LiveCallRecord("m2", "601", "100", NOW, site="madrid")])
    assert [r.call_id for r in await store.close_interrupted_calls(site="madrid")] == ["m1", "m2"]
    await store.append_history([CallRecord("m1", "600", "100", NOW, ended=NOW + timedelta(seconds=30),
                                           disposition="completed", site="madrid")], [])
    assert sorted((r.call_id, r.disposition) for r in await store.call_records()) == [
        ("m1", "completed"), ("m2", "interrupted")]


async def test_the_records_of_a_dead_sites_calls_are_written_once_and_logged(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    await store.append_history([], [], started=[
        LiveCallRecord("q", "600", "100", NOW, site="madrid", queue="sales"),
        LiveCallRecord("b", "601", "100", NOW, site="bogota")])
    with caplog.at_level("WARNING", logger="pbx.records"):
        adopted = await record_interrupted_calls(store, "madrid", by="bogota")
        assert await record_interrupted_calls(store, "madrid", by="lima") == []
    assert [(r.call_id, r.disposition, r.site, r.queue) for r in adopted] == [
        ("q", "interrupted", "madrid", "sales")]
    assert [r.call_id for r in await store.call_records()] == ["q"]
    assert "call q (600 -> 100" in caplog.text and "site madrid (adopted by bogota)" in caplog.text


async def test_an_interrupted_waiting_caller_leaves_their_place_taken_once_within_the_window(
        store: Store) -> None:
    queued_at = NOW - timedelta(minutes=3)
    await store.append_history([], [], started=[
        # waiting in sales, vip priority, in line for 3 minutes
        LiveCallRecord("w", "600100", "100", queued_at, site="madrid", queue="sales",
                       priority=3, enqueued_at=queued_at),
        # talking to an agent: nothing to keep
        LiveCallRecord("t", "600200", "100", queued_at, site="madrid", queue="sales", agent="1001",
                       answered=NOW, priority=1, enqueued_at=queued_at),
        # in the IVR: no queue yet
        LiveCallRecord("i", "600300", "100", NOW, site="madrid")])
    await store.close_interrupted_calls(site="madrid", now=NOW)

    assert await store.take_interrupted_wait("600200", "sales", NOW - timedelta(minutes=10)) is None
    assert await store.take_interrupted_wait("600300", "sales", NOW - timedelta(minutes=10)) is None
    assert await store.take_interrupted_wait("600100", "billing", NOW - timedelta(minutes=10)) is None
    # Interrupted before the window began: not given back (and still there for a wider window).
    assert await store.take_interrupted_wait("600100", "sales", NOW + timedelta(seconds=1)) is None
    kept = await store.take_interrupted_wait("600100", "sales", NOW - timedelta(minutes=10))
    assert kept is not None
    assert (kept.call_id, kept.number, kept.queue, kept.priority, kept.enqueued_at, kept.site,
            kept.interrupted_at) == ("w", "600100", "sales", 3, queued_at, "madrid", NOW)
    assert await store.take_interrupted_wait("600100", "sales", NOW - timedelta(minutes=10)) is None


async def test_expired_places_are_forgotten_and_a_call_alive_after_all_leaves_none(
        store: Store) -> None:
    for call_id, interrupted_at in (("old", NOW - timedelta(hours=2)), ("new", NOW)):
        await store.append_history([], [], started=[LiveCallRecord(
            call_id, "600100", "100", NOW, site="madrid", queue="sales", priority=1,
            enqueued_at=NOW)])
        await store.close_interrupted_calls(site="madrid", now=interrupted_at)
    assert await store.forget_interrupted_waits(NOW - timedelta(hours=1)) == 1
    # "new" went on at its site after all: its real record takes its place away too.
    await store.append_history([CallRecord("new", "600100", "100", NOW, ended=NOW,
                                           disposition="abandoned", site="madrid")], [])
    assert await store.take_interrupted_wait("600100", "sales", NOW - timedelta(days=1)) is None


async def test_kept_places_give_nothing_when_the_window_is_zero(store: Store) -> None:
    await store.append_history([], [], started=[LiveCallRecord(
        "w", "600100", "100", NOW, site="madrid", queue="sales", priority=2, enqueued_at=NOW)])
    await store.close_interrupted_calls(site="madrid")
    assert await KeptPlaces(store, 0).place_of("600100", "sales") is None
    kept = await KeptPlaces(store, 600).place_of("600100", "sales")
    assert kept is not None and (kept.call_id, kept.priority) == ("w", 2)


async def test_kept_places_ask_the_store_only_for_numbers_holding_a_place(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    async def interrupt(call_id: str, number: str) -> None:
        await store.append_history([], [], started=[LiveCallRecord(
            call_id, number, "100", NOW, site="madrid", queue="sales", priority=2,
            enqueued_at=NOW)])
        await store.close_interrupted_calls(site="madrid", now=NOW)

    await interrupt("w1", "600100")
    await interrupt("w2", "600100")  # the same caller interrupted twice: two places
    clock = [NOW.timestamp()]
    places = KeptPlaces(store, 600, clock=lambda: clock[0])
    await places.load()
    asked: list[str] = []
    take = store.take_interrupted_wait

    async def counted_take(number: str, queue: str, since: datetime) -> object:
        asked.append(number)
        return await take(number, queue, since)
    monkeypatch.setattr(store, "take_interrupted_wait", counted_take)

    assert await places.place_of("600999", "sales") is None
    assert asked == []  # a caller who never had a place costs no store round trip
    assert [(await places.place_of("600100", "sales")).call_id for _ in range(2)] == ["w1", "w2"]
    assert await places.place_of("600100", "sales") is None
    assert asked == ["600100", "600100"]

    # Another site's survivor writes places after this server read them: unseen until a site
    # is known down, then asked for during the window.
    await interrupt("w3", "600300")
    assert await places.place_of("600300", "sales") is None
    places.site_down(SiteDown(site="madrid", reason="last will: connection lost"))
    assert (await places.place_of("600300", "sales")).call_id == "w3"
    clock[0] += 601
    assert await places.place_of("600400", "sales") is None
    assert asked == ["600100", "600100", "600300"]


async def test_a_registration_through_proxies_keeps_its_path(store: Store) -> None:
    path = ("<sip:127.0.0.1:5090;lr;received=sip:127.0.0.1:5071>", "<sip:10.0.0.1;lr>")
    through = RegistrationRecord(
        user="1001", contact="<sip:1001@127.0.0.1:5071>", contact_uri="sip:1001@127.0.0.1:5071",
        expires_at=NOW + timedelta(hours=1), call_id="reg-1", cseq=1, source_host="127.0.0.1",
        source_port=5090, transport="udp", path=path)
    await store.replace_registrations({"1001": [through], "1002": [binding("1002", 5072)]})
    assert await store.registrations(NOW) == [through, binding("1002", 5072)]
    assert (await store.registrations(NOW))[1].path == ()


async def test_a_call_taken_twice_keeps_one_interrupted_record_and_one_place(store: Store) -> None:
    # Adopted while its site was alive, noted again by that site, then taken again.
    note = LiveCallRecord("w", "600100", "100", NOW, site="madrid", queue="sales", priority=2,
                          enqueued_at=NOW)
    await store.append_history([], [], started=[note])
    await store.close_interrupted_calls(site="madrid", now=NOW)
    await store.append_history([], [], started=[note])
    await store.close_interrupted_calls(site="madrid", now=NOW + timedelta(seconds=5))
    assert [(r.call_id, r.disposition) for r in await store.call_records()] == [("w", "interrupted")]
    kept = await store.take_interrupted_wait("600100", "sales", NOW - timedelta(minutes=1))
    assert kept is not None and kept.interrupted_at == NOW + timedelta(seconds=5)
    assert await store.take_interrupted_wait("600100", "sales", NOW - timedelta(minutes=1)) is None
