"""SQLModel tables: the current shape of the schema.

The migration steps in ``pbx.store.migrations`` create and evolve these tables;
``tests/unit/test_store_migrations.py`` checks that a fully migrated database
matches the models declared here, so the two cannot drift apart silently.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

# JSONB on PostgreSQL (indexable, compact); JSON text elsewhere.
JSON_DOCUMENT = sa.JSON().with_variant(JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


class SiteRow(SQLModel, table=True):
    __tablename__ = "sites"

    name: str = Field(primary_key=True)
    timezone: str = Field(default="UTC")
    healthy: bool = Field(default=True)
    # {"weekly": {"mon-fri": "08:00-20:00"}, "holidays": [...]}; NULL: always open.
    business_hours: dict[str, Any] | None = Field(default=None, sa_type=JSON_DOCUMENT)


class SkillRow(SQLModel, table=True):
    __tablename__ = "skills"

    name: str = Field(primary_key=True)
    description: str = Field(default="")


# An agent's and a queue's rows hold router.AgentProfile's and router.QueueConfig's fields,
# but the skills, which have tables of their own (agents are found by skill);
# tests/unit/test_one_model_per_concept.py keeps them in step.
class AgentRow(SQLModel, table=True):
    __tablename__ = "agents"
    __table_args__ = (sa.Index("ix_agents_site", "site"),)

    extension: str = Field(primary_key=True)
    name: str
    site: str = Field(foreign_key="sites.name")
    languages: list[str] = Field(default_factory=list, sa_type=JSON_DOCUMENT)
    capacity: int = Field(default=1)
    active: bool = Field(default=True)


class AgentSkillRow(SQLModel, table=True):
    __tablename__ = "agent_skills"
    __table_args__ = (
        sa.CheckConstraint("proficiency BETWEEN 1 AND 10", name="ck_agent_skills_proficiency"),
        sa.Index("ix_agent_skills_skill", "skill", "proficiency"),
    )

    agent: str = Field(foreign_key="agents.extension", primary_key=True, ondelete="CASCADE")
    skill: str = Field(foreign_key="skills.name", primary_key=True)
    proficiency: int


class QueueRow(SQLModel, table=True):
    __tablename__ = "queues"

    name: str = Field(primary_key=True)
    language: str | None = None
    sla_seconds: float
    sla_percent: float
    strategy: str
    wrap_up_seconds: float
    ring_timeout_seconds: float
    max_wait_seconds: float | None = None
    overflow: str | None = None
    announce_interval_seconds: float
    preferred_agent_wait_seconds: float
    aging_weight: float
    priority_order: str = "aging"
    preferred_agent_max_hold_seconds: float | None = None
    service_level_definition: str = "short_abandons_excluded"
    # [{"after_seconds": 30, "skills": {"billing": 3}}, ...]: read whole, never queried into.
    expansion: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON_DOCUMENT)
    # Other sites whose agents may take the queue's calls (["any"]: every site).
    sites: list[str] = Field(default_factory=list, sa_type=JSON_DOCUMENT)
    sites_after_seconds: float = 0


class QueueSkillRow(SQLModel, table=True):
    __tablename__ = "queue_skills"
    __table_args__ = (
        sa.CheckConstraint(
            "min_proficiency BETWEEN 1 AND 10", name="ck_queue_skills_min_proficiency"
        ),
    )

    queue: str = Field(foreign_key="queues.name", primary_key=True, ondelete="CASCADE")
    skill: str = Field(foreign_key="skills.name", primary_key=True)
    min_proficiency: int


class CustomerRow(SQLModel, table=True):
    __tablename__ = "customers"
    __table_args__ = (
        sa.CheckConstraint("tier IN ('vip', 'paid', 'free')", name="ck_customers_tier"),
    )

    number: str = Field(primary_key=True)
    name: str = Field(default="")
    tier: str = Field(default="free")
    language: str | None = None
    preferred_agent: str | None = None
    last_agent: str | None = None
    notes: str = Field(default="", sa_type=sa.Text)


class CallRecordRow(SQLModel, table=True):
    __tablename__ = "call_records"
    __table_args__ = (
        sa.Index("ix_call_records_call_id", "call_id"),
        sa.Index("ix_call_records_started", "started"),
        sa.Index("ix_call_records_queue_started", "queue", "started"),
        sa.Index("ix_call_records_agent_started", "agent", "started"),
    )

    id: int | None = Field(default=None, primary_key=True)
    call_id: str
    caller: str
    callee: str
    started: datetime = Field(sa_type=TIMESTAMP)
    answered: datetime | None = Field(default=None, sa_type=TIMESTAMP)
    ended: datetime | None = Field(default=None, sa_type=TIMESTAMP)
    queue: str | None = None
    agent: str | None = None
    disposition: str = Field(default="")
    ivr_path: list[str] = Field(default_factory=list, sa_type=JSON_DOCUMENT)
    wait_seconds: float | None = None
    talk_seconds: float | None = None
    site: str | None = None
    origin_call_id: str | None = None  # a callback call's: the call the customer asked from
    callback_request_id: str | None = None  # a callback call's: its request


class QueueLogRow(SQLModel, table=True):
    __tablename__ = "queue_log"
    __table_args__ = (
        sa.Index("ix_queue_log_time", "time"),
        sa.Index("ix_queue_log_call_id", "call_id"),
        sa.Index("ix_queue_log_queue_time", "queue", "time"),
    )

    id: int | None = Field(default=None, primary_key=True)
    time: datetime = Field(sa_type=TIMESTAMP)
    call_id: str
    queue: str | None = None
    agent: str | None = None
    event: str
    data: dict[str, Any] = Field(default_factory=dict, sa_type=JSON_DOCUMENT)


class RegistrationRow(SQLModel, table=True):
    """A phone's registration binding, so a restart finds the phone where it was."""

    __tablename__ = "registrations"
    __table_args__ = (sa.Index("ix_registrations_expires_at", "expires_at"),)

    user: str = Field(primary_key=True)
    contact_uri: str = Field(primary_key=True)
    contact: str  # the whole Contact value, parameters included
    expires_at: datetime = Field(sa_type=TIMESTAMP)
    call_id: str
    cseq: int = Field(sa_type=sa.BigInteger)
    source_host: str
    source_port: int
    transport: str
    user_agent: str | None = None
    # The REGISTER's Path values (RFC 3327), the Route toward the phone; null: none.
    path: list[str] | None = Field(default=None, sa_type=JSON_DOCUMENT)


