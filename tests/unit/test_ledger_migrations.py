"""The ledger's Alembic migrations (streams/dialers/twilio/schema.py) on a ledger made by
the hand-rolled migrations they replaced, on SQLite and PostgreSQL: at dialer start
(`Ledger.migrate`) and by hand (`alembic upgrade head`)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    text,
)

from streams.dialers.twilio import schema
from streams.dialers.twilio.ledger import Ledger, utcnow

ROOT = Path(__file__).resolve().parents[2]


def make_legacy_ledger(url: str) -> None:
    """A ledger as the hand-rolled migrations 1 and 2 left it, with two rows: one whose
    terminal status was reported, one whose terminal status never was."""
    engine = schema.make_engine(url)
    meta = MetaData()
    table = Table(
        "outbound_call_jobs",
        meta,
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
    )
    versions = Table(
        "schema_version",
        meta,
        Column("version", Integer, primary_key=True),
        Column("description", String(200), nullable=False),
        Column("applied_at", DateTime(timezone=True), nullable=False),
    )
    now = utcnow()
    row = dict(
        lead_id="L",
        business_id="B",
        attempt=1,
        dial_by=now + dt.timedelta(seconds=30),
        status="completed",
        twilio_status="completed",
        create_requests=1,
        created_at=now,
        updated_at=now,
    )
    try:
        with engine.begin() as conn:
            meta.create_all(conn)
            conn.execute(
                text(
                    "CREATE INDEX ix_outbound_call_jobs_status_business"
                    " ON outbound_call_jobs (status, business_id)"
                )
            )
            conn.execute(
                text(
                    "CREATE INDEX ix_outbound_call_jobs_status_last_heard"
                    " ON outbound_call_jobs (status, last_heard_at)"
                )
            )
            conn.execute(
                versions.insert(),
                [
                    dict(version=1, description="jobs", applied_at=now),
                    dict(version=2, description="index", applied_at=now),
                ],
            )
            conn.execute(
                table.insert(),
                [
                    dict(
                        row,
                        dial_id="B:1:1",
                        phone="+14155550101",
                        call_sid="CA1",
                        reported_status="completed",
                    ),
                    dict(
                        row,
                        dial_id="B:2:1",
                        phone="+14155550102",
                        call_sid="CA2",
                        reported_status=None,
                    ),
                ],
            )
    finally:
        engine.dispose()


def check_upgraded(url: str) -> None:
    ledger = Ledger(url)
    try:
        assert ledger.version() == schema.head()
        with ledger.engine.connect() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("outbound_call_jobs")}
            assert not inspect(conn).has_table("schema_version")
        assert {c.name for c in schema.jobs.columns} == columns
        rows = {job.dial_id: job for job in ledger.all()}
        assert rows["B:1:1"].call_sid == "CA1" and rows["B:1:1"].report_due_at is None
        # The terminal status never delivered is the outbox's first entry.
        assert [job.dial_id for job in ledger.report_due()] == ["B:2:1"]
        assert ledger.migrate() == []
    finally:
        ledger.close()


def test_a_ledger_made_by_the_hand_rolled_migrations_upgrades_at_start(ledger_url):
    make_legacy_ledger(ledger_url)
    ledger = Ledger(ledger_url)
    try:
        assert ledger.migrate() == schema.revisions()
    finally:
        ledger.close()
    check_upgraded(ledger_url)


def test_alembic_upgrade_head_by_hand_upgrades_it_too(ledger_url):
    make_legacy_ledger(ledger_url)
    env = {**os.environ, "DATABASE_URL": ledger_url}
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    check_upgraded(ledger_url)
