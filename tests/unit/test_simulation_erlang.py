"""Erlang C and Erlang A against values known in closed form."""

from __future__ import annotations

import math

import pytest

from simulation.erlang import ErlangC, erlang_a, erlang_b, erlang_c, erlang_c_agents


def erlang_c_by_sums(agents: int, load: float) -> float:
    """The textbook formula, summed term by term."""
    top = load**agents / math.factorial(agents) * agents / (agents - load)
    return top / (sum(load**k / math.factorial(k) for k in range(agents)) + top)


def test_erlang_b_and_c_small_cases():
    assert erlang_b(1, 1.0) == pytest.approx(0.5)
    assert erlang_b(2, 1.0) == pytest.approx(0.2)  # (1/2) / (1 + 1 + 1/2)
    assert erlang_c(3, 2.0) == pytest.approx(4 / 9)
    assert erlang_c(5, 5.0) == 1.0  # overloaded: everyone waits


@pytest.mark.parametrize(("agents", "load"), [(2, 1.5), (10, 8.0), (25, 20.0), (50, 47.5)])
def test_erlang_c_matches_the_summed_formula(agents, load):
    assert erlang_c(agents, load) == pytest.approx(erlang_c_by_sums(agents, load), rel=1e-9)


def test_one_agent_is_the_m_m_1_queue():
    rho, handle, target = 0.7, 200.0, 30.0
    model = ErlangC(1, rho, handle, target)
    assert model.wait_probability == pytest.approx(rho)
    assert model.average_speed_of_answer == pytest.approx(rho * handle / (1 - rho))
    assert model.service_level == pytest.approx(1 - rho * math.exp(-(1 - rho) * target / handle))


def test_overloaded_erlang_c_has_no_service():
    model = ErlangC(5, 6.0, 180.0, 20.0)
    assert not model.stable
    assert model.service_level == 0.0
    assert model.average_speed_of_answer == math.inf


def test_erlang_a_with_patience_equal_to_handle_is_a_poisson_count():
    """With the abandon rate equal to the service rate every caller in the system leaves at
    rate mu: the number in the system is Poisson(load), so the figures have closed forms."""
    agents, rate, handle = 8, 9 / 120, 120.0
    load = rate * handle
    poisson = [math.exp(-load) * load**k / math.factorial(k) for k in range(120)]
    waiting = sum(poisson[agents:])
    in_line = sum((k - agents) * p for k, p in enumerate(poisson) if k > agents)
    model = erlang_a(agents, rate, handle, handle)
    assert model.wait_probability == pytest.approx(waiting, rel=1e-9)
    assert model.mean_queue_length == pytest.approx(in_line, rel=1e-9)
    assert model.abandon_probability == pytest.approx(in_line / handle / rate, rel=1e-9)


def test_erlang_a_tends_to_erlang_c_as_patience_grows():
    model = erlang_a(10, 8 / 120, 120.0, 1e9)
    assert model.wait_probability == pytest.approx(erlang_c(10, 8.0), rel=1e-6)
    assert model.abandon_probability < 1e-6


def test_erlang_c_staffing_is_the_fewest_agents_meeting_the_target():
    rate, handle = 100 / 900, 180.0  # 100 calls a quarter hour, 3 minutes each: 20 Erlangs
    agents = erlang_c_agents(rate, handle, 20.0, 0.8)
    assert ErlangC(agents, rate * handle, handle, 20.0).service_level >= 0.8
    assert ErlangC(agents - 1, rate * handle, handle, 20.0).service_level < 0.8
    assert erlang_c_agents(0.0, handle, 20.0, 0.8) == 0


def test_erlang_a_service_level_limits():
    """With patience out of reach it is Erlang C's; over an endless threshold every caller
    who does not abandon is answered."""
    patient = erlang_a(10, 8 / 120, 120.0, 1e7)
    assert patient.service_level(20) == pytest.approx(ErlangC(10, 8.0, 120.0, 20).service_level, abs=1e-5)
    model = erlang_a(10, 10 / 120, 120.0, 180.0)
    answered, abandoned = model.within(1e5)
    assert abandoned == pytest.approx(model.abandon_probability, rel=1e-6)
    assert answered == pytest.approx(1 - model.abandon_probability, rel=1e-6)
    short, short_abandoned = model.within(20)
    assert 1 - model.wait_probability < short < answered and 0 < short_abandoned < abandoned
