"""The ``sip.protection`` section: the per-source limits the SIP edge applies
(``pbx.edge.protection`` says what each one does)."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator, Field

from settings.validation import ListOf, Section, Text


def _network(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP network like 10.0.0.0/8") from None


class ProtectionSettings(Section):
    """The ``sip.protection`` section; see the module docstring for what each limit does."""

    enabled: bool = True
    trusted: ListOf[Annotated[Text, AfterValidator(_network)]] = ("127.0.0.0/8", "::1/128")
    requests_per_second: float = Field(50.0, ge=1, le=1_000_000)
    request_burst: int = Field(100, ge=1, le=1_000_000)
    invites_per_second: float = Field(10.0, ge=0.1, le=1_000_000)
    invite_burst: int = Field(20, ge=1, le=1_000_000)
    flood_block_after: int = Field(200, ge=1, le=10_000_000)
    auth_failures: int = Field(10, ge=1, le=100_000)
    auth_window: float = Field(60.0, ge=1, le=86400)
    block_seconds: float = Field(300.0, ge=1, le=7 * 86400)
    max_sources: int = Field(100_000, ge=100, le=10_000_000)
