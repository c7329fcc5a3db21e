"""Durable data in SQL (SQLite by default, PostgreSQL across sites) through SQLModel."""

from pbx.store.engine import create_store_engine
from pbx.store.errors import (
    AlreadyExists,
    ConstraintViolation,
    InUse,
    MigrationError,
    MissingReference,
    NotFound,
    StoreError,
)
from pbx.store.migrations import MIGRATIONS, Migration, migrate, schema_version
from pbx.store.records import (
    AgentRecord,
    CallDetails,
    CallRecord,
    CustomerRecord,
    CustomerTier,
    InterruptedWait,
    LastAgent,
    LiveCallRecord,
    QueueLogEntry,
    RegistrationRecord,
    SeedReport,
    SiteRecord,
    SkillRecord,
)
from pbx.store.store import MAX_PAGE_SIZE, Store

__all__ = [
    "MAX_PAGE_SIZE",
    "MIGRATIONS",
    "AgentRecord",
    "AlreadyExists",
    "CallDetails",
    "CallRecord",
    "ConstraintViolation",
    "CustomerRecord",
    "CustomerTier",
    "InUse",
    "InterruptedWait",
    "LastAgent",
    "Migration",
    "MigrationError",
    "MissingReference",
    "NotFound",
    "LiveCallRecord",
    "QueueLogEntry",
    "RegistrationRecord",
    "SeedReport",
    "SiteRecord",
    "SkillRecord",
    "Store",
    "StoreError",
    "create_store_engine",
    "migrate",
    "schema_version",
]
