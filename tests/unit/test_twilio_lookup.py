"""Which of Twilio's calls can be a dial's (streams/dialers/twilio/lookup.py)."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from streams.dialers.twilio.ledger import Job
from streams.dialers.twilio.lookup import (
    LOOKUP_SKEW_SECONDS,
    created_within,
    creation_window,
)
from streams.dialers.twilio.lookup import settled as settled_after
from streams.settings import Settings

REQUEST_TIMEOUT_SECONDS = Settings().twilio_request_timeout_seconds
SETTLE_SECONDS = Settings().twilio_list_settle_seconds


def settled(row: Job, now: float) -> bool:
    return settled_after(row, now, REQUEST_TIMEOUT_SECONDS, SETTLE_SECONDS)


T0 = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


def job(created: float, sent: float | None) -> Job:
    return Job(
        dial_id="b:l:1",
        lead_id="l",
        business_id="b",
        phone="+14155550100",
        attempt=1,
        dial_by=T0 + dt.timedelta(seconds=30),
        status="dialing",
        created_at=T0 + dt.timedelta(seconds=created),
        updated_at=T0 + dt.timedelta(seconds=created),
        create_requests=0 if sent is None else 1,
        create_sent_at=None if sent is None else T0 + dt.timedelta(seconds=sent),
    )


def call(sid: str, created: float | None) -> SimpleNamespace:
    when = None if created is None else T0 + dt.timedelta(seconds=created)
    return SimpleNamespace(sid=sid, date_created=when)


def test_the_window_runs_from_the_rows_creation_to_its_last_request_in_flight():
    row = job(created=0.0, sent=4.0)
    now = T0.timestamp() + 5.0
    low, high = creation_window(row, now, REQUEST_TIMEOUT_SECONDS)
    assert low == T0.timestamp() - LOOKUP_SKEW_SECONDS - 1.0  # Twilio dates whole seconds
    assert high == now + REQUEST_TIMEOUT_SECONDS + LOOKUP_SKEW_SECONDS
    calls = [
        call("CAearly", -LOOKUP_SKEW_SECONDS - 2.0),
        call("CAskewed", -LOOKUP_SKEW_SECONDS),
        call("CAsent", 4.0),
        call("CAundated", None),
        call("CAlate", 5.0 + REQUEST_TIMEOUT_SECONDS + LOOKUP_SKEW_SECONDS + 1.0),
    ]
    assert [c.sid for c in created_within(calls, (low, high))] == ["CAskewed", "CAsent"]


def test_a_lookup_is_final_once_the_last_request_cannot_be_in_flight():
    row = job(created=0.0, sent=2.0)
    after = T0.timestamp() + 2.0 + REQUEST_TIMEOUT_SECONDS + SETTLE_SECONDS
    assert not settled(row, after - 0.1)
    assert settled(row, after)
    # A row that never sent counts from its creation.
    unsent = job(created=0.0, sent=None)
    assert settled(unsent, T0.timestamp() + REQUEST_TIMEOUT_SECONDS + SETTLE_SECONDS)
    assert not settled(unsent, T0.timestamp() + REQUEST_TIMEOUT_SECONDS)
