"""A queue's rules for its callbacks: how often to try, how long to wait between tries, when to give up."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


class InvalidPolicy(ValueError):
    """A callback policy whose numbers make no sense (no attempts, a negative delay, ...)."""


@dataclass(frozen=True)
class CallbackPolicy:
    """``max_attempts`` calls to the customer at most; after a failed try the next waits
    ``retry_delay``, multiplied by ``backoff`` for each earlier retry, never more than
    ``max_retry_delay``. A request not completed ``expiry`` after its earliest time expires."""

    max_attempts: int = 3
    retry_delay: timedelta = timedelta(minutes=2)
    backoff: float = 2.0
    max_retry_delay: timedelta = timedelta(hours=1)
    expiry: timedelta = timedelta(hours=24)

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) \
                or self.max_attempts < 1:
            raise InvalidPolicy(f"max_attempts must be an integer >= 1, got {self.max_attempts!r}")
        if self.retry_delay <= timedelta(0):
            raise InvalidPolicy(f"retry_delay must be positive, got {self.retry_delay}")
        if not self.backoff >= 1.0:  # also refuses NaN
            raise InvalidPolicy(f"backoff must be >= 1, got {self.backoff!r}")
        if self.max_retry_delay < self.retry_delay:
            raise InvalidPolicy(
                f"max_retry_delay ({self.max_retry_delay}) is shorter than retry_delay ({self.retry_delay})")
        if self.expiry <= timedelta(0):
            raise InvalidPolicy(f"expiry must be positive, got {self.expiry}")

    def delay_before_retry(self, retry: int) -> timedelta:
        """The wait before retry number ``retry`` (1 for the first retry)."""
        if retry < 1:
            raise ValueError(f"retry numbers start at 1, got {retry}")
        try:
            seconds = self.retry_delay.total_seconds() * self.backoff ** (retry - 1)
        except OverflowError:
            return self.max_retry_delay
        if seconds >= self.max_retry_delay.total_seconds():
            return self.max_retry_delay
        return timedelta(seconds=seconds)
