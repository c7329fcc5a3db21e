"""Wait forecasts: how many agents staff a queue, when each is expected free, and the
expected wait of a queue or of one call (the formulas are in ``router.estimates``)."""

from __future__ import annotations

from router.agent_book import AgentBook, BookedAgent
from router.agent_state import HANDLING_STATES, STAFFED_STATES, AgentState
from router.call_book import BookedCall, BookedQueue, CallBook
from router.estimates import erlang_c_wait, release_wait, remaining_handle
from router.selection import qualification
from router.waiting_line import ClassKey


class WaitForecast:
    def __init__(self, agents: AgentBook, calls: CallBook) -> None:
        self._agents = agents
        self._calls = calls
        self._free_in_cache: dict[tuple[str, ClassKey, int], tuple[float, list[float]]] = {}

    def free_in(self, agent: BookedAgent, handle_seconds: float, now: float) -> float | None:
        """Seconds until a staffed agent is expected free; None when it is not staffed."""
        if not agent.reachable or not self._agents.site_serves(agent.profile.site):
            return None
        state = agent.state
        if state is AgentState.AVAILABLE:
            # On a personal call: its length is unknown, so count one ordinary handle time.
            return remaining_handle(0.0, handle_seconds) if agent.personal_calls else 0.0
        if state is AgentState.WRAP_UP:
            return max((agent.wrap_until if agent.wrap_until is not None else now) - now, 0.0)
        if state in HANDLING_STATES:
            since = agent.handling_since if agent.handling_since is not None else now
            return remaining_handle(now - since, handle_seconds)
        return None

    def staffing(
        self, queue: BookedQueue, now: float, probes: list[BookedCall] | None = None
    ) -> tuple[int, int, list[float]]:
        """(staffed, available, when each staffed one is free) over the queue's agents who
        can take one of ``probes`` (default: the calls at the head of the line and held
        ones; with none waiting, anyone speaking the queue's language)."""
        calls = self._calls
        if probes is None:
            probes = [calls[entry[2]] for c in queue.line.classes() for entry in c.entries[:1]]
            probes.extend(calls[call_id] for call_id in queue.held)
        config = queue.config
        language = config.language
        handle = queue.handle_time.seconds
        free_in: list[float] = []
        available = 0
        for extension in queue.agents:
            agent = self._agents[extension]
            if agent.state not in STAFFED_STATES:
                continue
            if probes:
                if all(
                    qualification(agent, probe, calls.queue_of(probe).config)[1] is not None
                    for probe in probes
                ):
                    continue
            elif language is not None and language not in agent.profile.languages:
                continue
            when = self.free_in(agent, handle, now)
            if when is None:
                continue
            free_in.append(when)
            available += agent.state is AgentState.AVAILABLE and not agent.personal_calls
        return len(free_in), available, free_in

    def queue_ewt(
        self, queue: BookedQueue, staffed: int, free_in: list[float], now: float
    ) -> float | None:
        """With callers in line: the wait of one joining its end, from the agents' calls in
        progress (moves with the line); with nobody waiting: Erlang C's mean wait."""
        handle = queue.handle_time.seconds
        waiting = len(queue.line) + len(queue.held)
        if waiting == 0:
            wait = erlang_c_wait(staffed, queue.arrivals.per_second(now), handle)
            if wait is not None:
                return wait
        return release_wait(waiting + 1, free_in, handle)

    def call_ewt(
        self, waiting: BookedCall, queue: BookedQueue, position: int, now: float
    ) -> float | None:
        # Calls of one class and ring count see the same agents: at one instant (a tick's
        # announcements) the agents are scanned once per class, not once per call.
        key = (queue.config.name, waiting.line_class, waiting.rings_active)
        cached = None if waiting.excluded else self._free_in_cache.get(key)
        if cached is not None and cached[0] == now:
            free_in = cached[1]
        else:
            _, _, free_in = self.staffing(queue, now, [waiting])
            if not waiting.excluded:
                if self._free_in_cache and next(iter(self._free_in_cache.values()))[0] != now:
                    self._free_in_cache.clear()
                self._free_in_cache[key] = (now, free_in)
        return release_wait(position, free_in, queue.handle_time.seconds)
