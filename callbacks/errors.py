"""Errors of the callback domain; each message names the request involved."""

from __future__ import annotations


class CallbackError(Exception):
    """Base class of every refusal from the callback domain."""


class IllegalTransition(CallbackError):
    """The request's state does not allow that step (see ``callbacks.requests.TRANSITIONS``)."""


class LeaseHeld(CallbackError):
    """Another site holds a live lease on the request."""


class NotDue(CallbackError):
    """The request is not due at that time (before its earliest time, or past its expiry)."""


class CallbackConflict(CallbackError):
    """The stored request changed since it was read (another site or task wrote it first)."""
