"""The site bus: agent state, site liveness and reservations shared between sites.

Topic layout and payloads: ``pbx/bus/README.md``. The door is :class:`SiteBus`;
:class:`InProcessSiteBus` is the embedded default, :class:`MqttSiteBus` the one
across hosts.
"""

from events.sites import BusConnected, BusDisconnected, RemoteAgentChanged, SiteDown, SiteUp
from pbx.bus.codec import (
    AgentPresence,
    AgentState,
    BadMessage,
    CallerContext,
    Forced,
    ReservationCancel,
    ReservationOutcome,
    ReservationRequest,
)
from pbx.bus.in_process import InProcessBroker, InProcessSiteBus
from pbx.bus.mqtt import MqttSiteBus
from pbx.bus.site_bus import ReservationDecision, ReservationResult, SiteBus
from pbx.bus.topics import Topics

# Both implementations are the door (checked by mypy).
IMPLEMENTATIONS: tuple[type[SiteBus], ...] = (InProcessSiteBus, MqttSiteBus)

__all__ = [
    "AgentPresence", "AgentState", "BadMessage", "BusConnected", "BusDisconnected",
    "CallerContext", "Forced", "IMPLEMENTATIONS", "InProcessBroker", "InProcessSiteBus", "MqttSiteBus",
    "RemoteAgentChanged", "ReservationCancel", "ReservationDecision", "ReservationOutcome",
    "ReservationRequest", "ReservationResult", "SiteBus", "SiteDown", "SiteUp", "Topics",
]
