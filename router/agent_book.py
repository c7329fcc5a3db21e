"""The agent book: every agent's profile and live state, the indexes that find agents
by skill, language and site, the index of those free now, and each site's health and
opening (business hours).

An agent is in the free index (``router.availability``) while it is AVAILABLE,
reachable, on no personal call and at a site that is healthy and open; ``refresh`` keeps that true
after any change and notes agents that just became free, so the next dispatch looks
at them (``take_freed``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from router.agent_state import HANDLING_STATES, AgentActivity, AgentState
from router.availability import AttributeKind, AvailableAgents
from router.config import AgentProfile, QueueConfig
from router.errors import UnknownAgent
from router.occupancy import NO_LOAD, OccupancyWindow
from router.views import AgentSnapshot

# Read off its enum once: in Python 3.11 the enum metaclass's ``__getattr__`` hook makes
# each ``AgentState.AVAILABLE`` cost ~0.1-0.5 µs, and every state change asks.
AVAILABLE = AgentState.AVAILABLE
SKILL = AttributeKind.SKILL
LANGUAGE = AttributeKind.LANGUAGE


def meets(skills: Mapping[str, int], requirement: Mapping[str, int]) -> bool:
    return all(skills.get(skill, 0) >= minimum for skill, minimum in requirement.items())


def serves(profile: AgentProfile, config: QueueConfig) -> bool:
    """Could this agent ever take a call of this queue (any ring)? Language is a per-call
    matter (a call may ask for another language than the queue's), checked per call."""
    return any(meets(profile.skills, ring) for ring in config.rings)


@dataclass(eq=False, slots=True)
class BookedAgent:
    """An agent's live state; times are on the router's monotonic clock."""

    profile: AgentProfile
    state_since: float
    idle_since: float
    occupancy: OccupancyWindow
    state: AgentState = AgentState.OFFLINE
    reason: str | None = None
    reachable: bool = True
    load_key: float = NO_LOAD
    rotation: int = 0
    handling_since: float | None = None
    last_caller: str | None = None
    reservation_id: str | None = None
    call_id: str | None = None
    call_queue: str | None = None
    talk_seconds: float = 0.0
    wrap_until: float | None = None
    pending: tuple[AgentActivity, str | None] | None = None
    queues: set[str] = field(default_factory=set)
    held_calls: dict[str, None] = field(default_factory=dict)
    rona_since: float | None = None
    # Calls the agent is on that did not come from a queue (a direct call, calling the IVR):
    # busy for routing while any is up, whatever the routing state says.
    personal_calls: set[str] = field(default_factory=set)

    @property
    def extension(self) -> str:
        return self.profile.extension

    def clear_call(self) -> None:
        self.reservation_id = None
        self.call_id = None
        self.call_queue = None


class AgentBook:
    def __init__(self, occupancy_window_seconds: float, explain_sample: int) -> None:
        self._occupancy_window = occupancy_window_seconds
        self._agents: dict[str, BookedAgent] = {}
        self._skill_members: dict[str, dict[str, None]] = {}
        self._language_members: dict[str, dict[str, None]] = {}
        self._site_members: dict[str, dict[str, None]] = {}
        self._unhealthy_sites: set[str] = set()
        self._closed_sites: set[str] = set()  # outside their business hours
        self.available = AvailableAgents(skipped_kept=explain_sample)
        self._freed: dict[str, None] = {}  # free since the last dispatch looked, in order
        self._freed_taken = 0  # taken from ``_freed`` since it was last copied

    # ------------------------------------------------------------------ lookups

    def __contains__(self, extension: object) -> bool:
        return extension in self._agents

    def __iter__(self) -> Iterator[str]:
        return iter(self._agents)

    def __len__(self) -> int:
        return len(self._agents)

    def get(self, extension: str) -> BookedAgent | None:
        return self._agents.get(extension)

    def __getitem__(self, extension: str) -> BookedAgent:
        return self._agents[extension]

    def require(self, extension: str) -> BookedAgent:
        agent = self._agents.get(extension)
        if agent is None:
            raise UnknownAgent(extension)
        return agent

    def values(self) -> Iterable[BookedAgent]:
        return self._agents.values()

    def members(self, kind: AttributeKind, name: str) -> Iterator[str]:
        """Every agent (free or not) holding a skill or language, or everyone."""
        if kind is SKILL:
            return iter(self._skill_members.get(name, {}))
        if kind is LANGUAGE:
            return iter(self._language_members.get(name, {}))
        return iter(self._agents)

    def serving(self, config: QueueConfig) -> set[str]:
        """The agents who could take a call of this queue in some ring."""
        result: set[str] = set()
        for ring in config.rings:
            if not ring:
                return set(self._agents)
            # Only agents having the ring's rarest skill can meet the whole ring.
            rarest = min(ring, key=lambda skill: len(self._skill_members.get(skill, {})))
            for extension in self._skill_members.get(rarest, {}):
                if meets(self._agents[extension].profile.skills, ring):
                    result.add(extension)
        return result

    # ------------------------------------------------------------------ changes

    def put(self, profile: AgentProfile, now: float) -> BookedAgent:
        """Add an agent (OFFLINE) or replace its profile, keeping its live state; the
        caller re-indexes it (``refresh``) once its queues are known."""
        agent = self._agents.get(profile.extension)
        if agent is None:
            agent = BookedAgent(
                profile=profile,
                state_since=now,
                idle_since=now,
                occupancy=OccupancyWindow(self._occupancy_window),
            )
            self._agents[profile.extension] = agent
        else:
            self._forget_memberships(agent)
            self.available.remove(profile.extension)
            agent.profile = profile
        extension = profile.extension
        for skill in profile.skills:
            self._skill_members.setdefault(skill, {})[extension] = None
        for language in profile.languages:
            self._language_members.setdefault(language, {})[extension] = None
        self._site_members.setdefault(profile.site, {})[extension] = None
        return agent

    def remove(self, agent: BookedAgent) -> None:
        self.available.remove(agent.extension)
        self._forget_memberships(agent)
        self._freed.pop(agent.extension, None)
        del self._agents[agent.extension]

    def _forget_memberships(self, agent: BookedAgent) -> None:
        profile = agent.profile
        for skill in profile.skills:
            self._skill_members.get(skill, {}).pop(profile.extension, None)
        for language in profile.languages:
            self._language_members.get(language, {}).pop(profile.extension, None)
        self._site_members.get(profile.site, {}).pop(profile.extension, None)

    def refresh(self, agent: BookedAgent) -> None:
        """Put the agent in or out of the free index to match its state."""
        profile = agent.profile
        extension = profile.extension
        selectable = (
            agent.state is AVAILABLE
            and agent.reachable
            and not agent.personal_calls
            and self.site_serves(profile.site)
        )
        if selectable and extension not in self.available:
            self.available.add(
                extension,
                profile.skills,
                profile.languages,
                agent.idle_since,
                agent.load_key,
                agent.rotation,
                agent.queues,
            )
            self._freed[extension] = None
        elif not selectable and extension in self.available:
            self.available.remove(extension)

    def mark_freed(self, extension: str, first: bool = False) -> None:
        """Have the next dispatch look at this free agent (``first``: before the others)."""
        if first:
            self._freed = {extension: None, **self._freed}
            self._freed_taken = 0
        else:
            self._freed[extension] = None

    def take_freed(self) -> str | None:
        """The next agent freed since dispatch last looked, or None."""
        freed = self._freed
        if not freed:
            return None
        extension = next(iter(freed))
        del freed[extension]
        # A dict keeps the slots of deleted keys until it grows, and ``next(iter())``
        # steps over each from the front: after the 10,000 logins of a morning every take
        # cost ~4 µs. A fresh copy once more were taken than are left keeps it O(1).
        self._freed_taken += 1
        if self._freed_taken > len(freed):
            self._freed = dict(freed)
            self._freed_taken = 0
        return extension

    # ------------------------------------------------------------------ sites

    def site_healthy(self, site: str) -> bool:
        return site not in self._unhealthy_sites

    def site_open(self, site: str) -> bool:
        return site not in self._closed_sites

    def site_serves(self, site: str) -> bool:
        """Whether the site's agents may be offered calls: healthy and within its hours."""
        return site not in self._unhealthy_sites and site not in self._closed_sites

    def set_site_health(self, site: str, healthy: bool) -> bool:
        """Returns whether anything changed; re-indexes the site's agents if so."""
        return self._set_site_flag(self._unhealthy_sites, site, not healthy)

    def set_site_open(self, site: str, is_open: bool) -> bool:
        """Returns whether anything changed; re-indexes the site's agents if so."""
        return self._set_site_flag(self._closed_sites, site, not is_open)

    def _set_site_flag(self, flagged: set[str], site: str, flag: bool) -> bool:
        if (site in flagged) == flag:
            return False
        if flag:
            flagged.add(site)
        else:
            flagged.discard(site)
        for extension in self._site_members.get(site, {}):
            self.refresh(self._agents[extension])
        return True

    # ------------------------------------------------------------------ views

    def unavailability(self, agent: BookedAgent) -> str | None:
        """Why the agent cannot be offered a call now, or None when it can."""
        if not agent.reachable:
            return "unreachable"
        if agent.profile.site in self._unhealthy_sites:
            return "site unhealthy"
        if agent.profile.site in self._closed_sites:
            return "site closed (outside its business hours)"
        if agent.personal_calls:
            return "on a personal call"
        state = agent.state
        if state is AgentState.AVAILABLE:
            return None
        if state is AgentState.OFFLINE:
            return "offline"
        if state is AgentState.BREAK:
            return f"break ({agent.reason})"
        return f"busy ({state.value})"

    def snapshot(
        self, agent: BookedAgent, now: float, to_wall: Callable[[float], float]
    ) -> AgentSnapshot:
        state = agent.state
        current: bool | None = None
        if state in HANDLING_STATES:
            current = True
        elif state is AgentState.AVAILABLE:
            current = False
        pending = None
        if agent.pending is not None:
            activity, reason = agent.pending
            pending = "logout" if activity is AgentActivity.LOGOUT else f"break:{reason}"
        return AgentSnapshot(
            profile=agent.profile,
            state=state,
            state_since=to_wall(agent.state_since),
            reason=agent.reason,
            occupancy=agent.occupancy.ratio(now, agent.state_since, current),
            last_caller=agent.last_caller,
            reserved_call=agent.call_id
            if state in (AgentState.RESERVED, AgentState.RINGING)
            else None,
            reachable=agent.reachable,
            personal_calls=len(agent.personal_calls),
            site_healthy=agent.profile.site not in self._unhealthy_sites,
            site_open=agent.profile.site not in self._closed_sites,
            queues=tuple(sorted(agent.queues)),
            pending=pending,
        )
