"""Domain events: everything that happens, as frozen dataclasses, defined once.

Every package may import this one; it imports nothing of ours (an import-linter contract
in pyproject.toml checks it). Publishers push events to a sink as they happen (usually
``EventBus.publish``); metrics, call records, screen-pops and the site bus consume them.
Every event carries ``at``, when it happened (wall-clock Unix seconds; ``events.event``).

Families: ``sip`` (messages, protection, registrations), ``calls`` (call legs and what a
queued caller goes through on the line), ``routing`` (the router's queues, agents and
sites), ``ivr`` (a caller's steps through a flow), ``sites`` (the site bus), ``callbacks``
(callback requests: taken, tried, ended), ``drills`` (a site drained for a DR drill).
``bus`` is the in-process fan-out; ``recent_calls`` the bounded per-call memory its consumers keep.
"""

from events.bus import (
    EventBus,
)
from events.callbacks import (
    CallbackEnded,
    CallbackOfferAnswered,
    CallbackOffered,
    CallbackRequested,
    CallbacksAdopted,
    CallbacksPending,
    CallbackTryEnded,
    CallbackTryStarted,
)
from events.calls import (
    AgentOffered,
    AnnouncementPlayed,
    CallAnswered,
    CallEnded,
    CallLegTransitionRefused,
    CallStarted,
    CallTransferred,
    StaleCallsRepaired,
)
from events.event import (
    Event,
    EventSink,
)
from events.ivr import (
    CallDeflected,
    CallerIdentified,
    DigitReceived,
    EnqueueRequested,
    IvrFinished,
    IvrNodeEntered,
    IvrStarted,
    LanguageSelected,
    SelfServiceAnswered,
    SurveyScored,
    TransferRequested,
)
from events.recent_calls import (
    RecentCalls,
)
from events.routing import (
    AgentReserved,
    AgentRinging,
    AgentStateChanged,
    AnnouncementDue,
    CallAbandoned,
    CallDropped,
    CallExpanded,
    CallOverflowed,
    CallQueued,
    CallWithdrawn,
    QueueCallAnswered,
    QueueCallEnded,
    ReservationExpired,
    ReservationFailed,
    SiteHealthChanged,
    SiteOpeningChanged,
)
from events.sip import (
    RegistrationChanged,
    SipAuthenticationFailed,
    SipConnectionClosed,
    SipConnectionRefused,
    SipMessageRejected,
    SipMessageThrottled,
    SipRequestReceived,
    SipResponseSent,
    SipSourceBlocked,
)
from events.sites import (
    AgentPresence,
    BusConnected,
    BusDisconnected,
    ForeignReservation,
    RemoteAgentChanged,
    SiteDown,
    SiteUp,
)

__all__ = [
    "AgentOffered",
    "AgentPresence",
    "AgentReserved",
    "AgentRinging",
    "AgentStateChanged",
    "AnnouncementDue",
    "AnnouncementPlayed",
    "BusConnected",
    "BusDisconnected",
    "CallAbandoned",
    "CallbackEnded",
    "CallbackOfferAnswered",
    "CallbackOffered",
    "CallbackRequested",
    "CallbackTryEnded",
    "CallbackTryStarted",
    "CallbacksAdopted",
    "CallbacksPending",
    "CallAnswered",
    "CallDeflected",
    "CallDropped",
    "CallWithdrawn",
    "CallEnded",
    "CallLegTransitionRefused",
    "CallExpanded",
    "CallOverflowed",
    "CallQueued",
    "CallStarted",
    "CallTransferred",
    "CallerIdentified",
    "DigitReceived",
    "EnqueueRequested",
    "Event",
    "EventBus",
    "EventSink",
    "IvrFinished",
    "IvrNodeEntered",
    "IvrStarted",
    "LanguageSelected",
    "QueueCallAnswered",
    "QueueCallEnded",
    "RecentCalls",
    "RegistrationChanged",
    "ForeignReservation",
    "RemoteAgentChanged",
    "ReservationExpired",
    "ReservationFailed",
    "SelfServiceAnswered",
    "SipAuthenticationFailed",
    "SipConnectionClosed",
    "SipConnectionRefused",
    "SipMessageRejected",
    "SipMessageThrottled",
    "SipRequestReceived",
    "SipResponseSent",
    "SipSourceBlocked",
    "SiteDown",
    "SiteHealthChanged",
    "SiteOpeningChanged",
    "SiteUp",
    "StaleCallsRepaired",
    "SurveyScored",
    "TransferRequested",
]
