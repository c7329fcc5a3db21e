"""The read-only view of other sites' agents, fed from their retained messages.

One writer per agent: an agent's state is accepted only from the site its record
names. Anything else is refused with the reason, and the view is left unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from pbx.bus.codec import AgentState


class Refused(ValueError):
    """A message the view will not apply; the text says why."""


class RemoteAgents(Mapping[str, AgentState]):
    """Agent id -> its last published state, for agents of other sites only."""

    def __init__(self, own_site: str, agent_sites: Mapping[str, str]) -> None:
        self.own_site = own_site
        self._agent_sites = dict(agent_sites)
        self._states: dict[str, AgentState] = {}
        self._unconfirmed: set[str] = set()
        # A state published by a site that does not own the agent yet: its claim may come
        # right after (a starting site reads agents/{agent} before agents/{agent}/owner).
        self._before_claim: dict[tuple[str, str], AgentState] = {}

    def __getitem__(self, agent: str) -> AgentState:
        return self._states[agent]

    def __iter__(self) -> Iterator[str]:
        return iter(self._states)

    def __len__(self) -> int:
        return len(self._states)

    def of_site(self, site: str) -> dict[str, AgentState]:
        return {agent: state for agent, state in self._states.items() if state.site == site}

    def set_owner(self, agent: str, site: str) -> tuple[AgentState | None, AgentState | None]:
        """``agent`` belongs to ``site`` now: (the state its former site published, dropped;
        the state ``site`` published before its claim was read, taken)."""
        self._agent_sites[agent] = site
        dropped = None
        state = self._states.get(agent)
        if state is not None and state.site != site:
            del self._states[agent]
            dropped = state
        taken = self._before_claim.pop((site, agent), None)
        if taken is not None and site != self.own_site:
            self._states[agent] = taken
        else:
            taken = None
        return dropped, taken

    def check_owner(self, site: str, agent: str) -> None:
        owner = self._agent_sites.get(agent)
        if owner is None:
            raise Refused(f"site {site!r} publishes unknown agent {agent!r}")
        if owner != site:
            raise Refused(f"site {site!r} claims agent {agent!r} of site {owner!r}")

    def apply(self, site: str, agent: str, state: AgentState | None) -> bool:
        """Apply what ``site`` published on ``agent``'s topic (None: withdrawn); True if it changed."""
        if state is None and agent not in self._states:
            self._before_claim.pop((site, agent), None)
            return False  # withdrawing what was never here (or was refused) changes nothing
        owner = self._agent_sites.get(agent)
        if (state is not None and owner is not None and owner != site
                and state.site == site and state.agent == agent):
            self._before_claim[(site, agent)] = state  # one per known agent and site
        self.check_owner(site, agent)
        if state is not None and (state.site != site or state.agent != agent):
            raise Refused(f"payload names {state.site}/{state.agent}, topic {site}/{agent}")
        self._unconfirmed.discard(agent)
        if state is None:
            return self._states.pop(agent, None) is not None
        if self._states.get(agent) == state:
            return False
        self._states[agent] = state
        return True

    def begin_resync(self) -> None:
        """After a reconnection: what is not republished by its site may be gone."""
        self._unconfirmed = set(self._states)

    def end_resync(self, site: str) -> list[str]:
        """``site`` is live again and has republished: drop its agents it did not confirm."""
        stale = [agent for agent in self._unconfirmed if self._states[agent].site == site]
        for agent in stale:
            del self._states[agent]
            self._unconfirmed.discard(agent)
        return stale
