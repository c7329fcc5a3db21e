"""A drill moves agents: the drained site stops offering them calls, the target claims them.

Ownership is the bus's versioned, retained owner claim (one writer per agent, see
``pbx/bus/README.md``). The target claims each agent and calls the agent's phone at the
registration the phone last made (kept in the shared store, with its Path through the
front door), without waiting for the phone to register again; the drained site answers the
phone's next REGISTER 503, so the front door sends it to the target, which keeps the agent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, MutableMapping

from events.drills import AgentOwnerChanged
from pbx.configuration.server import Account
from pbx.registration.durable import DurableRegistrations
from pbx.registration.registrar import Registrar
from pbx.site_link import SiteLink
from router import AgentState, Router, RouterError

log = logging.getLogger("pbx.drill")

# An agent in one of these states is on a call (or about to be): it moves once that ends.
ON_A_CALL = frozenset({AgentState.RESERVED, AgentState.RINGING, AgentState.ON_CALL})
RINGING = frozenset({AgentState.RESERVED, AgentState.RINGING})


class DrillAgents:
    def __init__(self, link: SiteLink, router: Router, registrar: Registrar,
                 registrar_accounts: MutableMapping[str, Account], accounts: dict[str, Account],
                 registrations: Callable[[], DurableRegistrations | None],
                 now: Callable[[], float]) -> None:
        self.link = link
        self.router = router
        self.registrar = registrar
        self.registrar_accounts = registrar_accounts
        self.accounts = accounts
        self.registrations = registrations
        self.now = now
        self.released: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def is_released(self, agent: str) -> bool:
        return agent in self.released

    def release(self, to: str) -> tuple[list[str], list[str]]:
        """Offer no new call to this site's agents (a call under way goes on, and so does a
        ringing one, released at the next round); (free to claim, still on a call)."""
        ready, busy = [], []
        for agent in sorted(self.link.own_agents):
            try:
                state = self.router.agent(agent).state
            except RouterError:
                continue
            if agent not in self.released and state not in RINGING:
                self.router.agent_reachable(agent, False)
                self.released.add(agent)
            if agent in self.released and state not in ON_A_CALL:
                ready.append(agent)
            else:
                busy.append(agent)
        return ready, busy

    def restore_released(self) -> None:
        released, self.released = self.released, set()
        for agent in sorted(released & self.link.own_agents):
            self._reachable_again(agent)

    async def claim(self, agents: list[str], from_site: str) -> list[str]:
        unknown = [agent for agent in agents if self.link.bus.owner_of(agent) is None]
        if unknown:
            raise ValueError(f"unknown agent(s): {', '.join(unknown)}")
        return await self._claim(agents, f"drill from {from_site}")

    async def take_back(self) -> list[str]:
        home = sorted(agent for agent, site in self.link.home_sites.items()
                      if site == self.link.site and self.link.bus.owner_of(agent) != self.link.site)
        return await self._claim(home, "drill back: home again")

    def owner_changed(self, event: AgentOwnerChanged) -> None:
        """An agent of another site is this site's now, by a claim this process did not
        make (its own retained claim, read after a restart): its phone's account and stored
        registration come here, so its calls ring it without waiting for a REGISTER."""
        agent = event.agent
        if (event.site != self.link.site or agent in self.registrar_accounts
                or agent not in self.accounts):
            return
        self.registrar_accounts[agent] = self.accounts[agent]
        task = asyncio.get_running_loop().create_task(self._registered_elsewhere(agent))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _registered_elsewhere(self, agent: str) -> None:
        registrations = self.registrations()
        if registrations is not None:
            await registrations.restore({agent})
        self._reachable_again(agent)

    async def _claim(self, agents: list[str], by: str) -> list[str]:
        claimed = []
        for agent in agents:
            account = self.accounts.get(agent)
            if account is not None:
                self.registrar_accounts[agent] = account
            if self.link.bus.owner_of(agent) != self.link.site:
                self.link.bus.claim_agent(agent, by)
                claimed.append(agent)
        registrations = self.registrations()
        if registrations is not None and agents:
            await registrations.restore(set(agents))
        for agent in agents:
            self._reachable_again(agent)
        return claimed

    def _reachable_again(self, agent: str) -> None:
        """Reachable when its phone's registration is known here, and logged in (it served
        calls where it was)."""
        registered = bool(self.registrar.bindings(agent, self.now()))
        try:
            self.router.agent_reachable(agent, registered)
            if registered and self.router.agent(agent).state is AgentState.OFFLINE:
                self.router.login(agent)
        except RouterError as error:
            log.info("agent %s: %s", agent, error)