class LiveCallRow(SQLModel, table=True):
    """A call in progress: written when it starts, deleted when its record is written."""

    __tablename__ = "live_calls"

    call_id: str = Field(primary_key=True)
    caller: str
    callee: str
    kind: str | None = None
    started: datetime = Field(sa_type=TIMESTAMP)
    answered: datetime | None = Field(default=None, sa_type=TIMESTAMP)  # by an agent, when queued
    queue: str | None = None
    agent: str | None = None
    site: str | None = None
    priority: int | None = None  # in the queue (when waiting)
    enqueued_at: datetime | None = Field(default=None, sa_type=TIMESTAMP)  # original, kept across transfers


class InterruptedWaitRow(SQLModel, table=True):
    """A caller who was waiting in a queue when their site died: their place, kept for a while
    so that calling again puts them back with their priority and original enqueue time."""

    __tablename__ = "interrupted_waits"
    __table_args__ = (sa.Index("ix_interrupted_waits_number_queue", "number", "queue", "interrupted_at"),)

    call_id: str = Field(primary_key=True)
    number: str
    queue: str
    priority: int
    enqueued_at: datetime = Field(sa_type=TIMESTAMP)
    site: str | None = None
    interrupted_at: datetime = Field(sa_type=TIMESTAMP)


class CallDetailsRow(SQLModel, table=True):
    """A finished call's routing decisions, IVR path and screen-pop context, for the API."""

    __tablename__ = "call_details"
    __table_args__ = (sa.Index("ix_call_details_call_id", "call_id"),)

    id: int | None = Field(default=None, primary_key=True)
    call_id: str
    ended: datetime = Field(sa_type=TIMESTAMP)
    routing: list[dict[str, Any]] | None = Field(default=None, sa_type=JSON_DOCUMENT)
    ivr: dict[str, Any] | None = Field(default=None, sa_type=JSON_DOCUMENT)
    context: dict[str, Any] | None = Field(default=None, sa_type=JSON_DOCUMENT)


# The states in which a callback request is still active (callbacks.ACTIVE_STATES):
# at most one active request per number and queue.
ACTIVE_CALLBACK = sa.text("state IN ('pending', 'dialing')")


class CallbackRequestRow(SQLModel, table=True):
    """A callback request (``callbacks.CallbackRequest``), leased by the site that owns it."""

    __tablename__ = "callback_requests"
    __table_args__ = (
        sa.CheckConstraint(
            "state IN ('pending', 'dialing', 'completed', 'failed', 'expired', 'cancelled')",
            name="ck_callback_requests_state"),
        sa.Index("ix_callback_requests_state_earliest", "state", "earliest_at"),
        sa.Index("ix_callback_requests_site_lease", "site", "lease_expires_at"),
        sa.Index("ix_callback_requests_queue_requested", "queue", "requested_at"),
        sa.Index("ux_callback_requests_active_number", "number", "queue", unique=True,
                 sqlite_where=ACTIVE_CALLBACK, postgresql_where=ACTIVE_CALLBACK),
    )

    id: str = Field(primary_key=True)
    number: str
    queue: str
    priority: int
    requested_at: datetime = Field(sa_type=TIMESTAMP)
    earliest_at: datetime = Field(sa_type=TIMESTAMP)
    expires_at: datetime = Field(sa_type=TIMESTAMP)
    state: str
    attempts: int
    # [{"at": iso, "outcome": "busy", "site": "madrid", "detail": ""}, ...]: read whole.
    history: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON_DOCUMENT)
    origin_call_id: str | None = None
    site: str
    lease_expires_at: datetime = Field(sa_type=TIMESTAMP)
    version: int = Field(sa_type=sa.BigInteger)


STORE_TABLES: tuple[type[SQLModel], ...] = (
    SiteRow,
    SkillRow,
    AgentRow,
    AgentSkillRow,
    QueueRow,
    QueueSkillRow,
    CustomerRow,
    CallRecordRow,
    QueueLogRow,
    RegistrationRow,
    LiveCallRow,
    CallDetailsRow,
    CallbackRequestRow,
    InterruptedWaitRow,
)
