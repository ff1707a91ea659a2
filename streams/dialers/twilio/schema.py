"""The ledger's database: its engine, its table as the queries see it, and its schema
migrations (Alembic, in `migrations/`).

`migrate(engine)` brings any ledger to the newest revision in one transaction
(PostgreSQL and SQLite both have transactional DDL), one process at a time on
PostgreSQL (an advisory lock). A ledger made by the hand-rolled steps this replaced (a
`schema_version` table, no `alembic_version`) is adopted: revisions 0001 and 0002 find
what those steps made and leave it. `alembic upgrade head` from the repository root does
the same by hand (alembic.ini; `DATABASE_URL` names the ledger).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Connection, make_url

from streams.errors import StreamsError

#: Where the Alembic revisions live.
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: Execution option marking a connection that only reads (SQLite: no write lock).
READ_ONLY = "ledger_read_only"
#: PostgreSQL advisory lock held while migrating: one migrating process at a time.
MIGRATION_LOCK = 4242001


class LedgerError(StreamsError):
    """The ledger cannot be used (unreachable, or a schema newer than this code)."""


metadata = MetaData()
#: `outbound_call_jobs` as the newest revision leaves it (a change is a new revision).
jobs = Table(
    "outbound_call_jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dial_id", String(255), nullable=False, unique=True),
    Column("lead_id", String(255), nullable=False),
    Column("business_id", String(255), nullable=False),
    Column("phone", String(32), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("dial_by", DateTime(timezone=True), nullable=False),
    Column("call_sid", String(64), unique=True),
    Column("status", String(16), nullable=False),
    Column("twilio_status", String(16)),
    Column("sequence", Integer),
    Column("error_code", Integer),
    Column("error_message", Text),
    Column("create_requests", Integer, nullable=False, default=0),
    Column("create_sent_at", DateTime(timezone=True)),
    Column("reported_status", String(16)),
    Column("reported_sequence", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("last_heard_at", DateTime(timezone=True)),
    Column("queue_seconds", Float),
    Column("sip_response_code", Integer),
    Column("owner", String(255)),
    Column("owned_until", DateTime(timezone=True)),
    Column("cancel_requested_at", DateTime(timezone=True)),
    Column("report_due_at", DateTime(timezone=True)),
)


def safe_url(url: str) -> str:
    """A database URL without its password, for logs and messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database url>"


def normalize_url(url: str) -> str:
    """`postgresql://` is served by psycopg 3 (the driver we depend on)."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """An engine with the transaction behaviour the ledger relies on."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}
        )

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
            # Let SQLAlchemy, not pysqlite, decide when transactions begin, and let
            # readers (the ops query, tests) read while the dialer writes.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            # Writers take the write lock up front: a read-then-write transaction then
            # cannot fail half-way on a lock upgrade, and rows read are rows we may
            # update. Readers only take a snapshot.
            if conn.get_execution_options().get(READ_ONLY):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=2, pool_pre_ping=True)


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for our revisions, bound to `connection` when given."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision this code knows."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None
    return revision


def revisions() -> list[str]:
    """Every revision, oldest first."""
    script = ScriptDirectory.from_config(alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def current(conn: Connection) -> str | None:
    """The ledger's revision; None before any."""
    return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine, target: str = "head") -> list[str]:
    """Upgrade the ledger to `target`; return the revisions applied, in order."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
        before = current(conn)
        known = revisions()
        if before is not None and before not in known:
            raise LedgerError(
                f"the ledger's schema is revision {before}, newer than this code's"
                f" {known[-1]}: upgrade the dialer"
            )
        try:
            command.upgrade(alembic_config(conn), target)
        except CommandError as exc:
            raise LedgerError(f"cannot migrate the ledger: {exc}") from None
        after = current(conn)
    start = 0 if before is None else known.index(before) + 1
    stop = known.index(after) + 1 if after is not None else 0
    return known[start:stop]
