"""Shipped IVR flows (YAML data; this file makes them package data)."""
