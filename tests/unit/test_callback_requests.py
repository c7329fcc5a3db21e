"""The callback domain without I/O: the state table, numbers, policy and backoff, line order."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbacks import (
    ACTIVE_STATES,
    FINAL_STATES,
    TRANSITIONS,
    CallbackPolicy,
    CallbackRequest,
    CallbackState,
    IllegalTransition,
    InvalidNumber,
    InvalidPolicy,
    LeaseHeld,
    NotDue,
    NumberProblem,
    Outcome,
    Trigger,
    due_in_line_order,
    duplicate_of,
    normalize_number,
)
from callbacks.requests import (
    adopt,
    apply_outcome,
    cancel,
    claim,
    expire,
    new_request,
    next_state,
    recover,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
POLICY = CallbackPolicy(max_attempts=3, retry_delay=timedelta(minutes=2), backoff=2.0,
                        max_retry_delay=timedelta(minutes=10), expiry=timedelta(hours=4))


def _request(number: str = "+34 600 111 222", queue: str = "sales", **options: object) -> CallbackRequest:
    return new_request(number, queue, site="madrid", now=T0, lease=LEASE, policy=POLICY,
                       **options)  # type: ignore[arg-type]


def _dialing(request: CallbackRequest | None = None, now: datetime = T0) -> CallbackRequest:
    return claim(request or _request(), "madrid", now, LEASE)


# -- the state table ---------------------------------------------------------------------


def test_every_pair_outside_the_table_is_refused() -> None:
    listed = 0
    for state, trigger in itertools.product(CallbackState, Trigger):
        if (state, trigger) in TRANSITIONS:
            assert next_state(state, trigger) is TRANSITIONS[(state, trigger)]
            listed += 1
        else:
            with pytest.raises(IllegalTransition, match=state.value):
                next_state(state, trigger)
    assert listed == len(TRANSITIONS) == 9


def test_final_states_have_no_way_out_and_active_ones_can_end() -> None:
    for state, trigger in TRANSITIONS:
        assert state in ACTIVE_STATES, (state, trigger)
    reachable_finals = {target for target in TRANSITIONS.values() if target in FINAL_STATES}
    assert reachable_finals == set(FINAL_STATES)


def test_a_completed_request_refuses_every_step() -> None:
    done = apply_outcome(_dialing(), Outcome.ANSWERED, T0, site="madrid", policy=POLICY)
    assert done.state is CallbackState.COMPLETED
    with pytest.raises(IllegalTransition):
        claim(done, "madrid", T0, LEASE)
    with pytest.raises(IllegalTransition):
        cancel(done, T0, "operator", "madrid")
    with pytest.raises(IllegalTransition):
        apply_outcome(done, Outcome.BUSY, T0, site="madrid", policy=POLICY)
    with pytest.raises(IllegalTransition):
        adopt(done, "bogota", T0 + timedelta(hours=1), LEASE)


# -- numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "dialable"), [
    ("+34 600 111 222", "+34600111222"),
    ("(91) 555-12.34", "915551234"),
    ("112", "112"),
    ("  600111222\t", "600111222"),
    ("+" + "1" * 15, "+" + "1" * 15),
])
def test_numbers_as_people_write_them_are_accepted(raw: str, dialable: str) -> None:
    assert normalize_number(raw) == dialable


@pytest.mark.parametrize(("raw", "problem", "words"), [
    ("", NumberProblem.EMPTY, "empty"),
    ("   ", NumberProblem.EMPTY, "empty"),
    ("+", NumberProblem.EMPTY, "no digits"),
    ("- ()", NumberProblem.EMPTY, "no digits"),
    ("600 CALL ME", NumberProblem.LETTERS, "letters"),
    ("abc", NumberProblem.LETTERS, "letters"),
    ("1" * 16, NumberProblem.TOO_LONG, "16 digits"),
    ("12", NumberProblem.TOO_SHORT, "at least 3"),
    ("600*111#", NumberProblem.SYMBOLS, "'*#'"),
    ("6++00111222", NumberProblem.SYMBOLS, "'++'"),
    ("６００１１１２２２", NumberProblem.SYMBOLS, "digits only"),  # full-width digits
])
def test_bad_numbers_are_refused_with_a_reason(raw: str, problem: NumberProblem, words: str) -> None:
    with pytest.raises(InvalidNumber) as refused:
        normalize_number(raw)
    assert refused.value.problem is problem
    assert words in refused.value.reason
    assert str(refused.value) == refused.value.reason


def test_a_request_with_a_bad_number_is_never_made() -> None:
    with pytest.raises(InvalidNumber):
        _request(number="call me")


@pytest.mark.parametrize("options", [
    {"queue": ""},
    {"priority": True},
    {"priority": "3"},
    {"requested_at": T0 + timedelta(seconds=1)},
])
def test_a_request_with_a_bad_queue_priority_or_enqueue_time_is_refused(
        options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        _request(**options)
    with pytest.raises(ValueError, match="timezone"):
        new_request("600111222", "sales", site="madrid", now=T0.replace(tzinfo=None), lease=LEASE,
                    policy=POLICY)


# -- policy and backoff ---------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap() -> None:
    delays = [POLICY.delay_before_retry(retry) for retry in range(1, 6)]
    assert delays == [timedelta(minutes=2), timedelta(minutes=4), timedelta(minutes=8),
                      timedelta(minutes=10), timedelta(minutes=10)]
    assert POLICY.delay_before_retry(10_000) == timedelta(minutes=10)  # no float overflow
    with pytest.raises(ValueError):
        POLICY.delay_before_retry(0)


@pytest.mark.parametrize("options", [
    {"max_attempts": 0},
    {"max_attempts": True},
    {"retry_delay": timedelta(0)},
    {"backoff": 0.5},
    {"backoff": float("nan")},
    {"max_retry_delay": timedelta(seconds=1)},
    {"expiry": timedelta(seconds=-1)},
])
def test_policies_that_make_no_sense_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(InvalidPolicy):
        CallbackPolicy(**options)  # type: ignore[arg-type]


# -- a request's life -----------------------------------------------------------------------


def test_a_new_request_keeps_the_callers_original_enqueue_time() -> None:
    joined = T0 - timedelta(minutes=7)
    request = _request(requested_at=joined, priority=2, origin_call_id="call-1")
    assert request.requested_at == joined
    assert request.earliest_at == T0
    assert request.expires_at == T0 + POLICY.expiry
    assert (request.state, request.attempts, request.version) == (CallbackState.PENDING, 0, 0)
    assert request.lease_expires_at == T0 + LEASE
    assert request.origin_call_id == "call-1"
    scheduled = _request(earliest_at=T0 + timedelta(hours=2))
    assert scheduled.expires_at == T0 + timedelta(hours=2) + POLICY.expiry
    assert _request().id != _request().id


def test_answered_completes_and_counts_one_try() -> None:
    done = apply_outcome(_dialing(), Outcome.ANSWERED, T0, site="madrid", policy=POLICY)
    assert (done.state, done.attempts) == (CallbackState.COMPLETED, 1)
    assert [record.outcome for record in done.history] == [Outcome.ANSWERED]


def test_no_answer_and_busy_retry_with_backoff_then_fail() -> None:
    request = _request()
    now = T0
    waits = []
    for outcome in (Outcome.NO_ANSWER, Outcome.BUSY):
        request = apply_outcome(_dialing(request, now), outcome, now, site="madrid", policy=POLICY)
        assert request.state is CallbackState.PENDING
        waits.append(request.earliest_at - now)
        with pytest.raises(NotDue):
            claim(request, "madrid", request.earliest_at - timedelta(seconds=1), LEASE)
        now = request.earliest_at
    assert waits == [timedelta(minutes=2), timedelta(minutes=4)]
    last = apply_outcome(_dialing(request, now), Outcome.NO_ANSWER, now, site="madrid", policy=POLICY)
    assert (last.state, last.attempts) == (CallbackState.FAILED, 3)


def test_invalid_number_fails_at_once() -> None:
    failed = apply_outcome(_dialing(), Outcome.INVALID_NUMBER, T0, site="madrid", policy=POLICY,
                           detail="404 Not Found")
    assert (failed.state, failed.attempts) == (CallbackState.FAILED, 1)
    assert failed.history[-1].detail == "404 Not Found"


def test_trunk_failures_retry_without_using_up_tries_until_expiry() -> None:
    request = _request()
    now = T0
    for _ in range(30):
        request = apply_outcome(_dialing(request, now), Outcome.TRUNK_FAILURE, now,
                                site="madrid", policy=POLICY, detail="503")
        if request.state is not CallbackState.PENDING:
            break
        now = request.earliest_at
    assert request.state is CallbackState.EXPIRED
    assert request.attempts == 0
    assert now < request.expires_at


def test_agent_rejecting_the_preview_puts_the_request_back_in_its_place() -> None:
    dialing = _dialing(_request(requested_at=T0 - timedelta(minutes=3)), T0 + timedelta(minutes=1))
    back = apply_outcome(dialing, Outcome.AGENT_REJECTED, T0 + timedelta(minutes=2),
                         site="madrid", policy=POLICY)
    assert back.state is CallbackState.PENDING
    assert (back.attempts, back.earliest_at, back.requested_at) == (
        0, dialing.earliest_at, dialing.requested_at)


def test_only_the_owner_reports_and_only_outcomes_of_tries() -> None:
    with pytest.raises(LeaseHeld):
        apply_outcome(_dialing(), Outcome.BUSY, T0, site="bogota", policy=POLICY)
    with pytest.raises(ValueError):
        apply_outcome(_dialing(), Outcome.CANCELLED, T0, site="madrid", policy=POLICY)
    with pytest.raises(IllegalTransition):
        apply_outcome(_request(), Outcome.BUSY, T0, site="madrid", policy=POLICY)


def test_claiming_needs_a_due_request_and_the_lease() -> None:
    scheduled = _request(earliest_at=T0 + timedelta(hours=1))
    with pytest.raises(NotDue):
        claim(scheduled, "madrid", T0, LEASE)
    with pytest.raises(NotDue):
        claim(_request(), "madrid", T0 + POLICY.expiry, LEASE)
    with pytest.raises(LeaseHeld):
        claim(_request(), "bogota", T0 + LEASE - timedelta(seconds=1), LEASE)
    taken = claim(_request(), "bogota", T0 + LEASE, LEASE)  # the owner's lease ran out
    assert (taken.state, taken.site, taken.lease_expires_at) == (
        CallbackState.DIALING, "bogota", T0 + 2 * LEASE)
    with pytest.raises(IllegalTransition):
        claim(taken, "bogota", T0 + LEASE, LEASE)


def test_adopting_a_dead_sites_request_requeues_the_try_it_was_making() -> None:
    dialing = _dialing()
    with pytest.raises(LeaseHeld):
        adopt(dialing, "bogota", T0 + LEASE - timedelta(microseconds=1), LEASE)
    later = T0 + LEASE
    adopted = adopt(dialing, "bogota", later, LEASE)
    assert (adopted.state, adopted.site, adopted.attempts) == (CallbackState.PENDING, "bogota", 0)
    assert adopted.history[-1].outcome is Outcome.INTERRUPTED
    assert adopted.lease_expires_at == later + LEASE
    pending = adopt(_request(), "bogota", later, LEASE)
    assert (pending.state, pending.site, pending.history) == (CallbackState.PENDING, "bogota", ())


def test_a_restarted_site_requeues_its_own_interrupted_tries() -> None:
    back = recover(_dialing(), "madrid", T0 + timedelta(seconds=5), LEASE)
    assert back.state is CallbackState.PENDING
    assert back.history[-1].outcome is Outcome.INTERRUPTED
    with pytest.raises(LeaseHeld):
        recover(_dialing(), "bogota", T0, LEASE)
    with pytest.raises(IllegalTransition):
        recover(_request(), "madrid", T0, LEASE)


def test_cancel_and_expire() -> None:
    cancelled = cancel(_dialing(), T0, "the customer reached an agent", "bogota")
    assert cancelled.state is CallbackState.CANCELLED
    assert cancelled.history[-1].detail == "the customer reached an agent"
    with pytest.raises(NotDue):
        expire(_request(), T0 + POLICY.expiry - timedelta(seconds=1), "madrid")
    assert expire(_request(), T0 + POLICY.expiry, "madrid").state is CallbackState.EXPIRED
    with pytest.raises(IllegalTransition):
        expire(_dialing(), T0 + POLICY.expiry, "madrid")


# -- line order and dedupe -----------------------------------------------------------------


def test_due_requests_in_line_order_priority_then_original_enqueue_time() -> None:
    early_free = _request(number="600000001", requested_at=T0 - timedelta(minutes=10))
    late_free = _request(number="600000002", requested_at=T0 - timedelta(minutes=1))
    late_vip = _request(number="600000003", requested_at=T0 - timedelta(minutes=1), priority=3)
    scheduled = _request(number="600000004", requested_at=T0 - timedelta(hours=1),
                         earliest_at=T0 + timedelta(hours=1))
    dialing = _dialing(_request(number="600000005", requested_at=T0 - timedelta(hours=2)))
    ordered = due_in_line_order([late_free, scheduled, early_free, dialing, late_vip], T0)
    assert ordered == [late_vip, early_free, late_free]
    assert due_in_line_order([scheduled], T0 + timedelta(hours=1)) == [scheduled]


def test_ties_are_broken_by_id_so_the_order_is_total() -> None:
    same = [_request(number=f"60000000{n}", requested_at=T0 - timedelta(minutes=1)) for n in range(5)]
    assert [r.id for r in due_in_line_order(same, T0)] == sorted(r.id for r in same)


def test_duplicate_of_finds_only_the_active_request_for_that_number_and_queue() -> None:
    pending = _request()
    done = apply_outcome(_dialing(_request(queue="billing")), Outcome.ANSWERED, T0,
                         site="madrid", policy=POLICY)
    assert duplicate_of([done, pending], "+34600111222", "sales") is pending
    assert duplicate_of([done, pending], "+34600111222", "billing") is None
    assert duplicate_of([pending], "+34600111223", "sales") is None


# -- invariants over any sequence of steps ------------------------------------------------

STEPS = st.lists(st.tuples(
    st.sampled_from(["claim", "report", "cancel", "expire", "adopt", "recover"]),
    st.sampled_from(list(Outcome)),
    st.sampled_from(["madrid", "bogota"]),
    st.integers(min_value=0, max_value=3 * 3600),
), max_size=25)


@settings(max_examples=300, deadline=None)
@given(steps=STEPS)
def test_no_sequence_of_steps_moves_the_place_in_line_or_escapes_the_table(
        steps: list[tuple[str, Outcome, str, int]]) -> None:
    original = _request(requested_at=T0 - timedelta(minutes=5), priority=2)
    request = original
    now = T0
    for action, outcome, site, seconds in steps:
        now = now + timedelta(seconds=seconds)
        before = request
        try:
            if action == "claim":
                request = claim(request, site, now, LEASE)
            elif action == "report":
                request = apply_outcome(request, outcome, now, site=site, policy=POLICY)
            elif action == "cancel":
                request = cancel(request, now, "test", site)
            elif action == "expire":
                request = expire(request, now, site)
            elif action == "adopt":
                request = adopt(request, site, now, LEASE)
            else:
                request = recover(request, site, now, LEASE)
        except (IllegalTransition, LeaseHeld, NotDue, ValueError):
            assert request is before
            continue
        assert request.version == before.version + 1
        assert request.state is before.state or (before.state, request.state) in {
            (state, target) for (state, _), target in TRANSITIONS.items()}
        assert before.state in ACTIVE_STATES
        assert replace(request, state=original.state, version=0, site="madrid",
                       lease_expires_at=original.lease_expires_at, attempts=0, history=(),
                       earliest_at=original.earliest_at) == original
        assert request.attempts <= POLICY.max_attempts
        assert len(request.history) >= len(before.history)


def test_the_readme_table_is_the_transition_table() -> None:
    readme = (Path(__file__).resolve().parents[2] / "callbacks" / "README.md").read_text()
    rows = set()
    for line in readme.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] in set(CallbackState):
            rows.add((CallbackState(cells[0]), Trigger(cells[1]), CallbackState(cells[2])))
    assert rows == {(state, trigger, target) for (state, trigger), target in TRANSITIONS.items()}
