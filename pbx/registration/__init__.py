"""Phones registering (RFC 3261 §10.3): the registrar and its bindings mirrored in the store."""
