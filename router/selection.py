"""Selection: which agent a call gets, and which call a freed agent serves first.

(Somewhat over 500 lines: both choices and the explanation each decision carries read
the same indexes and belong together.)

Pure reads of the agent and call books; the router carries out the choice (reserves
the agent, or holds the call for its preferred agent) and logs the decision.

A call picks its agent by its queue's strategy through the free-agent index
(``router.availability``): for each active ring, the ring's pool of free agents, or the
most selective attribute of the requirement, drives one ordered walk. A freed agent
finds its call among the heads of the classes of the queues it serves
(``router.waiting_line``).
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from router.agent_book import AgentBook, BookedAgent
from router.agent_state import HANDLING_STATES
from router.availability import AttributeKind, OrderKind, PoolSpec
from router.call_book import BookedCall, BookedQueue, CallBook
from router.calls import CallStatus
from router.config import QueueConfig, Strategy
from router.explanations import (
    CallOrder,
    CandidateScore,
    CompetingCall,
    Decision,
    LazyDecision,
    Preference,
    Rejection,
)
from router.occupancy import NO_LOAD
from router.waiting_line import aging_score

PREFERENCE_LABEL = {"customer": "preferred agent", "last_agent": "last agent"}

ORDER_OF_STRATEGY = {
    Strategy.LONGEST_IDLE: OrderKind.IDLE,
    Strategy.LEAST_OCCUPANCY: OrderKind.LOAD,
    Strategy.ROUND_ROBIN: OrderKind.ROTATION,
    Strategy.SKILL_WEIGHTED: OrderKind.IDLE,
}

Driver = tuple[AttributeKind, str, int]
EVERYONE_DRIVER: Driver = (AttributeKind.EVERYONE, "", 1)

# Members compared on every decision, read off their enum once: in Python 3.11 the enum
# metaclass's ``__getattr__`` hook makes each ``Strategy.ROUND_ROBIN`` cost ~0.1-0.5 µs.
LEAST_OCCUPANCY = Strategy.LEAST_OCCUPANCY
ROUND_ROBIN = Strategy.ROUND_ROBIN
SKILL_WEIGHTED = Strategy.SKILL_WEIGHTED
SKILL = AttributeKind.SKILL
LANGUAGE = AttributeKind.LANGUAGE
EVERYONE = AttributeKind.EVERYONE
WAITING = CallStatus.WAITING
HELD = CallStatus.HELD


def pool_specs(config: QueueConfig) -> list[PoolSpec]:
    """The free-agent pools of a queue, one per ring, walked in its strategy's order (for
    skill-weighted rings: the primary skill's level first, as ``Selector._driver``)."""
    order = ORDER_OF_STRATEGY[config.strategy]
    specs = []
    for ring in config.rings:
        level_skill = None
        if config.strategy is Strategy.SKILL_WEIGHTED and ring:
            level_skill = min(ring, key=lambda skill: (-ring[skill], skill))
        specs.append(PoolSpec(ring, order, level_skill))
    return specs


def first_unmet(skills: Mapping[str, int], requirement: Mapping[str, int]) -> str | None:
    for skill, minimum in requirement.items():
        level = skills.get(skill, 0)
        if level < minimum:
            return f"skill {skill} {level} < {minimum}" if level else f"skill {skill} missing"
    return None


def merged(ring: Mapping[str, int], extra: Mapping[str, int]) -> dict[str, int]:
    requirement = dict(ring)
    for skill, minimum in extra.items():
        requirement[skill] = max(requirement.get(skill, 0), minimum)
    return requirement


