"""Queueing formulas the simulator is checked against, and what staffing mode quotes.

- Erlang C (M/M/N): Poisson arrivals, exponential handle times, N agents, nobody
  abandons. Probability of waiting, service level and average speed of answer.
- Erlang A (M/M/N+M): the same with exponential patience (mean ``patience``):
  callers abandon. Solved exactly as a birth-death chain (truncated where the
  remaining probability is negligible), which stays stable at any load, even
  overloaded, where Erlang C has no answer.

Erlang C holds for one queue served by one pool of identical agents with no
abandonment; with abandonment use Erlang A; with skills, priorities, several
sites or changing staff neither holds exactly, and only the simulation answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def erlang_b(agents: int, load: float) -> float:
    """Blocking probability with ``agents`` servers and ``load`` Erlangs (stable recursion)."""
    if agents < 0 or load < 0:
        raise ValueError(f"agents and load must be >= 0, got {agents}, {load}")
    blocking = 1.0
    for n in range(1, agents + 1):
        blocking = load * blocking / (n + load * blocking)
    return blocking


def erlang_c(agents: int, load: float) -> float:
    """Probability that a call waits (M/M/N); 1.0 when the load is not below ``agents``."""
    if load >= agents:
        return 1.0
    blocking = erlang_b(agents, load)
    return agents * blocking / (agents - load * (1.0 - blocking))


@dataclass(frozen=True)
class ErlangC:
    """Erlang C figures for one interval of one queue."""

    agents: int
    load: float  # Erlangs: arrivals per second times the mean handle time
    handle_seconds: float
    target_seconds: float

    @property
    def stable(self) -> bool:
        return self.load < self.agents

    @property
    def wait_probability(self) -> float:
        return erlang_c(self.agents, self.load)

    @property
    def service_level(self) -> float:
        """Share of calls answered within ``target_seconds`` (0 when overloaded)."""
        if not self.stable:
            return 0.0
        rate = (self.agents - self.load) / self.handle_seconds
        return 1.0 - self.wait_probability * math.exp(-rate * self.target_seconds)

    @property
    def average_speed_of_answer(self) -> float:
        """Mean wait over all calls, in seconds (infinite when overloaded)."""
        if not self.stable:
            return math.inf
        return self.wait_probability * self.handle_seconds / (self.agents - self.load)

    @property
    def occupancy(self) -> float:
        return min(1.0, self.load / self.agents) if self.agents else 1.0


@dataclass(frozen=True)
class ErlangA:
    """Erlang A (M/M/N+M) figures: arrivals per second, mean handle and mean patience."""

    agents: int
    arrivals_per_second: float
    handle_seconds: float
    patience_seconds: float
    wait_probability: float
    abandon_probability: float
    mean_queue_length: float
    occupancy: float

    @property
    def average_wait(self) -> float:
        """Mean time in line over all callers (answered or not), by Little's law."""
        return self.mean_queue_length / self.arrivals_per_second


def erlang_a(agents: int, arrivals_per_second: float, handle_seconds: float,
             patience_seconds: float, *, tail: float = 1e-12) -> ErlangA:
    """Solve M/M/N+M; ``tail`` is the probability mass left out of the truncated chain."""
    if agents < 1 or arrivals_per_second <= 0 or handle_seconds <= 0 or patience_seconds <= 0:
        raise ValueError("erlang_a needs agents >= 1 and positive rates")
    service_rate = 1.0 / handle_seconds
    abandon_rate = 1.0 / patience_seconds
    # Unnormalised stationary probabilities p[n], n callers in the system, p[0] = 1.
    weights = [1.0]
    total = 1.0
    n = 0
    while True:
        n += 1
        death = min(n, agents) * service_rate + max(n - agents, 0) * abandon_rate
        weight = weights[-1] * arrivals_per_second / death
        weights.append(weight)
        total += weight
        if n > agents and weight < tail * total and death > arrivals_per_second:
            break
        if n > 10_000_000:  # pragma: no cover - the abandon rate always ends the chain sooner
            raise ArithmeticError("erlang_a did not converge")
    probabilities = [w / total for w in weights]
    waiting = sum(probabilities[agents:])  # PASTA: an arrival sees the time average
    queue_length = sum((k - agents) * p for k, p in enumerate(probabilities) if k > agents)
    busy = sum(min(k, agents) * p for k, p in enumerate(probabilities))
    return ErlangA(
        agents=agents,
        arrivals_per_second=arrivals_per_second,
        handle_seconds=handle_seconds,
        patience_seconds=patience_seconds,
        wait_probability=waiting,
        abandon_probability=abandon_rate * queue_length / arrivals_per_second,
        mean_queue_length=queue_length,
        occupancy=busy / agents,
    )


def erlang_c_agents(arrivals_per_second: float, handle_seconds: float, target_seconds: float,
                    service_level: float, *, limit: int = 100_000) -> int:
    """The fewest agents for which Erlang C meets ``service_level`` within ``target_seconds``."""
    if arrivals_per_second <= 0:
        return 0
    load = arrivals_per_second * handle_seconds
    agents = max(1, math.floor(load) + 1)
    while agents <= limit:
        if ErlangC(agents, load, handle_seconds, target_seconds).service_level >= service_level:
            return agents
        agents += 1
    raise ArithmeticError(f"no staffing up to {limit} agents meets the target")
