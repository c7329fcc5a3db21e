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

Caller EWT (a specific waiting caller at 1-based position p): with N agents each
finishing a call every AHT seconds on average (exponential), one of them frees
up every AHT / N seconds, so the caller at position p waits about
``p * AHT / N``. With no staffed agent the estimate is None (unknown).
"""

from __future__ import annotations

from collections import deque


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
