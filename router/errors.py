"""Errors raised by the router facade; every message names the agent, queue or call involved."""

from __future__ import annotations


class RouterError(Exception):
    """Base class for every error the router raises on bad input or an impossible request."""


class InvalidArgument(RouterError, ValueError):
    """An argument is outside the values the router accepts (e.g. an unknown failure reason)."""


class InvalidConfig(InvalidArgument):
    """A profile or queue configuration is out of range or inconsistent."""


class UnknownAgent(RouterError, KeyError):
    def __init__(self, extension: str) -> None:
        super().__init__(f"unknown agent {extension!r}")
        self.extension = extension

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class UnknownQueue(RouterError, KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown queue {name!r}")
        self.name = name

    def __str__(self) -> str:
        return str(self.args[0])


class UnknownCall(RouterError, KeyError):
    def __init__(self, call_id: str) -> None:
        super().__init__(f"unknown call {call_id!r}")
        self.call_id = call_id

    def __str__(self) -> str:
        return str(self.args[0])


class UnknownReservation(RouterError, KeyError):
    """The reservation was never made, or it already ended (answered, failed, expired)."""

    def __init__(self, reservation_id: str) -> None:
        super().__init__(f"unknown or finished reservation {reservation_id!r}")
        self.reservation_id = reservation_id

    def __str__(self) -> str:
        return str(self.args[0])


class DuplicateCall(RouterError):
    """A call id is already known to the router (waiting, offered or connected)."""


class InvalidTransition(RouterError):
    """The requested agent state change is not allowed from the agent's current state."""


class QueueInUse(RouterError):
    """A queue cannot be removed while calls wait in it or are being offered from it."""


class AgentBusy(RouterError):
    """An agent cannot be removed while it holds a reservation or a call."""
