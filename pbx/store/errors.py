"""Errors raised by the store; each message names the record involved."""

from __future__ import annotations


class StoreError(Exception):
    """Base class for every error the store raises on a request it cannot honour."""


class AlreadyExists(StoreError):
    """A create was asked for a key that is already taken."""


class NotFound(StoreError):
    """The record asked for does not exist."""


class MissingReference(StoreError):
    """A record refers to another one (a site, an overflow queue) that does not exist."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class InUse(StoreError):
    """A record cannot be deleted while others refer to it."""


class ConstraintViolation(StoreError):
    """The database refused a write (typically a race with another writer)."""


class MigrationError(StoreError):
    """The database schema is newer than this code, or a migration step failed."""