def qualification(
    agent: BookedAgent, waiting: BookedCall, config: QueueConfig
) -> tuple[int | None, str | None]:
    """(ring the agent qualifies in, None) or (None, why not) for this call, ignoring state."""
    excluded = waiting.excluded.get(agent.profile.extension)
    if excluded is not None:
        return None, excluded
    profile = agent.profile
    if waiting.language is not None and waiting.language not in profile.languages:
        return None, f"language {waiting.language}"
    problem = first_unmet(profile.skills, waiting.call.skills)
    if problem is not None:
        return None, problem
    first_problem: str | None = None
    for index, ring in enumerate(config.rings[: waiting.rings_active]):
        problem = first_unmet(profile.skills, ring)
        if problem is None:
            return index, None
        if first_problem is None:
            first_problem = problem
    if waiting.rings_active > 1:
        first_problem = f"{first_problem} (and no expansion ring matches)"
    return None, first_problem


@dataclass(slots=True)
class Choice:
    """What selection decided for a call: reserve ``agent``, hold the call for
    ``held_for`` until ``hold_until``, or neither (nobody qualifies now). Handed straight
    to the router, never kept: not frozen, which makes one cheaper to build."""

    decision: LazyDecision
    agent: BookedAgent | None = None
    held_for: str | None = None
    hold_until: float = 0.0


