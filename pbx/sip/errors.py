"""Errors raised by the sans-I/O SIP layer."""

from __future__ import annotations


class SipParseError(ValueError):
    """A message or header that does not follow RFC 3261's grammar.

    `reason` is short enough to be the reason phrase of the 400 the server
    answers with; `status` is the code to answer with (400 unless a more
    precise one exists, such as 505 for an unknown SIP version).
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
