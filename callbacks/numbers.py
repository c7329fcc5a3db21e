"""Checking the number a customer wants to be called back on.

A number is kept as dialable digits with an optional leading ``+`` (E.164 style).
Spaces, dashes, dots and parentheses are how people write numbers, so they are
dropped; anything else is refused with a reason the API returns in its 400 and
the IVR turns into a prompt (by ``NumberProblem``).
"""

from __future__ import annotations

from enum import StrEnum

# E.164 allows at most 15 digits; fewer than 3 cannot reach anyone (even "112" is 3).
MIN_DIGITS = 3
MAX_DIGITS = 15
_SEPARATORS = frozenset(" -.()/\t")


class NumberProblem(StrEnum):
    EMPTY = "empty"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    LETTERS = "letters"
    SYMBOLS = "symbols"


class InvalidNumber(ValueError):
    """A callback number that cannot be dialled; ``problem`` says why, the message says it to people."""

    def __init__(self, problem: NumberProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem
        self.reason = message


def normalize_number(raw: str) -> str:
    """The dialable form of ``raw`` (digits, optionally a leading ``+``), or ``InvalidNumber``."""
    text = raw.strip()
    if not text:
        raise InvalidNumber(NumberProblem.EMPTY, "the callback number is empty")
    plus = text.startswith("+")
    body = [char for char in text[1:] if char not in _SEPARATORS] if plus else [
        char for char in text if char not in _SEPARATORS]
    letters = [char for char in body if char.isalpha()]
    if letters:
        raise InvalidNumber(NumberProblem.LETTERS,
                            f"the callback number contains letters ({''.join(letters[:5])!r}); "
                            "use digits only")
    others = [char for char in body if not (char.isascii() and char.isdigit())]
    if others:
        raise InvalidNumber(NumberProblem.SYMBOLS,
                            f"the callback number contains {''.join(others[:5])!r}; use digits only, "
                            "with an optional leading +")
    if not body:
        raise InvalidNumber(NumberProblem.EMPTY, "the callback number has no digits")
    if len(body) < MIN_DIGITS:
        raise InvalidNumber(NumberProblem.TOO_SHORT,
                            f"the callback number has {len(body)} digits; at least {MIN_DIGITS} are needed")
    if len(body) > MAX_DIGITS:
        raise InvalidNumber(NumberProblem.TOO_LONG,
                            f"the callback number has {len(body)} digits; at most {MAX_DIGITS} are allowed")
    return ("+" if plus else "") + "".join(body)
