"""The dialer's SQL ledger (streams/dialers/twilio/ledger.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import inspect, text

from streams.dialers.twilio import schema
from streams.dialers.twilio.ledger import (
    ACTIVE_CALLS_QUERY,
    LEDGER_STATUS,
    LIVE,
    Ledger,
    LedgerError,
    format_active_calls,
    normalize_url,
    transition,
    utcnow,
)
from streams.topics import CALL_STATUSES, DIAL_DEADLINE_PASSED, TERMINAL_STATUSES


@pytest.fixture
def ledger(ledger_url):
    ledger = Ledger(ledger_url)
    ledger.migrate()
    yield ledger
    ledger.close()


def claim(ledger: Ledger, business: str, lead: str, **extra):
    values = dict(
        dial_id=f"{business}:{lead}:1",
        lead_id=lead,
        business_id=business,
        phone="+14155550100",
        attempt=1,
        dial_by=utcnow() + dt.timedelta(seconds=30),
    )
    values.update(extra)
    return ledger.claim(**values)


# -- pure rules ------------------------------------------------------------------------


def test_every_twilio_status_maps_to_the_design_notes_statuses():
    assert set(LEDGER_STATUS) == set(CALL_STATUSES)
    assert {LEDGER_STATUS[s] for s in ("queued", "initiated", "ringing")} == {"dialing"}
    assert LEDGER_STATUS["in-progress"] == "calling"
    assert all(LEDGER_STATUS[s] == s for s in TERMINAL_STATUSES)
    assert LIVE == ("dialing", "calling")


@pytest.mark.parametrize("terminal", TERMINAL_STATUSES)
def test_terminal_is_final(terminal):
    for new in CALL_STATUSES:
        assert not transition(terminal, 3, new, 9)


def test_live_statuses_only_move_forward():
    assert transition(None, None, "ringing", 1)
    assert transition("queued", None, "initiated", 0)
    assert transition("ringing", 1, "in-progress", 2)
    assert transition("ringing", 1, "completed", None)  # a fetch may end a call
    assert not transition("in-progress", 2, "ringing", 1)
    assert not transition("ringing", 1, "initiated", 0)
    assert not transition("ringing", 1, "ringing", 1)  # duplicate
    assert transition("ringing", 1, "ringing", 2)  # same phase, newer
    assert not transition("ringing", 1, "ringing", None)  # a fetch adds nothing in-phase


def test_postgresql_urls_use_psycopg_3():
    assert normalize_url("postgresql://u@h/db").startswith("postgresql+psycopg://")
    assert normalize_url("postgresql+psycopg://u@h/db").startswith("postgresql+psycopg://")
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_format_active_calls_gives_a_verdict_per_business():
    lines = format_active_calls([("1", 3), ("2", 4)], 3)
    assert any(line.startswith("1 ") and "\u2705" in line for line in lines)
    assert any(line.startswith("2 ") and "\u274c" in line for line in lines)
    assert "1 over their limit" in lines[-1]
    assert "(no live calls)" in format_active_calls([], 3)


def test_format_active_calls_judges_each_business_by_its_own_limit():
    lines = format_active_calls(
        [("big", 5), ("small", 2), ("plain", 3)], 3, {"big": 5, "small": 1}
    )
    assert any(line.startswith("big ") and "\u2705 <= 5" in line for line in lines)
    assert any(line.startswith("small ") and "\u274c > 1" in line for line in lines)
    assert any(line.startswith("plain ") and "\u2705 <= 3" in line for line in lines)
    assert "1 over their limit" in lines[-1]


# -- schema ----------------------------------------------------------------------------


def test_migrations_create_the_schema_once(ledger_url):
    ledger = Ledger(ledger_url)
    try:
        assert ledger.version() is None
        assert ledger.migrate() == schema.revisions()
        assert ledger.migrate() == []
        assert ledger.version() == schema.head()
        with ledger.engine.connect() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("outbound_call_jobs")}
        assert {
            "dial_id",
            "lead_id",
            "business_id",
            "phone",
            "attempt",
            "call_sid",
            "status",
            "twilio_status",
            "error_code",
            "error_message",
            "sequence",
            "created_at",
            "updated_at",
            "last_heard_at",
        } <= columns
    finally:
        ledger.close()


def test_a_ledger_at_an_older_version_gets_the_missing_steps(ledger_url):
    ledger = Ledger(ledger_url)
    try:
        first, *rest = schema.revisions()
        assert schema.migrate(ledger.engine, first) == [first]
        assert ledger.migrate() == rest
    finally:
        ledger.close()


def test_a_ledger_newer_than_the_code_is_refused(ledger):
    with ledger.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(LedgerError, match="newer than this code"):
        ledger.migrate()


# -- rows ------------------------------------------------------------------------------


def test_a_dial_id_is_claimed_once(ledger):
    inserted, job = claim(ledger, "A", "1")
    assert inserted and job.status == "dialing" and job.call_sid is None
    assert job.created_at.tzinfo is not None and job.dial_by.tzinfo is not None
    again, same = claim(ledger, "A", "1")
    assert not again and same == job


def test_concurrent_claims_of_one_dial_id_let_exactly_one_win(ledger):
    results: list[bool] = []
    barrier = threading.Barrier(6)

    def attempt():
        barrier.wait()
        results.append(claim(ledger, "A", "race")[0])

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 5 + [True]


def test_a_refused_command_is_recorded_but_never_live(ledger):
    inserted, job = claim(ledger, "A", "1", refused_reason=DIAL_DEADLINE_PASSED)
    assert (
        inserted and job.status == "canceled" and job.error_message == DIAL_DEADLINE_PASSED
    )
    assert ledger.active_calls() == []


def test_begin_create_is_a_compare_and_set(ledger):
    _, job = claim(ledger, "A", "1")
    first = ledger.begin_create(job.dial_id, 0)
    assert first.create_requests == 1 and first.create_sent_at is not None
    assert ledger.begin_create(job.dial_id, 0) is None  # someone else sent it
    assert ledger.begin_create(job.dial_id, 1).create_requests == 2
    ledger.adopt_call(job.dial_id, "CA1", "queued")
    assert ledger.begin_create(job.dial_id, 2) is None  # it has its call


def test_statuses_move_a_row_forward_and_terminal_is_final(ledger):
    _, job = claim(ledger, "A", "1")
    changed, job = ledger.adopt_call(job.dial_id, "CA1", "queued")
    assert changed and (job.status, job.twilio_status, job.call_sid) == (
        "dialing",
        "queued",
        "CA1",
    )
    assert ledger.apply_status(job.dial_id, "ringing", sequence=1, call_sid="CA1")[0]
    assert not ledger.apply_status(job.dial_id, "initiated", sequence=0, call_sid="CA1")[0]
    changed, job = ledger.apply_status(job.dial_id, "in-progress", sequence=2)
    assert changed and job.status == "calling"
    assert not ledger.apply_status(job.dial_id, "in-progress", sequence=2)[0]  # duplicate
    changed, job = ledger.apply_status(
        job.dial_id, "failed", sequence=3, error_code=31005, error_message="boom"
    )
    assert changed and (job.status, job.error_code, job.error_message) == (
        "failed",
        31005,
        "boom",
    )
    for status in ("in-progress", "ringing", "completed"):
        changed, after = ledger.apply_status(job.dial_id, status, sequence=9)
        assert not changed and after.status == "failed"
    assert not ledger.finish(job.dial_id, "canceled")[0]


def test_a_row_never_takes_a_second_call(ledger):
    _, job = claim(ledger, "A", "1")
    ledger.adopt_call(job.dial_id, "CA1", "queued")
    changed, after = ledger.adopt_call(job.dial_id, "CA2", "ringing")
    assert not changed and after.call_sid == "CA1"
    changed, after = ledger.apply_status(job.dial_id, "completed", call_sid="CA2")
    assert not changed and after.live


def test_a_callback_can_adopt_the_call_of_a_row_without_one(ledger):
    _, job = claim(ledger, "A", "1")
    changed, after = ledger.apply_status(
        job.dial_id, "initiated", sequence=0, call_sid="CA9"
    )
    assert changed and after.call_sid == "CA9" and after.twilio_status == "initiated"
    assert ledger.by_call_sid("CA9").dial_id == job.dial_id


def test_unknown_dial_ids_change_nothing(ledger):
    assert ledger.apply_status("nope", "completed") == (False, None)
    assert ledger.adopt_call("nope", "CA1", "queued") == (False, None)
    assert ledger.finish("nope", "failed") == (False, None)


def test_the_design_note_query_counts_live_rows_per_business(ledger):
    for lead in "123":
        claim(ledger, "1", lead)
    _, calling = claim(ledger, "2", "1")
    ledger.adopt_call(calling.dial_id, "CA21", "in-progress")
    _, done = claim(ledger, "2", "2")
    ledger.adopt_call(done.dial_id, "CA22", "queued")
    ledger.apply_status(done.dial_id, "completed", sequence=3)
    claim(ledger, "5", "1", refused_reason=DIAL_DEADLINE_PASSED)
    assert ledger.active_calls() == [("1", 3), ("2", 1)]
    with ledger.engine.connect() as conn:
        raw = conn.execute(
            text(
                "SELECT business_id, COUNT(*) FROM outbound_call_jobs"
                " WHERE status IN ('dialing','calling') GROUP BY business_id"
            )
        )
        assert sorted((b, int(n)) for b, n in raw) == [("1", 3), ("2", 1)]
    assert "outbound_call_jobs" in ACTIVE_CALLS_QUERY


def test_reports_are_tracked_so_a_lost_terminal_report_is_found(ledger):
    _, job = claim(ledger, "A", "1")
    ledger.adopt_call(job.dial_id, "CA1", "queued")
    ledger.mark_reported(job.dial_id, "queued", None)
    assert not ledger.get(job.dial_id).unreported
    assert ledger.report_due() == []
    ledger.apply_status(job.dial_id, "completed", sequence=3)
    later = utcnow() + dt.timedelta(seconds=1)
    assert [j.dial_id for j in ledger.report_due(later)] == [job.dial_id]
    ledger.mark_reported(job.dial_id, "completed", 3)
    ledger.mark_reported(job.dial_id, "ringing", 1)  # a late, older report changes nothing
    assert ledger.get(job.dial_id).reported_status == "completed"
    assert ledger.report_due(later) == []


def test_live_statuses_wait_in_the_outbox_until_delivered(ledger):
    _, job = claim(ledger, "A", "1")
    ledger.adopt_call(job.dial_id, "CA1", "queued", queue_seconds=2.5)
    ledger.mark_reported(job.dial_id, "queued", None)
    ledger.apply_status(job.dial_id, "ringing", sequence=1)
    ledger.apply_status(job.dial_id, "in-progress", sequence=2)
    assert [(j.dial_id, j.twilio_status) for j in ledger.report_due()] == [
        (job.dial_id, "in-progress")
    ]
    ledger.mark_reported(job.dial_id, "ringing", 1)  # an older status: still due
    assert ledger.report_due() != []
    ledger.mark_reported(job.dial_id, "in-progress", 2)
    assert ledger.report_due() == []
    assert ledger.get(job.dial_id).queue_seconds == 2.5


def test_the_reconcilers_scans(ledger):
    _, silent = claim(ledger, "A", "1")
    ledger.adopt_call(
        silent.dial_id, "CA1", "ringing", now=utcnow() - dt.timedelta(minutes=5)
    )
    _, fresh = claim(ledger, "A", "2")
    ledger.adopt_call(fresh.dial_id, "CA2", "ringing")
    _, orphan = claim(ledger, "A", "3", now=utcnow() - dt.timedelta(minutes=1))
    cutoff = utcnow() - dt.timedelta(seconds=30)
    assert [j.dial_id for j in ledger.silent_live(cutoff)] == [silent.dial_id]
    assert [j.dial_id for j in ledger.without_call_sid(cutoff)] == [orphan.dial_id]
    assert [j.dial_id for j in ledger.without_call_sid()] == [orphan.dial_id]
    ledger.touch(silent.dial_id)
    assert ledger.silent_live(cutoff) == []
    assert ledger.known_call_sids(["CA1", "CA2", "CA3"]) == {"CA1", "CA2"}
    assert ledger.known_call_sids(["CA1", "CA2"], except_dial_id=silent.dial_id) == {"CA2"}


def test_a_call_for_a_dial_ended_without_one_is_recorded_not_revived(ledger):
    _, job = claim(ledger, "A", "1")
    ledger.finish(job.dial_id, "canceled", error_message=DIAL_DEADLINE_PASSED)
    changed, after = ledger.apply_status(job.dial_id, "ringing", sequence=1, call_sid="CAx")
    assert not changed
    assert (after.status, after.call_sid, after.error_message) == (
        "canceled",
        "CAx",
        DIAL_DEADLINE_PASSED,
    )
    assert ledger.active_calls() == []


def test_the_scans_for_calls_twilio_should_not_have(ledger):
    past = utcnow() - dt.timedelta(seconds=5)
    _, queued = claim(ledger, "A", "1", dial_by=past)
    ledger.adopt_call(queued.dial_id, "CA1", "queued", queue_seconds=9.0)
    _, started = claim(ledger, "A", "2", dial_by=past)
    ledger.adopt_call(started.dial_id, "CA2", "queued")
    ledger.apply_status(started.dial_id, "initiated", sequence=0)
    _, early = claim(ledger, "A", "3")
    ledger.adopt_call(early.dial_id, "CA3", "queued")
    now = utcnow()
    late = ledger.queued_past_dial_by(now, now - dt.timedelta(seconds=5))
    assert [j.dial_id for j in late] == [queued.dial_id]
    ledger.request_cancel(queued.dial_id)
    assert ledger.queued_past_dial_by(utcnow(), now - dt.timedelta(seconds=5)) == []
    assert {j.dial_id for j in ledger.dials_to(["+14155550100"], past)} == {
        queued.dial_id,
        started.dial_id,
        early.dial_id,
    }
    assert ledger.dials_to(["+14155550199"], past) == []


def test_a_row_being_created_is_left_to_its_owner(ledger):
    before = utcnow() - dt.timedelta(seconds=1)
    _, mine = claim(ledger, "A", "1", owner="dialer-1", owned_for=60, now=before)
    _, free = claim(ledger, "A", "2", now=before)
    cutoff = utcnow()
    assert [j.dial_id for j in ledger.without_call_sid(cutoff, unowned_at=cutoff)] == [
        free.dial_id
    ]
    later = cutoff + dt.timedelta(seconds=120)
    assert {j.dial_id for j in ledger.without_call_sid(cutoff, unowned_at=later)} == {
        mine.dial_id,
        free.dial_id,
    }
    assert ledger.begin_create(mine.dial_id, 0, owner="dialer-2", owned_for=5).owner == (
        "dialer-2"
    )
