"""Prometheus metrics of the SIP edge's protection: throttled messages, failed logins,
blocked sources and stream connections (fed from the SIP events (events.sip) like TelephonyMetrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from events import (
    EventBus,
    SipAuthenticationFailed,
    SipConnectionClosed,
    SipConnectionRefused,
    SipMessageThrottled,
    SipSourceBlocked,
)


class ProtectionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.throttled = Counter("centralita_sip_messages_throttled",
                                 "SIP messages stopped by per-source protection (dropped, or 403 when blocked)",
                                 ["reason", "transport"], registry=r)
        self.auth_failures = Counter("centralita_sip_auth_failures", "Wrong digest responses",
                                     ["method"], registry=r)
        for method in ("REGISTER", "INVITE"):  # exported as 0, so rate() sees the first one
            self.auth_failures.labels(method)
        self.blocks = Counter("centralita_sip_source_blocks", "Sources blocked for a while",
                              ["reason"], registry=r)
        self.blocked_sources = Gauge("centralita_sip_blocked_sources", "Sources blocked now", registry=r)
        self.connections_refused = Counter("centralita_sip_connections_refused",
                                           "TCP/TLS connections refused over a connection cap",
                                           ["reason", "transport"], registry=r)
        self.connections_closed = Counter("centralita_sip_connections_closed",
                                          "TCP/TLS connections closed by the server for their behaviour",
                                          ["reason", "transport"], registry=r)
        self.connections = Gauge("centralita_sip_connections", "Open TCP/TLS connections",
                                 ["transport"], registry=r)

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(lambda e: self.throttled.labels(e.reason, e.transport).inc(), SipMessageThrottled)
        bus.subscribe(lambda e: self.auth_failures.labels(e.method).inc(), SipAuthenticationFailed)
        bus.subscribe(lambda e: self.blocks.labels(e.reason).inc(), SipSourceBlocked)
        bus.subscribe(lambda e: self.connections_refused.labels(e.reason, e.transport).inc(),
                      SipConnectionRefused)
        bus.subscribe(lambda e: self.connections_closed.labels(e.reason, e.transport).inc(),
                      SipConnectionClosed)

    def sample(self, *, blocked_sources: int, connections: dict[str, int]) -> None:
        self.blocked_sources.set(blocked_sources)
        for transport in ("TCP", "TLS"):
            self.connections.labels(transport).set(connections.get(transport, 0))
