"""The call-leg state table, checked pair by pair against the grid below.

The grid is written independently of ``pbx.calls.call_leg.TRANSITIONS``: one row per state,
one column per event, the new state or ``-`` for an event that state must refuse.
Every (state, event) pair is checked, legal and illegal alike.
"""

import pytest

from pbx.calls.call_leg import TRANSITIONS, IllegalLegTransition, LegEvent, LegLife, LegState

E = LegEvent
COLUMNS = (E.PROVISIONAL, E.ANSWER_SENT, E.ACK_RECEIVED, E.ANSWER_RECEIVED, E.REJECTED,
           E.CANCELLED, E.UNWANTED_ANSWER, E.BYE_RECEIVED, E.HUNG_UP, E.CALL_ENDED)
# state       1xx      2xx-sent  ACK        2xx-recv   rejected cancelled unwanted BYE-recv hung-up  call-ended
GRID = """
trying      ringing  answered  -          confirmed  failed   failed    ended    -        -        ended
ringing     -        answered  -          confirmed  failed   failed    ended    -        -        ended
answered    -        -         confirmed  -          -        -         -        ended    ended    ended
confirmed   -        -         -          -          -        -         -        ended    ended    ended
failed      -        -         -          -          -        -         ended    -        -        ended
ended       -        -         -          -          -        -         ended    -        -        -
"""


def expected() -> dict[tuple[LegState, LegEvent], LegState | None]:
    cells: dict[tuple[LegState, LegEvent], LegState | None] = {}
    for line in GRID.strip().splitlines():
        state, *targets = line.split()
        assert len(targets) == len(COLUMNS), line
        for event, target in zip(COLUMNS, targets, strict=True):
            cells[(LegState(state), event)] = None if target == "-" else LegState(target)
    return cells


EXPECTED = expected()


def test_the_grid_covers_every_state_and_event():
    assert {state for state, _ in EXPECTED} == set(LegState)
    assert set(COLUMNS) == set(LegEvent)


@pytest.mark.parametrize(("state", "event"), sorted(EXPECTED, key=str))
def test_each_pair_moves_as_the_grid_says(state: LegState, event: LegEvent):
    life = LegLife(state)
    target = EXPECTED[(state, event)]
    if target is None:
        with pytest.raises(IllegalLegTransition) as refused:
            life.move(event)
        assert (refused.value.state, refused.value.event) == (state, event)
        assert state.value in str(refused.value) and event.name in str(refused.value)
        assert life.state is state, "a refused event must leave the leg where it was"
    else:
        assert life.move(event) is target
        assert life.state is target


def test_the_table_holds_exactly_the_grid_legal_pairs():
    legal = {pair: target for pair, target in EXPECTED.items() if target is not None}
    assert TRANSITIONS == legal


def test_over_states_are_left_only_for_ended():
    for (state, _), target in TRANSITIONS.items():
        if state.over:
            assert target is LegState.ENDED


def test_a_leg_is_born_trying_and_a_call_walks_the_table():
    caller, agent = LegLife(), LegLife()
    assert caller.state is LegState.TRYING
    caller.move(E.PROVISIONAL)
    agent.move(E.PROVISIONAL)
    agent.move(E.ANSWER_RECEIVED)
    caller.move(E.ANSWER_SENT)
    caller.move(E.ACK_RECEIVED)
    agent.move(E.BYE_RECEIVED)
    caller.move(E.CALL_ENDED)
    assert (caller.state, agent.state) == (LegState.ENDED, LegState.ENDED)


def test_state_predicates():
    assert {s for s in LegState if s.answered} == {LegState.ANSWERED, LegState.CONFIRMED}
    assert {s for s in LegState if s.ringing} == {LegState.TRYING, LegState.RINGING}
    assert {s for s in LegState if s.over} == {LegState.FAILED, LegState.ENDED}
