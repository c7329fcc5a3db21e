"""Estimated wait time (EWT).

Inputs, per queue:
- AHT, the average handle time: an exponentially weighted moving average of
  talk + wrap-up seconds of the queue's finished calls,
  ``aht <- aht + alpha * (sample - aht)``, seeded with a configured default
  until the first call finishes.
- lambda, the arrival rate: calls enqueued in the last ``window`` seconds divided
  by the window (or by the time since the first arrival when that is shorter).
- N, the staffed agents: logged in, reachable, at a healthy site, qualified for
  the queue, and not on break.

Queue EWT (what a caller arriving now should expect on average) is Erlang C
(M/M/N): with offered load A = lambda * AHT and N > A,

    P_wait = ErlangC(N, A)            (probability of having to wait)
    EWT    = P_wait * AHT / (N - A)   (mean wait over all callers)

When the queue is overloaded (N <= A) Erlang C has no steady state; the
estimate then falls back to the position-based one for a caller joining the end
of the line.

Caller EWT (a specific waiting caller at 1-based position p) counts only the
agents who can take THAT call (language, skills), and follows their calls in
progress so the estimate moves with the line even before any call has finished:
each such agent is free in ``r_i`` seconds,

    r_i = 0                                   if free,
    r_i = wrap-up time left                   if in wrap-up,
    r_i = max(AHT - handling so far, AHT/10)  if reserved, ringing or talking,

and, after each release, is busy for another AHT. The caller at position p is
served at the p-th release: ``release_wait``. (With every agent busy on a fresh
call this is about ``p * AHT / N`` like the plain position estimate.) With no
staffed agent the estimate is None (unknown).

Worked example: AHT 180 s, two qualified agents 60 s and 150 s into their calls,
a caller at position 2. Releases: 180-150 = 30 s, then 180-60 = 120 s, so the
EWT is 120 s; ten seconds later it is 110 s.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable

MAX_RELEASES_SIMULATED = 1000  # a caller further back hears the estimate for this position


def erlang_b(servers: int, load: float) -> float:
    """Blocking probability, by the numerically stable recursion B(n) = A B(n-1) / (n + A B(n-1))."""
    blocking = 1.0
    for n in range(1, servers + 1):
        blocking = load * blocking / (n + load * blocking)
    return blocking


def erlang_c(servers: int, load: float) -> float:
    """Probability that a call has to wait, for ``servers`` agents and ``load`` Erlangs.

    Returns 1.0 when the system is overloaded (servers <= load).
    """
    if servers <= 0 or load >= servers:
        return 1.0
    if load <= 0:
        return 0.0
    blocking = erlang_b(servers, load)
    return servers * blocking / (servers - load * (1.0 - blocking))


def erlang_c_wait(servers: int, arrivals_per_second: float, handle_seconds: float) -> float | None:
    """Mean wait in an M/M/N queue, or None when it has no steady state."""
    load = arrivals_per_second * handle_seconds
    if servers <= 0 or load >= servers:
        return None
    return erlang_c(servers, load) * handle_seconds / (servers - load)


def position_wait(position: int, servers: int, handle_seconds: float) -> float | None:
    """Wait of the caller at 1-based ``position``: one agent frees every AHT / N seconds."""
    if servers <= 0:
        return None
    return position * handle_seconds / servers


def remaining_handle(handling_for: float, handle_seconds: float) -> float:
    """Seconds until an agent ``handling_for`` seconds into a call is expected free."""
    return max(handle_seconds - handling_for, handle_seconds / 10)


def release_wait(position: int, free_in: Iterable[float], handle_seconds: float) -> float | None:
    """Wait of the caller at 1-based ``position``, given when each qualified agent is next free."""
    releases = list(free_in)
    if not releases:
        return None
    heapq.heapify(releases)
    release = 0.0
    for _ in range(max(1, min(position, MAX_RELEASES_SIMULATED))):
        release = heapq.heappop(releases)
        heapq.heappush(releases, release + handle_seconds)
    return release


class HandleTimeAverage:
    """Exponentially weighted average of talk + wrap-up seconds."""

    def __init__(self, initial_seconds: float, smoothing: float) -> None:
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self.seconds = initial_seconds
        self.samples = 0
        self._smoothing = smoothing

    def observe(self, handle_seconds: float) -> None:
        if self.samples == 0:
            self.seconds = handle_seconds  # the seed is a guess; the first sample is not
        else:
            self.seconds += self._smoothing * (handle_seconds - self.seconds)
        self.samples += 1


class ArrivalRate:
    """Arrivals per second over a sliding window of ``window_seconds``."""

    def __init__(self, window_seconds: float) -> None:
        self._window = window_seconds
        self._arrivals: deque[float] = deque()
        self._first_arrival: float | None = None

    def observe(self, now: float) -> None:
        if self._first_arrival is None:
            self._first_arrival = now
        self._arrivals.append(now)
        self._forget_before(now - self._window)

    def per_second(self, now: float) -> float:
        self._forget_before(now - self._window)
        if not self._arrivals or self._first_arrival is None:
            return 0.0
        # A router that started a minute ago must not divide a minute of arrivals by the whole window.
        span = min(self._window, max(now - self._first_arrival, 1.0))
        return len(self._arrivals) / span

    def _forget_before(self, horizon: float) -> None:
        arrivals = self._arrivals
        while arrivals and arrivals[0] < horizon:
            arrivals.popleft()
