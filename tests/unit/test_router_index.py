"""The free-agent index against a brute-force scan: after random adds, removals, pool
(re)definitions, walks (which build an attribute's heaps on first use) and slices of
compaction and flushes of the entries freshly added agents owe, every walk visits exactly the free agents a scan finds, in the scan's order,
and each agent's first ring met per queue is the scan's."""

from __future__ import annotations

import random

import pytest

from router import AgentProfile, QueueConfig, Router, RoutingRequest
from router.availability import AttributeKind, AvailableAgents, OrderKind, PoolSpec

SKILLS = ["a", "b", "c", "d"]
LANGUAGES = ["en", "es", "eu"]


def walked(index: AvailableAgents, kind: AttributeKind, name: str, level: int,
           order: OrderKind, best_level_first: bool) -> list[str]:
    seen: list[str] = []

    def refuse_all(extension: str) -> str:
        seen.append(extension)
        return "counted"

    index.walk(kind, name, level, order, refuse_all, best_level_first=best_level_first)
    return seen


def pool_walked(index: AvailableAgents, queue: str, ring: int) -> list[str]:
    seen: list[str] = []

    def refuse_all(extension: str) -> str:
        seen.append(extension)
        return "counted"

    index.walk_pool(queue, ring, refuse_all)
    return seen


def order_key(agent: dict, order: OrderKind) -> tuple[float, float]:
    if order is OrderKind.IDLE:
        return (agent["idle"], 0.0)
    if order is OrderKind.LOAD:
        return (agent["load"], agent["idle"])
    return (agent["rotation"], agent["idle"])


def attribute_level(agent: dict, kind: AttributeKind, name: str) -> int:
    if kind is AttributeKind.SKILL:
        return agent["skills"].get(name, 0)
    if kind is AttributeKind.LANGUAGE:
        return 1 if name in agent["languages"] else 0
    return 1


@pytest.mark.parametrize("seed", range(12))
def test_walks_agree_with_a_scan_of_the_free_agents(seed: int) -> None:
    rng = random.Random(seed)
    index = AvailableAgents()
    free: dict[str, dict] = {}
    queues: dict[str, tuple[PoolSpec, ...]] = {}
    serves: dict[str, set[str]] = {}  # queue -> agents serving it (free or not)
    agents = [f"x{n:02d}" for n in range(40)]
    profiles: dict[str, tuple[dict[str, int], list[str], list[str]]] = {}
    for step in range(400):
        action = rng.random()
        if action < 0.45:
            extension = rng.choice(agents)
            if extension in profiles and rng.random() < 0.5:
                # The same profile and queues objects again, as the router passes them for
                # an agent back from a call: what the index worked out for them is reused.
                skills, languages, member_of = profiles[extension]
            else:
                skills = {s: rng.randint(1, 10) for s in rng.sample(SKILLS, rng.randint(1, 3))}
                languages = rng.sample(LANGUAGES, rng.randint(1, 2))
                member_of = [q for q in queues if rng.random() < 0.7]
                profiles[extension] = (skills, languages, member_of)
            agent = {"skills": skills, "languages": languages,
                     "idle": float(rng.randint(0, 30)), "load": float(rng.randint(0, 5)),
                     "rotation": float(rng.randint(0, 9))}
            for queue in queues:
                (serves[queue].add if queue in member_of else serves[queue].discard)(extension)
            index.add(extension, skills, languages, agent["idle"], agent["load"],
                      agent["rotation"], member_of)
            free[extension] = agent | {"queues": set(member_of)}
        elif action < 0.7:
            extension = rng.choice(agents)
            index.remove(extension)
            free.pop(extension, None)
        elif action < 0.75:
            name = f"q{rng.randint(0, 3)}"
            rings = [{s: rng.randint(1, 6) for s in rng.sample(SKILLS, rng.randint(1, 2))}
                     for _ in range(rng.randint(1, 2))]
            order = rng.choice(list(OrderKind))
            level_skill = rng.choice(sorted(rings[0])) if rng.random() < 0.3 else None
            specs = tuple(PoolSpec(ring, order, level_skill) for ring in rings)
            members = {a for a in agents if rng.random() < 0.6}
            queues[name], serves[name] = specs, members
            index.set_pools(name, specs, members)
            for extension, agent in free.items():
                (agent["queues"].add if extension in members else agent["queues"].discard)(name)
        elif action < 0.78:
            index.compact(rng.randint(1, 50))
        elif action < 0.8:
            index.flush_fresh()  # as a dispatch ends: agents added since are pushed
        else:
            kind = rng.choice(list(AttributeKind))
            name = rng.choice(SKILLS if kind is AttributeKind.SKILL else LANGUAGES)
            level = rng.randint(1, 6) if kind is AttributeKind.SKILL else 1
            order = rng.choice(list(OrderKind))
            best_first = kind is AttributeKind.SKILL and rng.random() < 0.5
            holders = [e for e, a in free.items() if attribute_level(a, kind, name) >= level]
            if best_first:
                holders.sort(key=lambda e: (-attribute_level(free[e], kind, name),
                                            order_key(free[e], order), e))
            else:
                holders.sort(key=lambda e: (order_key(free[e], order), e))
            assert walked(index, kind, name, level, order, best_first) == holders, step
            assert index.count(kind, name, level) == len(holders)
        for queue, specs in queues.items():
            for ring, spec in enumerate(specs):
                members = [e for e, a in free.items() if queue in a["queues"]
                           and all(a["skills"].get(s, 0) >= m for s, m in spec.requirement.items())]
                if spec.level_skill is not None:
                    members.sort(key=lambda e: (-free[e]["skills"].get(spec.level_skill, 0),
                                                free[e]["idle"], e))
                else:
                    members.sort(key=lambda e: (order_key(free[e], spec.order), e))
                assert index.pool_count(queue, ring) == len(members)
                assert pool_walked(index, queue, ring) == members, (step, queue, ring)
        for extension, agent in free.items():
            first_rings = {}
            for queue, specs in queues.items():
                met = [ring for ring, spec in enumerate(specs) if queue in agent["queues"] and all(
                    agent["skills"].get(s, 0) >= m for s, m in spec.requirement.items())]
                if met:
                    first_rings[queue] = met[0]
            assert index.first_rings(extension) == first_rings, (step, extension)
    assert len(index) == len(free)


def test_an_agent_back_from_a_call_joins_the_pools_of_queues_changed_meanwhile() -> None:
    router = Router(lambda: 0.0)
    router.upsert_queue(QueueConfig("first", skills={"a": 1}, wrap_up_seconds=0))
    router.upsert_agent(AgentProfile("x", "X", "mad", {"a": 5, "b": 3}, frozenset({"en"})))
    router.login("x")
    router.enqueue(RoutingRequest("c1", "first"))
    (reservation,) = router.dispatch()
    router.answered(reservation.reservation_id)
    # While x talks: a new queue it serves, and the first one asking for more than it has.
    router.upsert_queue(QueueConfig("second", skills={"b": 2}, wrap_up_seconds=0))
    router.upsert_queue(QueueConfig("first", skills={"a": 6}, wrap_up_seconds=0))
    router.call_ended("c1")
    assert router.dispatch() == []
    router.enqueue(RoutingRequest("c2", "first"))
    assert router.dispatch() == []
    router.enqueue(RoutingRequest("c3", "second"))
    (reservation,) = router.dispatch()
    assert (reservation.call_id, reservation.agent) == ("c3", "x")
