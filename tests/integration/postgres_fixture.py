"""A real PostgreSQL for tests: the one configured, the local one, or a private one we start.

Use from a test module by binding the fixtures to module names (``tests/conftest.py``
puts ``tests/`` on ``sys.path``)::

    from integration import postgres_fixture

    postgres_server = postgres_fixture.postgres_server
    postgres_url = postgres_fixture.postgres_url

* ``postgres_server`` (session): a reachable server. It is the one named by
  ``CENTRALITA_TEST_POSTGRES_URL`` (an admin URL such as
  ``postgresql://postgres@127.0.0.1:5432/postgres``), else 127.0.0.1:5432 as user
  postgres; when that does not answer, a private server is initialised with
  Debian's ``initdb`` in a temporary folder on a free port (as user ``postgres``
  when running as root) and stopped afterwards. When none of that works the
  tests are skipped with the reason, or fail when ``CI=true``.
* ``postgres_url`` (session): a fresh database ``centralita_test_<random>`` on it,
  as a SQLAlchemy ``postgresql+asyncpg`` URL, dropped at the end of the session.
* ``fresh_postgres_database(server)``: an async context manager giving a new
  database per test, for tests that need an empty one (migrations).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

POSTGRES_URL_VARIABLE = "CENTRALITA_TEST_POSTGRES_URL"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5432
DEFAULT_USER = "postgres"
POSTGRES_BIN_DIRS = ("/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin")
SERVICE_USER = "postgres"


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str | None = None
    private: bool = False

    def dsn(self, database: str) -> str:
        """An asyncpg/libpq DSN for ``database``."""
        credentials = self.user if self.password is None else f"{self.user}:{self.password}"
        return f"postgresql://{credentials}@{self.host}:{self.port}/{database}"

    def url(self, database: str) -> str:
        """A SQLAlchemy URL (asyncpg driver) for ``database``."""
        return self.dsn(database).replace("postgresql://", "postgresql+asyncpg://", 1)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _unavailable(reason: str) -> None:
    """Fail in CI, where PostgreSQL is part of the contract; elsewhere skip, saying why."""
    if _in_ci():
        pytest.fail(f"PostgreSQL is required when CI=true: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL unavailable: {reason}")


def _configured_server() -> PostgresServer:
    configured = os.environ.get(POSTGRES_URL_VARIABLE)
    if not configured:
        return PostgresServer(DEFAULT_HOST, DEFAULT_PORT, DEFAULT_USER)
    parts = urlsplit(configured.replace("+asyncpg", ""))
    return PostgresServer(
        host=parts.hostname or DEFAULT_HOST,
        port=parts.port or DEFAULT_PORT,
        user=parts.username or DEFAULT_USER,
        password=parts.password,
    )


async def _answers(server: PostgresServer) -> str | None:
    """None when the server accepts a connection, else why not."""
    try:
        connection = await asyncpg.connect(server.dsn("postgres"), timeout=5)
    except (TimeoutError, OSError, asyncpg.PostgresError) as error:
        return f"{server.host}:{server.port}: {error}"
    await connection.close()
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((DEFAULT_HOST, 0))
        return int(probe.getsockname()[1])


def _postgres_bin() -> Path | None:
    for folder in POSTGRES_BIN_DIRS:
        if Path(folder, "initdb").exists() and Path(folder, "pg_ctl").exists():
            return Path(folder)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _as_service_user(command: list[str]) -> list[str]:
    # initdb refuses to run as root.
    if os.geteuid() == 0:
        return ["runuser", "-u", SERVICE_USER, "--", *command]
    return command


@contextmanager
def _private_server() -> Iterator[PostgresServer]:
    bin_dir = _postgres_bin()
    if bin_dir is None:
        _unavailable("no server answers and initdb/pg_ctl are not installed")
        raise AssertionError("unreachable")  # for type checkers: _unavailable raises
    root = Path(tempfile.mkdtemp(prefix="centralita-pg-"))
    data_dir = root / "data"
    log_file = root / "server.log"
    port = _free_port()
    if os.geteuid() == 0:
        shutil.chown(root, SERVICE_USER, SERVICE_USER)
    started = False
    try:
        try:
            subprocess.run(
                _as_service_user(
                    [str(bin_dir / "initdb"), "-D", str(data_dir), "-U", DEFAULT_USER,
                     "-A", "trust", "--no-sync", "-E", "UTF8"]
                ),
                check=True,
                capture_output=True,
            )
            options = (
                f"-p {port} -c listen_addresses={DEFAULT_HOST} -k {root} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            subprocess.run(
                _as_service_user(
                    [str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-l", str(log_file),
                     "-o", options, "-w", "-t", "60", "start"]
                ),
                check=True,
                capture_output=True,
            )
        except subprocess.CalledProcessError as error:
            log = log_file.read_text(errors="replace") if log_file.exists() else ""
            _unavailable(
                f"could not start a private server: {error.stderr.decode(errors='replace')} {log}"
            )
        started = True
        yield PostgresServer(DEFAULT_HOST, port, DEFAULT_USER, private=True)
    finally:
        if started:
            subprocess.run(
                _as_service_user(
                    [str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "stop"]
                ),
                check=False,
                capture_output=True,
            )
        shutil.rmtree(root, ignore_errors=True)


async def create_database(server: PostgresServer) -> str:
    """Create an empty database with a random name and return its name."""
    name = f"centralita_test_{secrets.token_hex(6)}"
    connection = await asyncpg.connect(server.dsn("postgres"))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return name


async def drop_database(server: PostgresServer, name: str) -> None:
    connection = await asyncpg.connect(server.dsn("postgres"))
    try:
        # FORCE ends sessions a failed test may have left open.
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@asynccontextmanager
async def fresh_postgres_database(server: PostgresServer) -> AsyncIterator[str]:
    """A new empty database for one test; yields its SQLAlchemy URL and drops it afterwards."""
    name = await create_database(server)
    try:
        yield server.url(name)
    finally:
        await drop_database(server, name)


@contextmanager
def locate_postgres() -> Iterator[PostgresServer]:
    """The configured or local server if it answers, else a private one for the duration."""
    server = _configured_server()
    if asyncio.run(_answers(server)) is None:
        yield server
        return
    with _private_server() as private:
        failure = asyncio.run(_answers(private))
        if failure is not None:
            _unavailable(f"the private server does not answer: {failure}")
        yield private


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with locate_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    name = asyncio.run(create_database(postgres_server))
    try:
        yield postgres_server.url(name)
    finally:
        with suppress(OSError, asyncpg.PostgresError):
            asyncio.run(drop_database(postgres_server, name))
