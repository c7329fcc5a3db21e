"""The last routing decisions of each call, kept for ``Router.explain`` for a while after
the call leaves the router. Bounded three ways: decisions per call, calls kept, and the
age of calls gone (counted from when ``forget_old`` first saw them gone)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container

from router.explanations import Decision, LazyDecision


class DecisionLog:
    def __init__(self, per_call: int, calls_kept: int, max_age_seconds: float) -> None:
        self._per_call = per_call
        self._calls_kept = calls_kept
        self._max_age = max_age_seconds
        # Per call, its last decisions (a tuple: a bounded deque reserves room for 64), each
        # made a record when first read.
        self._decisions: OrderedDict[str, tuple[LazyDecision, ...]] = OrderedDict()
        self._released: dict[str, float] = {}  # call -> when first seen out of the router

    def __len__(self) -> int:
        """How many calls' decisions are kept."""
        return len(self._decisions)

    def of(self, call_id: str) -> tuple[Decision, ...] | None:
        kept = self._decisions.get(call_id)
        return None if kept is None else tuple(decision.get() for decision in kept)

    def remember(self, decision: LazyDecision) -> None:
        call_id = decision.call_id
        decisions = self._decisions
        kept = decisions.pop(call_id, ())
        self._released.pop(call_id, None)
        if len(kept) >= self._per_call:
            kept = kept[len(kept) - self._per_call + 1 :]
        decisions[call_id] = (*kept, decision)
        while len(decisions) > self._calls_kept:
            oldest, _ = decisions.popitem(last=False)
            self._released.pop(oldest, None)

    def forget_old(self, now: float, live_calls: Container[str]) -> int:
        """Drop the decisions of calls out of ``live_calls`` for the max age or more;
        returns how many calls went."""
        cutoff = now - self._max_age
        decisions, released = self._decisions, self._released
        dropped = 0
        for _ in range(len(decisions)):
            call_id = next(iter(decisions))
            if call_id in live_calls:
                decisions.move_to_end(call_id)  # still in the router: look past it
                continue
            at = released.get(call_id)
            if at is None:
                released[call_id] = now
                decisions.move_to_end(call_id)
            elif at <= cutoff:
                del decisions[call_id]
                del released[call_id]
                dropped += 1
            else:
                break  # everything behind left later, or is not stamped yet
        return dropped
