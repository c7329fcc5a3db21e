"""Agent selection: strategies, skills and expansion, language, sites, preference, explanations."""

from __future__ import annotations

from collections import Counter

import pytest

from router import (
    AgentProfile,
    AgentState,
    QueueConfig,
    Router,
    RoutingRequest,
    SkillExpansion,
    Strategy,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def router(clock: Clock) -> Router:
    return Router(clock)


def add_agent(
    router: Router,
    extension: str,
    skills: dict[str, int],
    languages: tuple[str, ...] = ("en",),
    site: str = "mad",
    login: bool = True,
) -> None:
    router.upsert_agent(
        AgentProfile(extension, f"Agent {extension}", site, skills, frozenset(languages))
    )
    if login:
        router.login(extension)


def serve(router: Router, clock: Clock, call_id: str, queue: str, **call: object) -> str | None:
    """Enqueue a call, dispatch, and connect+finish it at once; returns the agent chosen."""
    router.enqueue(RoutingRequest(call_id, queue, **call))  # type: ignore[arg-type]
    reservations = router.dispatch()
    if not reservations:
        return None
    (reservation,) = reservations
    router.answered(reservation.reservation_id)
    clock.now += 60
    router.call_ended(call_id)
    return reservation.agent


def test_longest_idle_picks_the_agent_free_the_longest(router: Router, clock: Clock) -> None:
    router.upsert_queue(QueueConfig("sales", skills={"sales": 1}, wrap_up_seconds=0))
    for extension in ("1", "2", "3"):
        add_agent(router, extension, {"sales": 5})
        clock.now += 10
    router.enqueue(RoutingRequest("c1", "sales"))
    assert [r.agent for r in router.dispatch()] == ["1"]


def test_longest_idle_is_fair_over_a_long_run(router: Router, clock: Clock) -> None:
    router.upsert_queue(QueueConfig("sales", skills={"sales": 1}, wrap_up_seconds=0))
    for extension in ("1", "2", "3", "4"):
        add_agent(router, extension, {"sales": 5})
    served = Counter(serve(router, clock, f"c{n}", "sales") for n in range(400))
    assert served == {"1": 100, "2": 100, "3": 100, "4": 100}


def test_round_robin_rotates_through_every_agent(router: Router, clock: Clock) -> None:
    router.upsert_queue(
        QueueConfig("sales", skills={"sales": 1}, strategy=Strategy.ROUND_ROBIN, wrap_up_seconds=0)
    )
    for extension in ("1", "2", "3"):
        add_agent(router, extension, {"sales": 5})
    order = [serve(router, clock, f"c{n}", "sales") for n in range(300)]
    assert Counter(order) == {"1": 100, "2": 100, "3": 100}
    # Strict rotation: every window of three consecutive calls reaches three different agents.
    assert all(len(set(order[i : i + 3])) == 3 for i in range(0, 297))


def test_least_occupancy_prefers_the_agent_with_less_recent_talk(
    router: Router, clock: Clock
) -> None:
    router.upsert_queue(
        QueueConfig(
            "sales", skills={"sales": 1}, strategy=Strategy.LEAST_OCCUPANCY, wrap_up_seconds=0
        )
    )
    add_agent(router, "busy", {"sales": 5})
    add_agent(router, "light", {"sales": 5}, login=False)
    # "busy" takes a long call; "light" logs in afterwards, so it is the LONGEST-idle loser
    # but has no load at all.
    router.enqueue(RoutingRequest("c1", "sales"))
    (reservation,) = router.dispatch()
    router.answered(reservation.reservation_id)
    clock.now += 600
    router.call_ended("c1")
    clock.now += 1
    router.login("light")
    clock.now += 1
    router.enqueue(RoutingRequest("c2", "sales"))
    assert [r.agent for r in router.dispatch()] == ["light"]
    assert router.agent("busy").occupancy == pytest.approx(600 / 602)


def test_skill_weighted_prefers_best_proficiency_then_longest_idle(
    router: Router, clock: Clock
) -> None:
    router.upsert_queue(
        QueueConfig("tech", skills={"network": 3, "billing": 1}, strategy=Strategy.SKILL_WEIGHTED)
    )
    add_agent(router, "a", {"network": 4, "billing": 9})
    clock.now += 1
    add_agent(router, "b", {"network": 8, "billing": 1})
    clock.now += 1
    add_agent(router, "c", {"network": 8, "billing": 2})
    add_agent(router, "d", {"network": 10})  # lacks billing entirely
    router.enqueue(RoutingRequest("c1", "tech"))
    (reservation,) = router.dispatch()
    assert reservation.agent == "b"  # network 8, idle longer than "c"; "d" is not qualified
    decision = reservation.decision
    assert decision.policy == "skill_weighted"
    assert decision.eligible[0].score[0] == 8
    # The queue's pool of free agents holds only those meeting its ring: "d" is not looked at.
    assert "d" not in {c.extension for c in decision.eligible}
    assert "d" not in {r.extension for r in decision.rejected}


def test_minimum_proficiency_is_honoured_until_expansion(router: Router, clock: Clock) -> None:
    router.upsert_queue(
        QueueConfig(
            "billing",
            skills={"billing": 5},
            expansion=(SkillExpansion(30, {"billing": 3}), SkillExpansion(60, {"general": 5})),
        )
    )
    add_agent(router, "junior", {"billing": 3})
    add_agent(router, "generalist", {"general": 7})
    router.enqueue(RoutingRequest("c1", "billing"))
    assert router.dispatch() == []
    clock.now += 29.9
    assert router.tick() == []
    clock.now += 0.1
    (reservation,) = router.tick()
    assert reservation.agent == "junior"
    assert reservation.decision.ring == 1
    router.answered(reservation.reservation_id)
    # The next caller only reaches the generalist once the outer ring opens.
    router.enqueue(RoutingRequest("c2", "billing"))
    assert router.dispatch() == []
    clock.now += 30
    assert router.tick() == []
    clock.now += 30
    (reservation,) = router.tick()
    assert (reservation.agent, reservation.decision.ring) == ("generalist", 2)


def test_inner_ring_agent_is_preferred_over_expanded_ring(router: Router, clock: Clock) -> None:
    router.upsert_queue(
        QueueConfig(
            "billing", skills={"billing": 5}, expansion=(SkillExpansion(0, {"billing": 1}),)
        )
    )
    add_agent(router, "junior", {"billing": 1})
    clock.now += 100
    add_agent(router, "senior", {"billing": 7})
    router.enqueue(RoutingRequest("c1", "billing"))
    assert [r.agent for r in router.dispatch()] == ["senior"]


def test_call_language_and_extra_skills_are_required(router: Router) -> None:
    router.upsert_queue(QueueConfig("support", skills={"support": 1}, language="es"))
    add_agent(router, "en", {"support": 5, "premium": 5}, languages=("en",))
    add_agent(router, "es", {"support": 5}, languages=("es",))
    add_agent(router, "es-premium", {"support": 5, "premium": 4}, languages=("es", "en"))
    router.enqueue(RoutingRequest("c1", "support", skills={"premium": 4}))
    (reservation,) = router.dispatch()
    assert reservation.agent == "es-premium"
    router.enqueue(RoutingRequest("c2", "support", language="en"))  # the call's language overrides
    assert [r.agent for r in router.dispatch()] == ["en"]


def test_unhealthy_site_is_never_chosen(router: Router) -> None:
    router.upsert_queue(QueueConfig("sales", skills={"sales": 1}))
    add_agent(router, "bcn1", {"sales": 9}, site="bcn")
    router.set_site_health("bcn", False)
    router.enqueue(RoutingRequest("c1", "sales"))
    assert router.dispatch() == []
    reasons = {r.extension: r.reason for r in router.explain("c1")[-1].rejected}
    assert reasons == {"bcn1": "site unhealthy"}
    router.set_site_health("bcn", True)
    assert [r.agent for r in router.dispatch()] == ["bcn1"]


def test_unreachable_agent_goes_offline_and_is_not_chosen(router: Router) -> None:
    router.upsert_queue(QueueConfig("sales", skills={"sales": 1}))
    add_agent(router, "1", {"sales": 9})
    router.agent_reachable("1", False)
    assert router.agent("1").state is AgentState.OFFLINE
    router.enqueue(RoutingRequest("c1", "sales"))
    assert router.dispatch() == []


def test_freed_agent_serves_the_highest_ranked_call_across_its_queues(
    router: Router, clock: Clock
) -> None:
    router.upsert_queue(QueueConfig("sales", skills={"sales": 1}, sla_seconds=20))
    router.upsert_queue(QueueConfig("billing", skills={"billing": 1}, sla_seconds=60))
    add_agent(router, "1", {"sales": 5, "billing": 5}, login=False)
    router.enqueue(RoutingRequest("free-sales", "sales", priority=1))
    router.enqueue(RoutingRequest("paid-billing", "billing", priority=2))
    clock.now += 30  # scores now: free sales 1 + 30/20 = 2.5, paid billing 2 + 30/60 = 2.5
    router.enqueue(RoutingRequest("vip-billing", "billing", priority=3))
    router.dispatch()
    router.login("1")
    (reservation,) = router.dispatch()
    assert reservation.call_id == "vip-billing"  # 3.0 beats 2.5 and 2.5
    assert reservation.decision.trigger == "agent"
    competing = {c.call_id: c.score for c in reservation.decision.competing_calls}
    assert competing == pytest.approx({"free-sales": 2.5, "paid-billing": 2.5, "vip-billing": 3.0})


def test_preferred_agent_is_waited_for_then_others_take_over(router: Router, clock: Clock) -> None:
    router.upsert_queue(
        QueueConfig(
            "sales", skills={"sales": 1}, preferred_agent_wait_seconds=20, wrap_up_seconds=0
        )
    )
    add_agent(router, "mine", {"sales": 5})
    add_agent(router, "other", {"sales": 5})
    router.enqueue(RoutingRequest("busy-maker", "sales", preferred_agent="mine"))
    (first,) = router.dispatch()
    assert (first.agent, first.decision.policy) == ("mine", "preferred_agent")
    router.answered(first.reservation_id)
    router.enqueue(RoutingRequest("c1", "sales", preferred_agent="mine"))
    assert router.dispatch() == []  # held for "mine" although "other" is free
    assert router.explain("c1")[-1].note.startswith("held for preferred agent mine")
    clock.now += 5
    router.call_ended("busy-maker")
    (second,) = router.dispatch()
    assert (second.call_id, second.agent) == ("c1", "mine")
    router.answered(second.reservation_id)
    router.enqueue(RoutingRequest("c2", "sales", preferred_agent="mine"))
    assert router.dispatch() == []
    clock.now += 20
    (third,) = router.tick()
    assert (third.call_id, third.agent) == ("c2", "other")


def test_last_agent_of_a_caller_is_sticky_when_the_queue_asks(router: Router, clock: Clock) -> None:
    router.upsert_queue(
        QueueConfig(
            "sales", skills={"sales": 1}, preferred_agent_wait_seconds=10, wrap_up_seconds=0
        )
    )
    add_agent(router, "1", {"sales": 5})
    clock.now += 1
    add_agent(router, "2", {"sales": 5})
    assert serve(router, clock, "c1", "sales", caller="+34600") == "1"
    # By longest idle "2" would be next; the caller's last agent wins instead.
    assert serve(router, clock, "c2", "sales", caller="+34600") == "1"
    assert router.agent("1").last_caller == "+34600"


def test_explanation_lists_rejected_agents_with_reasons(router: Router) -> None:
    router.upsert_queue(QueueConfig("billing", skills={"billing": 5}, language="es"))
    add_agent(router, "low", {"billing": 3}, languages=("es",))
    add_agent(router, "english", {"billing": 9}, languages=("en",))
    add_agent(router, "away", {"billing": 9}, languages=("es",))
    router.start_break("away", "lunch")
    add_agent(router, "remote", {"billing": 9}, languages=("es",), site="bcn")
    router.set_site_health("bcn", False)
    add_agent(router, "gone", {"billing": 9}, languages=("es",), login=False)
    router.enqueue(RoutingRequest("c1", "billing"))
    assert router.dispatch() == []
    (decision,) = router.explain("c1")
    assert decision.chosen is None
    reasons = {r.extension: r.reason for r in decision.rejected}
    assert reasons == {
        "low": "skill billing 3 < 5",
        "english": "language es",
        "away": "break (lunch)",
        "remote": "site unhealthy",
        "gone": "offline",
    }
    assert decision.to_dict()["rejected"]  # JSON-ready


def test_explanation_of_a_routed_call_names_the_agents_passed_over(router: Router) -> None:
    router.upsert_queue(QueueConfig("billing", skills={"billing": 1, "fraud": 1}))
    add_agent(router, "no-fraud", {"billing": 5})  # idle longest, walked first
    add_agent(router, "ok", {"billing": 5, "fraud": 2})
    add_agent(router, "ok2", {"billing": 5, "fraud": 2})
    router.enqueue(RoutingRequest("c1", "billing"))
    (reservation,) = router.dispatch()
    decision = router.explain("c1")[-1]
    assert decision is reservation.decision
    assert decision.chosen == "ok"
    assert [c.extension for c in decision.eligible] == ["ok", "ok2"]


@pytest.mark.parametrize("strategy", [Strategy.LONGEST_IDLE, Strategy.SKILL_WEIGHTED])
@pytest.mark.parametrize("extra", [{}, {"c": 2}])
def test_a_two_skill_queue_picks_as_its_strategy_orders_every_qualified_free_agent(
    router: Router, clock: Clock, strategy: Strategy, extra: dict[str, int]
) -> None:
    # Without extra skills the call walks its queue's pool of free agents meeting the ring,
    # with them the index of one skill: both must give what the strategy's order gives.
    import random

    rng = random.Random(f"{strategy}{extra}")
    router.upsert_queue(QueueConfig("pair", skills={"a": 3, "b": 2}, strategy=strategy))
    idle_since: dict[str, float] = {}
    skills_of: dict[str, dict[str, int]] = {}
    for n in range(60):
        extension = f"x{n:02d}"
        skills = {s: rng.randint(1, 10) for s in rng.sample(["a", "b", "c", "d"], 3)}
        skills_of[extension] = skills
        add_agent(router, extension, skills, ("en", "es") if n % 3 else ("en",))
        idle_since[extension] = clock.now
        clock.now += rng.choice([0.0, 1.0])  # some agents idle since the same moment
    requirement = {"a": 3, "b": 2, **extra}

    def strategy_key(extension: str) -> tuple[float, float, str]:
        level = skills_of[extension]["a"] if strategy is Strategy.SKILL_WEIGHTED else 0
        return (-level, idle_since[extension], extension)

    for n in range(12):
        language = "es" if n % 2 else None
        qualified = [
            extension
            for extension, skills in skills_of.items()
            if all(skills.get(s, 0) >= m for s, m in requirement.items())
            and router.agent(extension).state is AgentState.AVAILABLE
            and (language is None or "es" in router.agent(extension).profile.languages)
        ]
        router.enqueue(RoutingRequest(f"call{n}", "pair", skills=extra, language=language))
        reservations = router.dispatch()
        if not qualified:
            assert reservations == []
            router.abandon(f"call{n}")
            continue
        assert [r.agent for r in reservations] == [min(qualified, key=strategy_key)]
        router.answered(reservations[0].reservation_id)
