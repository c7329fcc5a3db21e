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
    probabilities: tuple[float, ...]  # of n callers in the system, n = 0, 1, ...

    @property
    def average_wait(self) -> float:
        """Mean time in line over all callers (answered or not), by Little's law."""
        return self.mean_queue_length / self.arrivals_per_second

    def within(self, target_seconds: float) -> tuple[float, float]:
        """Shares of all callers (answered within ``target_seconds``, abandoned within it).

        A caller arriving to find k callers waiting moves up at rate N mu + j theta
        with j callers still ahead (first come, first served), is answered on reaching
        the head, and abandons at rate theta meanwhile. That chain is run for
        ``target_seconds`` from the arrivals' view of the line (PASTA), by uniformization
        in slices short enough for the Poisson weights to stay in range.
        """
        agents = self.agents
        service = agents / self.handle_seconds
        abandon = 1.0 / self.patience_seconds
        waiting = list(self.probabilities[agents:])  # waiting[k]: k callers still ahead
        answered, abandoned = sum(self.probabilities[:agents]), 0.0  # those never wait
        uniform_rate = service + len(waiting) * abandon
        moves = [(service + k * abandon) / uniform_rate for k in range(len(waiting))]
        leave = abandon / uniform_rate
        slices = max(1, math.ceil(uniform_rate * target_seconds / 10.0))
        step = uniform_rate * target_seconds / slices  # expected jumps per slice, <= 10
        terms = int(step + 10 * math.sqrt(step) + 20)
        for _ in range(slices):
            vector, served, gone = waiting, answered, abandoned
            weight = math.exp(-step)
            waiting = [weight * mass for mass in vector]
            answered, abandoned = weight * served, weight * gone
            for m in range(1, terms + 1):
                following = [0.0] * len(vector)
                for k, mass in enumerate(vector):
                    if mass:
                        move = mass * moves[k]
                        if k:
                            following[k - 1] += move
                        else:
                            served += move
                        gone += mass * leave
                        following[k] += mass - move - mass * leave
                vector = following
                weight *= step / m
                for k, mass in enumerate(vector):
                    waiting[k] += weight * mass
                answered += weight * served
                abandoned += weight * gone
        return answered, abandoned

    def service_level(self, target_seconds: float,
                      definition: str = "short_abandons_excluded") -> float:
        """The service level under one of the router's definitions (see
        ``router.ServiceLevelDefinition``); every caller is answered or abandons."""
        met, abandoned_within = self.within(target_seconds)
        abandoned = self.abandon_probability
        if definition == "abandons_missed":
            return met
        if definition == "short_abandons_met":
            return met + abandoned_within
        if definition == "abandons_excluded":
            return met / (1.0 - abandoned)
        return met / (1.0 - abandoned_within)


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
        probabilities=tuple(probabilities),
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