class Selector:
    def __init__(
        self,
        agents: AgentBook,
        calls: CallBook,
        *,
        occupancy_window_seconds: float,
        explain_sample: int,
        runners_up: int,
        callers_remembered: int,
        to_wall: Callable[[float], float],
    ) -> None:
        self._to_wall = to_wall  # decisions are records: they carry wall-clock times
        self._agents = agents
        self._calls = calls
        self._occupancy_window = occupancy_window_seconds
        self._explain_sample = explain_sample
        self._runners_up = runners_up
        self._callers_remembered = callers_remembered
        self._last_agent_of_caller: OrderedDict[str, str] = OrderedDict()

    def qualification(
        self, agent: BookedAgent, waiting: BookedCall
    ) -> tuple[int | None, str | None]:
        return qualification(agent, waiting, self._calls.queue_of(waiting).config)

    def remember_caller(self, caller: str, extension: str) -> None:
        """``extension`` served ``caller``: the last agent a later call may prefer."""
        memory = self._last_agent_of_caller
        memory[caller] = extension
        memory.move_to_end(caller)
        while len(memory) > self._callers_remembered:
            memory.popitem(last=False)

    # ------------------------------------------------------------------ a call picks its agent

    def choose_agent(
        self,
        waiting: BookedCall,
        trigger: str,
        competing: tuple[CompetingCall, ...],
        freed_agent: BookedAgent | None,
        now: float,
    ) -> Choice:
        queue = self._calls.queue_of(waiting)
        config = queue.config
        preference: Preference | None = None
        preferred = self._preferred_agent_of(waiting, config)
        if preferred is not None:
            choice, preference = self._try_preferred(
                waiting, queue, preferred[0], preferred[1], trigger, competing, now
            )
            if choice is not None:
                return choice
        # The call's order as raw values (its score is computed when the decision is read).
        call_order = (config, waiting.call.priority, now - waiting.enqueued_at)
        earlier = tuple(waiting.earlier_offers) if waiting.earlier_offers else ()

        strategy = config.strategy
        extra = waiting.call.skills
        language = waiting.language
        rejected: list[tuple[str, str]] = []  # (agent, why), made records when read
        skipped_total = 0
        first_requirement: Mapping[str, int] | None = None
        first_driver: Driver | None = None  # the first ring's, when it was found
        available = self._agents.available
        for ring_index, ring in enumerate(config.rings[: waiting.rings_active]):
            requirement = merged(ring, extra) if extra else ring
            if first_requirement is None:
                first_requirement = requirement
            # The ring's pool holds only agents meeting the ring, in the queue's order: the
            # walk then skips only agents refused for language or an earlier refusal. A call
            # needing more skills than the ring, or a rarer language, walks an attribute.
            pooled = None if extra else available.pool_count(config.name, ring_index)
            if pooled is not None and language is None:
                # No attribute is rarer than the pool (its agents hold every skill of the
                # ring), so the pool is the walk; only earlier refusals can skip an agent.
                if pooled == 0:
                    continue
                driver = self._primary_driver(requirement, strategy)
                result = available.walk_pool(
                    config.name,
                    ring_index,
                    waiting.excluded.get if waiting.excluded else None,
                    runners_up=self._runners_up,
                )
            else:
                driver, count = self._driver(requirement, language, strategy)
                if ring_index == 0:
                    first_driver = driver
                if count == 0:
                    continue
                reject = self._rejecter(waiting, requirement, language)
                if pooled is not None and pooled <= count:
                    if pooled == 0:
                        continue
                    result = available.walk_pool(
                        config.name, ring_index, reject, runners_up=self._runners_up
                    )
                else:
                    result = available.walk(
                        driver[0],
                        driver[1],
                        driver[2],
                        ORDER_OF_STRATEGY[strategy],
                        reject,
                        runners_up=self._runners_up,
                        best_level_first=strategy is SKILL_WEIGHTED and driver[0] is SKILL,
                    )
            skipped_total += result.skipped_total
            if result.skipped:
                rejected.extend(result.skipped)
            if result.chosen is None:
                continue
            agents = self._agents
            chosen = agents[result.chosen]
            eligible = [(result.chosen, self._score(chosen, strategy, driver, now))]
            for ext, _ in result.runners_up:
                eligible.append((ext, self._score(agents[ext], strategy, driver, now)))
            values = (
                self._to_wall(now),
                waiting.call_id,
                config,
                trigger,
                result.chosen,
                ring_index,
                eligible,
                rejected,
                2 * self._explain_sample,
                competing,
                None if freed_agent is None else freed_agent.profile.extension,
                skipped_total,
                call_order,
                preference,
                earlier,
            )
            return Choice(LazyDecision(waiting.call_id, chosen_decision, values), agent=chosen)

        if first_driver is None and first_requirement is not None:
            first_driver = self._driver(first_requirement, language, strategy)[0]
        sample = self._rejection_sample(waiting, first_driver, {ext for ext, _ in rejected})
        rejected.extend(sample)
        unrouted = (
            self._to_wall(now),
            waiting.call_id,
            config,
            trigger,
            rejected,
            2 * self._explain_sample,
            competing,
            waiting.rings_active,
            skipped_total,
            call_order,
            preference,
            earlier,
        )
        return Choice(LazyDecision(waiting.call_id, unrouted_decision, unrouted))

    def _try_preferred(
        self,
        waiting: BookedCall,
        queue: BookedQueue,
        preferred: str,
        source: str,
        trigger: str,
        competing: tuple[CompetingCall, ...],
        now: float,
    ) -> tuple[Choice | None, Preference]:
        """Offer the call to its preferred agent when free, or hold it for that agent while
        the queue's bounds allow. Returns that choice (None: neither) and what happened."""
        agent = self._agents[preferred]
        config = queue.config
        ring, problem = self.qualification(agent, waiting)
        if problem is not None:
            return None, Preference(preferred, source, "not_qualified", reason=problem)
        order = self.order_of(waiting, config, now)
        if preferred in self._agents.available:
            preference = Preference(preferred, source, "offered")
            decision = Decision(
                at=self._to_wall(now),
                call_id=waiting.call_id,
                queue=config.name,
                trigger=trigger,
                policy="preferred_agent",
                chosen=preferred,
                ring=ring,
                eligible=(CandidateScore(preferred, (now - agent.idle_since,)),),
                competing_calls=competing,
                note=f"{PREFERENCE_LABEL[source]} {preferred} is free",
                order=order,
                preference=preference,
                earlier_offers=tuple(waiting.earlier_offers),
            )
            return Choice(LazyDecision.ready(decision), agent=agent), preference
        wait_until = waiting.entered_queue_at + config.preferred_agent_wait_seconds
        limit_until = waiting.enqueued_at + config.preferred_hold_limit
        hold_until, bound = (
            (wait_until, "preferred_agent_wait_seconds")
            if wait_until <= limit_until
            else (limit_until, "preferred_agent_max_hold_seconds")
        )
        unavailable = self._agents.unavailability(agent) or "busy"
        if (
            waiting.hold_done
            or waiting.status is not CallStatus.WAITING
            or now >= hold_until
            or agent.state not in HANDLING_STATES
            or not agent.reachable
            or not self._agents.site_serves(agent.profile.site)
        ):
            return None, Preference(
                preferred,
                source,
                "not_free",
                reason=unavailable,
                hold_until=self._to_wall(waiting.hold_until)
                if waiting.hold_done and waiting.hold_until is not None
                else None,
                hold_bound=bound if config.preferred_agent_wait_seconds > 0 else None,
            )
        preference = Preference(
            preferred,
            source,
            "held",
            reason=unavailable,
            hold_until=self._to_wall(hold_until),
            hold_bound=bound,
        )
        decision = Decision(
            at=self._to_wall(now),
            call_id=waiting.call_id,
            queue=config.name,
            trigger=trigger,
            policy="preferred_agent",
            chosen=None,
            ring=None,
            rejected=(Rejection(preferred, unavailable),),
            competing_calls=competing,
            note=f"held for {PREFERENCE_LABEL[source]} {preferred} until {self._to_wall(hold_until):.3f} "
            f"({bound})",
            order=order,
            preference=preference,
            earlier_offers=tuple(waiting.earlier_offers),
        )
        return (
            Choice(LazyDecision.ready(decision), held_for=preferred, hold_until=hold_until),
            preference,
        )

    def _preferred_agent_of(
        self, waiting: BookedCall, config: QueueConfig
    ) -> tuple[str, str] | None:
        """(agent, source) the call should be offered first, source 'customer' or 'last_agent'."""
        call = waiting.call
        preferred, source = call.preferred_agent, "customer"
        if preferred is None and config.preferred_agent_wait_seconds > 0:
            source = "last_agent"
            preferred = call.last_agent
            if preferred is None and call.caller:
                preferred = self._last_agent_of_caller.get(call.caller)
        if preferred is None or preferred not in self._agents or preferred in waiting.excluded:
            return None
        if any(agent == preferred for agent, _ in waiting.earlier_offers):
            return None  # it let this very call ring out: no second first-offer
        return preferred, source

    def order_of(self, waiting: BookedCall, config: QueueConfig, now: float) -> CallOrder:
        return call_order(config, waiting.call.priority, now - waiting.enqueued_at)

    # ------------------------------------------------------------------ a freed agent picks its call

    def best_call_for(
        self, agent: BookedAgent, now: float
    ) -> tuple[BookedCall | None, tuple[CompetingCall, ...]]:
        """The call this freed agent should serve first, across every queue it serves."""
        calls = self._calls
        extension = agent.profile.extension
        languages = agent.profile.languages
        best: BookedCall | None = None
        best_rank: tuple[float, float, int] | None = None
        competing: list[CompetingCall] = []
        candidates: list[BookedCall] = [calls[c] for c in agent.held_calls]
        # The pools the agent is in say which rings of each queue it meets: a call asking
        # for nothing beyond its rings needs no skill comparison.
        first_rings = self._agents.available.first_rings(extension)
        for name in agent.queues:
            queue = calls.queues[name]
            if not len(queue.line):
                continue
            first_ring = first_rings.get(name)
            for call_class in queue.line.classes():
                language = call_class.language
                if language is not None and language not in languages:
                    continue
                # Younger calls of a class qualify only if the head does (fewer rings, same
                # needs); going past the head is needed only for calls this agent refused.
                for entry in call_class.entries:
                    waiting = calls[entry[2]]
                    if extension in waiting.excluded:
                        continue
                    if first_ring is not None and not waiting.call.skills:
                        if first_ring < waiting.rings_active:
                            candidates.append(waiting)
                    elif qualification(agent, waiting, queue.config)[1] is None:
                        candidates.append(waiting)
                    break
        for waiting in candidates:
            if waiting.status is HELD and self.qualification(agent, waiting)[1] is not None:
                continue
            rank = calls.rank(waiting, now)
            if len(competing) < self._explain_sample:
                competing.append(
                    CompetingCall(
                        waiting.call_id, waiting.call.queue, waiting.call.priority, -rank[0]
                    )
                )
            if best_rank is None or rank < best_rank:
                best, best_rank = waiting, rank
        return best, tuple(competing)

    # ------------------------------------------------------------------ walking the index

    def _rejecter(
        self, waiting: BookedCall, requirement: Mapping[str, int], language: str | None
    ) -> Callable[[str], str | None]:
        agents = self._agents
        excluded = waiting.excluded
        items = tuple(requirement.items())

        def reject_reason(extension: str) -> str | None:
            if extension in excluded:
                return excluded[extension]
            profile = agents[extension].profile
            if language is not None and language not in profile.languages:
                return f"language {language}"
            skills = profile.skills
            for skill, minimum in items:
                level = skills.get(skill, 0)
                if level < minimum:
                    return (
                        f"skill {skill} {level} < {minimum}" if level else f"skill {skill} missing"
                    )
            return None

        return reject_reason

    @staticmethod
    def _primary_driver(requirement: Mapping[str, int], strategy: Strategy) -> Driver:
        """The driver ``_driver`` names when it is not the smallest count that matters: what
        ``_score`` reads (for SKILL_WEIGHTED, the primary skill)."""
        if strategy is SKILL_WEIGHTED and requirement:
            primary = min(requirement, key=lambda skill: (-requirement[skill], skill))
            return (SKILL, primary, requirement[primary])
        return EVERYONE_DRIVER

    def _driver(
        self, requirement: Mapping[str, int], language: str | None, strategy: Strategy
    ) -> tuple[Driver, int]:
        """The index attribute to walk: the most selective one, or for SKILL_WEIGHTED the
        primary skill (highest minimum, then name) whose proficiency orders the walk."""
        available = self._agents.available
        if strategy is Strategy.SKILL_WEIGHTED and requirement:
            # An attribute nobody free has means nobody qualifies: no walk at all.
            for skill, minimum in requirement.items():
                if available.count(SKILL, skill, minimum) == 0:
                    return (SKILL, skill, minimum), 0
            if language is not None and available.count(LANGUAGE, language, 1) == 0:
                return (LANGUAGE, language, 1), 0
            primary = min(requirement, key=lambda skill: (-requirement[skill], skill))
            minimum = requirement[primary]
            return (SKILL, primary, minimum), available.count(SKILL, primary, minimum)
        # "Everyone" only when nothing narrower is asked: an attribute every free agent
        # holds walks the same agents in the same order, and the index builds everyone's
        # heaps only for a walk (see ``router.availability``).
        best: Driver = EVERYONE_DRIVER
        best_count = available.count(EVERYONE, "", 1)
        for skill, minimum in requirement.items():
            count = available.count(SKILL, skill, minimum)
            if count < best_count or (count == best_count and best is EVERYONE_DRIVER):
                best, best_count = (SKILL, skill, minimum), count
        if language is not None:
            count = available.count(LANGUAGE, language, 1)
            if count < best_count or (count == best_count and best is EVERYONE_DRIVER):
                best, best_count = (LANGUAGE, language, 1), count
        return best, best_count

    # ------------------------------------------------------------------ explanation helpers

    def _score(
        self, agent: BookedAgent, strategy: Strategy, driver: Driver, now: float
    ) -> tuple[float, ...]:
        """Human-readable policy score; see ``Decision`` for each policy's fields."""
        idle = now - agent.idle_since
        if strategy is LEAST_OCCUPANCY:
            return (self._decayed_load(agent, now), idle)
        if strategy is ROUND_ROBIN:
            return (float(agent.rotation), idle)
        if strategy is SKILL_WEIGHTED:
            return (float(agent.profile.skills.get(driver[1], 0)), idle)
        return (idle,)

    def _decayed_load(self, agent: BookedAgent, now: float) -> float:
        if agent.load_key == NO_LOAD:
            return 0.0
        return math.exp(agent.load_key - now / self._occupancy_window)

    @staticmethod
    def _note(freed_agent: str | None, skipped: int, ring: int) -> str:
        if freed_agent is None and not skipped and not ring:
            return "ring 0"  # the common case, without building the parts
        parts = []
        if freed_agent is not None:
            parts.append(f"agent {freed_agent} became free; this call ranks first")
        parts.append(f"ring {ring}" + (" (expanded)" if ring else ""))
        if skipped:
            parts.append(f"{skipped} free agent(s) passed over")
        return "; ".join(parts)

    def _rejection_sample(
        self, waiting: BookedCall, driver: Driver | None, already: set[str]
    ) -> list[tuple[str, str]]:
        """Up to ``explain_sample`` agents holding the driving attribute, with why they could
        not take the call (agent, reason). Bounded: looks at no more than four times the
        sample size."""
        if driver is None:
            return []
        kind, name, _ = driver
        members = self._agents.members(kind, name)
        sample: list[tuple[str, str]] = []
        for extension in itertools.islice(members, 4 * self._explain_sample):
            if extension in already:
                continue
            agent = self._agents[extension]
            reason = self._agents.unavailability(agent) or self.qualification(agent, waiting)[1]
            if reason is not None:
                sample.append((extension, reason))
                if len(sample) >= self._explain_sample:
                    break
        return sample


