"""Creating the async engine, with the per-backend settings the store relies on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# Execution option naming the BEGIN flavour for a SQLite connection ("IMMEDIATE" takes
# the write lock up front, so two processes migrating the same file serialise).
SQLITE_BEGIN_OPTION = "centralita_sqlite_begin"


def _ensure_sqlite_folder(url: sa.URL) -> None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @sa.event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The sqlite3 module would otherwise BEGIN only before DML, leaving DDL
        # (migrations) outside the transaction; we issue BEGIN ourselves below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA busy_timeout = 10000")
        cursor.close()

    @sa.event.listens_for(sync_engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        flavour = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {flavour}")


def create_store_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine for ``url`` (``sqlite+aiosqlite:///path`` or ``postgresql+asyncpg://...``).

    For a SQLite file, its folder is created; every SQLite connection enforces
    foreign keys and wraps DDL in real transactions.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in {"sqlite", "postgresql"}:
        raise ValueError(f"unsupported database URL {parsed!r}: use sqlite+aiosqlite or postgresql+asyncpg")
    if backend == "sqlite":
        _ensure_sqlite_folder(parsed)
        engine = create_async_engine(parsed, echo=echo)
        _install_sqlite_hooks(engine)
        return engine
    return create_async_engine(parsed, echo=echo, pool_pre_ping=True)
