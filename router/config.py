"""Configuration records: agent profiles, queues and their skill-expansion rings.

Skill requirements and expansion ("bullseye") semantics
-------------------------------------------------------
A queue's ``skills`` map is the innermost ring: an agent qualifies when it has
*every* listed skill at *at least* the listed proficiency (and speaks the
call's language). Each ``SkillExpansion`` is an additional, alternative ring
that becomes active once the call has waited ``after_seconds``: an agent then
qualifies if it satisfies the base ring OR ANY active expansion ring, each ring
being a complete requirement set (every skill listed in it, at its minimum).
So a ring ``{"billing": 3}`` relaxes a billing-5 requirement, and a ring
``{"general": 5}`` widens the pool to generalists who have no billing skill at
all. Rings never relax the language, nor the call's own extra skills, which are
added to every ring. Among qualified agents the inner ring is preferred: the
router only looks at ring k+1 when no agent of rings 0..k is free.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from types import MappingProxyType
from typing import Any

from router.errors import InvalidConfig

ANY_SITE = "any"  # in a queue's ``sites``: every site's agents may take its calls
MIN_PROFICIENCY = 1
MAX_PROFICIENCY = 10


class PriorityOrder(enum.StrEnum):
    """How a queue orders its waiting calls; see ``router.waiting_line``."""

    AGING = "aging"  # tiers, but each SLA period of waiting is worth aging_weight tiers
    STRICT = "strict"  # a higher tier always goes first; arrival orders a tier


class ServiceLevelDefinition(enum.StrEnum):
    """Which calls the service level counts; T is the queue's ``sla_seconds``.

    - abandons_missed:          answered within T / (answered + abandoned)
    - short_abandons_excluded:  answered within T / (answered + abandoned after T)
    - short_abandons_met:       (answered within T + abandoned within T) / (answered + abandoned)
    - abandons_excluded:        answered within T / answered
    """

    ABANDONS_MISSED = "abandons_missed"
    SHORT_ABANDONS_EXCLUDED = "short_abandons_excluded"
    SHORT_ABANDONS_MET = "short_abandons_met"
    ABANDONS_EXCLUDED = "abandons_excluded"


class Strategy(enum.StrEnum):
    """How a queue picks among several qualified, free agents."""

    LONGEST_IDLE = "longest_idle"
    LEAST_OCCUPANCY = "least_occupancy"
    ROUND_ROBIN = "round_robin"
    SKILL_WEIGHTED = "skill_weighted"


def frozen_proficiencies(owner: str, levels: Mapping[str, int]) -> Mapping[str, int]:
    for skill, level in levels.items():
        if not isinstance(skill, str) or not skill:
            raise InvalidConfig(f"{owner}: skill names must be non-empty strings, got {skill!r}")
        if isinstance(level, bool) or not isinstance(level, int):
            raise InvalidConfig(f"{owner}: proficiency of {skill!r} must be an int, got {level!r}")
        if not MIN_PROFICIENCY <= level <= MAX_PROFICIENCY:
            raise InvalidConfig(
                f"{owner}: proficiency of {skill!r} is {level}, "
                f"must be {MIN_PROFICIENCY}-{MAX_PROFICIENCY}"
            )
    return MappingProxyType(dict(levels))


@dataclass(frozen=True)
class AgentProfile:
    """Who an agent is and what it can handle; live state is kept by the router."""

    extension: str
    name: str
    site: str
    skills: Mapping[str, int] = field(default_factory=dict)
    languages: frozenset[str] = frozenset()
    capacity: int = 1

    def __post_init__(self) -> None:
        if not self.extension:
            raise InvalidConfig("agent extension must not be empty")
        owner = f"agent {self.extension}"
        object.__setattr__(self, "skills", frozen_proficiencies(owner, self.skills))
        object.__setattr__(self, "languages", frozenset(self.languages))
        if self.capacity != 1:
            # Voice agents carry one call at a time; a larger value would silently
            # be ignored, so refuse it until multi-channel routing exists.
            raise InvalidConfig(f"{owner}: capacity must be 1 for voice, got {self.capacity}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON types): what the store's columns and the API's bodies hold."""
        return {
            "extension": self.extension,
            "name": self.name,
            "site": self.site,
            "skills": dict(self.skills),
            "languages": sorted(self.languages),
            "capacity": self.capacity,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentProfile:
        """The inverse of ``to_dict``; keys that are not fields of a profile are ignored."""
        known = {name: data[name] for name in _field_names(cls) if name in data}
        if "languages" in known:
            known["languages"] = frozenset(known["languages"])
        return cls(**known)


@dataclass(frozen=True)
class SkillExpansion:
    """An alternative requirement ring that becomes acceptable after ``after_seconds`` of waiting.

    ``skills`` is a complete requirement set (skill -> minimum proficiency); see the
    module docstring for how rings combine.
    """

    after_seconds: float
    skills: Mapping[str, int]

    def __post_init__(self) -> None:
        if self.after_seconds < 0:
            raise InvalidConfig(f"expansion after_seconds must be >= 0, got {self.after_seconds}")
        object.__setattr__(self, "skills", frozen_proficiencies("expansion", self.skills))

    def to_dict(self) -> dict[str, Any]:
        return {"after_seconds": self.after_seconds, "skills": dict(self.skills)}


@dataclass(frozen=True)
class QueueConfig:
    """A queue: who may answer its calls, its service target and its timers.

    ``aging_weight`` scales how fast waiting raises a call's rank (see
    ``router.waiting_line``); ``priority_order`` 'strict' (or a weight of 0)
    disables aging so priority then arrival decide.

    A call may be held for its preferred (or last) agent while that agent is busy:
    at most ``preferred_agent_wait_seconds`` after entering the queue, and never
    past ``preferred_agent_max_hold_seconds`` of waiting (default: the queue's
    ``sla_seconds``), after which any free qualified agent takes it.
    """

    name: str
    skills: Mapping[str, int] = field(default_factory=dict)
    language: str | None = None
    sla_seconds: float = 20
    sla_percent: float = 80
    strategy: Strategy = Strategy.LONGEST_IDLE
    wrap_up_seconds: float = 10
    ring_timeout_seconds: float = 15
    max_wait_seconds: float | None = None
    overflow: str | None = None
    announce_interval_seconds: float = 30
    preferred_agent_wait_seconds: float = 0
    expansion: tuple[SkillExpansion, ...] = ()
    aging_weight: float = 1.0
    priority_order: PriorityOrder = PriorityOrder.AGING
    preferred_agent_max_hold_seconds: float | None = None
    service_level_definition: ServiceLevelDefinition = (
        ServiceLevelDefinition.SHORT_ABANDONS_EXCLUDED
    )
    # The other sites whose agents may take this queue's calls when none is free at the
    # site the call waits at (``ANY_SITE``: every site); empty: that site's agents only.
    sites: tuple[str, ...] = ()
    # How long a caller waits for this site's agents before ``sites`` are asked (0: at once).
    sites_after_seconds: float = 0

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidConfig("queue name must not be empty")
        owner = f"queue {self.name}"
        sites = tuple(dict.fromkeys(self.sites))
        if any(not isinstance(site, str) or not site for site in sites):
            raise InvalidConfig(f"{owner}: sites must be site names, got {list(self.sites)!r}")
        if ANY_SITE in sites and len(sites) > 1:
            raise InvalidConfig(f"{owner}: sites is either {ANY_SITE!r} or a list of sites")
        object.__setattr__(self, "sites", sites)
        object.__setattr__(self, "skills", frozen_proficiencies(owner, self.skills))
        object.__setattr__(self, "strategy", Strategy(self.strategy))
        object.__setattr__(self, "priority_order", PriorityOrder(self.priority_order))
        object.__setattr__(
            self, "service_level_definition", ServiceLevelDefinition(self.service_level_definition)
        )
        expansion = tuple(sorted(self.expansion, key=lambda ring: ring.after_seconds))
        object.__setattr__(self, "expansion", expansion)
        if self.sla_seconds <= 0:
            raise InvalidConfig(f"{owner}: sla_seconds must be > 0, got {self.sla_seconds}")
        if not 0 < self.sla_percent <= 100:
            raise InvalidConfig(f"{owner}: sla_percent must be in (0, 100], got {self.sla_percent}")
        for label, value in (
            ("wrap_up_seconds", self.wrap_up_seconds),
            ("preferred_agent_wait_seconds", self.preferred_agent_wait_seconds),
            ("aging_weight", self.aging_weight),
            ("sites_after_seconds", self.sites_after_seconds),
        ):
            if value < 0:
                raise InvalidConfig(f"{owner}: {label} must be >= 0, got {value}")
        for label, value in (
            ("ring_timeout_seconds", self.ring_timeout_seconds),
            ("announce_interval_seconds", self.announce_interval_seconds),
        ):
            if value <= 0:
                raise InvalidConfig(f"{owner}: {label} must be > 0, got {value}")
        if (
            self.preferred_agent_max_hold_seconds is not None
            and self.preferred_agent_max_hold_seconds < 0
        ):
            raise InvalidConfig(
                f"{owner}: preferred_agent_max_hold_seconds must be >= 0, "
                f"got {self.preferred_agent_max_hold_seconds}"
            )
        if self.max_wait_seconds is not None and self.max_wait_seconds <= 0:
            raise InvalidConfig(
                f"{owner}: max_wait_seconds must be > 0, got {self.max_wait_seconds}"
            )
        if self.overflow == self.name:
            raise InvalidConfig(f"{owner}: a queue cannot overflow into itself")

    def allows_site(self, site: str) -> bool:
        """Whether ``site``'s agents may take this queue's calls waiting at another site."""
        return ANY_SITE in self.sites or site in self.sites

    @cached_property
    def effective_aging_weight(self) -> float:
        """The aging weight the order of service uses: 0 under strict tiers."""
        return 0.0 if self.priority_order is PriorityOrder.STRICT else self.aging_weight

    @property
    def preferred_hold_limit(self) -> float:
        """Longest wait (since the call entered the line) a preferred-agent hold may last."""
        if self.preferred_agent_max_hold_seconds is not None:
            return self.preferred_agent_max_hold_seconds
        return self.sla_seconds

    @cached_property
    def rings(self) -> tuple[Mapping[str, int], ...]:
        """The base requirement followed by each expansion ring, innermost first (read for
        every routing decision: computed once, the configuration being frozen)."""
        return (self.skills, *(ring.skills for ring in self.expansion))

    def rings_active_after(self, waited: float) -> int:
        """How many rings (base included) a call that waited ``waited`` seconds may use."""
        active = 1
        for ring in self.expansion:
            if waited >= ring.after_seconds:
                active += 1
            else:
                break
        return active

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON types): what the store's columns and the API's bodies hold."""
        data: dict[str, Any] = {}
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if isinstance(value, enum.Enum):
                value = value.value
            elif name == "skills":
                value = dict(value)
            elif name == "expansion":
                value = [ring.to_dict() for ring in value]
            elif name == "sites":
                value = list(value)
            data[name] = value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QueueConfig:
        """The inverse of ``to_dict``; keys that are not fields of a queue are ignored."""
        known = {name: data[name] for name in _field_names(cls) if name in data}
        known["expansion"] = tuple(
            SkillExpansion(float(ring["after_seconds"]), dict(ring["skills"]))
            for ring in known.get("expansion", ())
        )
        if known.get("sites") is not None:
            known["sites"] = tuple(known["sites"])
        else:
            known.pop("sites", None)
        return cls(**known)


def _field_names(record: type) -> tuple[str, ...]:
    return tuple(item.name for item in fields(record))