# ---------------------------------------------------------------------- decisions, when read


def call_order(config: QueueConfig, priority: int, waited: float) -> CallOrder:
    """The call's place in its queue's order as ``Decision.order`` shows it: the same
    arithmetic as ``service_rank``, so the same score."""
    score = aging_score(priority, waited, config.sla_seconds, config.effective_aging_weight)
    return CallOrder(str(config.priority_order), priority, waited, score)


def chosen_decision(
    at: float,
    call_id: str,
    config: QueueConfig,
    trigger: str,
    chosen: str,
    ring: int,
    eligible: list[tuple[str, tuple[float, ...]]],
    rejected: list[tuple[str, str]],
    rejected_kept: int,
    competing: tuple[CompetingCall, ...],
    freed_agent: str | None,
    skipped_total: int,
    order: tuple[QueueConfig, int, float],
    preference: Preference | None,
    earlier: tuple[tuple[str, str], ...],
) -> Decision:
    """The record of a decision that found an agent (``LazyDecision``'s values)."""
    return Decision(
        at=at,
        call_id=call_id,
        queue=config.name,
        trigger=trigger,
        policy=str(config.strategy),
        chosen=chosen,
        ring=ring,
        eligible=tuple(CandidateScore(ext, score) for ext, score in eligible),
        rejected=tuple(Rejection(ext, why) for ext, why in rejected[:rejected_kept]),
        competing_calls=competing,
        note=Selector._note(freed_agent, skipped_total, ring),
        order=call_order(*order),
        preference=preference,
        earlier_offers=earlier,
    )


def unrouted_decision(
    at: float,
    call_id: str,
    config: QueueConfig,
    trigger: str,
    rejected: list[tuple[str, str]],
    rejected_kept: int,
    competing: tuple[CompetingCall, ...],
    rings_active: int,
    skipped_total: int,
    order: tuple[QueueConfig, int, float],
    preference: Preference | None,
    earlier: tuple[tuple[str, str], ...],
) -> Decision:
    """The record of a decision that found nobody (``LazyDecision``'s values)."""
    return Decision(
        at=at,
        call_id=call_id,
        queue=config.name,
        trigger=trigger,
        policy=str(config.strategy),
        chosen=None,
        ring=None,
        rejected=tuple(Rejection(ext, why) for ext, why in rejected[:rejected_kept]),
        competing_calls=competing,
        note=f"no free agent qualifies in {rings_active} ring(s); "
        f"{skipped_total} free agent(s) examined",
        order=call_order(*order),
        preference=preference,
        earlier_offers=earlier,
    )
