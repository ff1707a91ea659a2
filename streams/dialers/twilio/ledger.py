"""The dialer's SQL ledger: one row per dial command, the source of truth about our calls.

Table `outbound_call_jobs` (the design note's name), one row per `dial_id`:

* `status` is what the design note's verification query counts: `dialing` while the
  call is being created or is queued/initiated/ringing at Twilio, `calling` once it is
  answered (`in-progress`), and Twilio's terminal CallStatus (`completed`, `busy`,
  `failed`, `no-answer`, `canceled`) once it is over. `twilio_status` keeps Twilio's raw
  status (NULL until Twilio has accepted the call).
* A row is written *before* its call is created (`claim`), so a `dial_id` is dialed at
  most once: a resent or redelivered command finds its row and is not dialed again.
* `create_requests` / `create_sent_at` count the create requests sent for the row. The
  count is bumped (compare-and-set) right before each request goes out, so a row
  without `call_sid` tells whether Twilio may have a call for it (see
  `streams.dialers.twilio.reconcile` for how such a row is recovered).
* `reported_status` / `reported_sequence` are the last status the dialer delivered to
  `calls.status`: a terminal row whose terminal status was not reported yet is reported
  again (by the reconciler), a duplicate callback is not.

Transitions (`transition`): a terminal row never changes again; a live row moves forward
in Twilio's order (queued < initiated < ringing < in-progress < terminal) or, within one
phase, to a higher `SequenceNumber`. Each change is one transaction that locks the row
(`SELECT ... FOR UPDATE` on PostgreSQL; SQLite transactions take the database's write
lock at `BEGIN IMMEDIATE`).

The ops check (README): `SELECT business_id, COUNT(*) FROM outbound_call_jobs WHERE
status IN ('dialing','calling') GROUP BY business_id` must never show more than
`MAX_OUTBOUND_CALLS_PER_BUSINESS` for a business. It holds because a row becomes live
only when the limiter granted its dial, and stops being live before the dialer tells the
limiter that the call ended.

Schema changes are Alembic revisions (`streams.dialers.twilio.schema`); `Ledger.migrate()`
(run by the dialer at start) applies the missing ones in one transaction.

SQLite (`sqlite:///path`) is the embedded default; PostgreSQL
(`postgresql://...` or `postgresql+psycopg://...`, driver psycopg 3) is supported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from streams.dialers.twilio import schema
from streams.dialers.twilio.schema import (
    READ_ONLY,
    jobs,
    make_engine,
    normalize_url,
)
from streams.dialers.twilio.schema import LedgerError as LedgerError
from streams.dialers.twilio.schema import safe_url as safe_url
from streams.topics import TERMINAL_STATUSES

#: The design note's live statuses, counted by its verification query.
DIALING, CALLING = "dialing", "calling"
LIVE = (DIALING, CALLING)
#: Twilio CallStatus -> ledger status.
LEDGER_STATUS: dict[str, str] = {
    "queued": DIALING,
    "initiated": DIALING,
    "ringing": DIALING,
    "in-progress": CALLING,
    **{status: status for status in TERMINAL_STATUSES},
}
#: Order of Twilio's statuses; a live row only moves up (terminal is the top, and final).
RANK: dict[str, int] = {
    "queued": 0,
    "initiated": 1,
    "ringing": 2,
    "in-progress": 3,
    **{status: 4 for status in TERMINAL_STATUSES},
}

#: The design note's verification query, verbatim (plus a stable order).
ACTIVE_CALLS_QUERY = (
    "SELECT business_id, COUNT(*) AS active_calls FROM outbound_call_jobs"
    " WHERE status IN ('dialing','calling') GROUP BY business_id"
    " ORDER BY business_id"
)


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _aware(moment: _dt.datetime | None) -> _dt.datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=_dt.timezone.utc)
    return moment


def from_epoch(ts: float) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc)


@dataclasses.dataclass(frozen=True)
class Job:
    """One ledger row."""

    dial_id: str
    lead_id: str
    business_id: str
    phone: str
    attempt: int
    dial_by: _dt.datetime
    status: str
    created_at: _dt.datetime
    updated_at: _dt.datetime
    call_sid: str | None = None
    twilio_status: str | None = None
    sequence: int | None = None
    error_code: int | None = None
    error_message: str | None = None
    create_requests: int = 0
    create_sent_at: _dt.datetime | None = None
    reported_status: str | None = None
    reported_sequence: int | None = None
    last_heard_at: _dt.datetime | None = None
    queue_seconds: float | None = None
    sip_response_code: int | None = None
    owner: str | None = None
    owned_until: _dt.datetime | None = None
    cancel_requested_at: _dt.datetime | None = None
    report_due_at: _dt.datetime | None = None

    @property
    def live(self) -> bool:
        return self.status in LIVE

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def unreported(self) -> bool:
        """Its current Twilio status has not been delivered to `calls.status` yet."""
        return self.twilio_status is not None and (
            self.reported_status != self.twilio_status
            or (not self.terminal and self.reported_sequence != self.sequence)
        )

    @classmethod
    def from_row(cls, row: Any) -> Job:
        data = dict(row._mapping)
        data.pop("id", None)
        for name in (
            "dial_by",
            "create_sent_at",
            "created_at",
            "updated_at",
            "last_heard_at",
            "owned_until",
            "cancel_requested_at",
            "report_due_at",
        ):
            data[name] = _aware(data[name])
        return cls(**data)


def transition(
    current: str | None, current_sequence: int | None, new: str, new_sequence: int | None
) -> bool:
    """Whether a row whose Twilio status is `current` takes the status `new`.

    Terminal is final; otherwise a later phase wins, and within one phase a higher
    sequence (a status without a sequence, from a fetch, only wins by phase).
    """
    if current is not None and RANK[current] == 4:
        return False
    if current is None or RANK[new] > RANK[current]:
        return True
    if RANK[new] < RANK[current]:
        return False
    return new_sequence is not None and (
        current_sequence is None or new_sequence > current_sequence
    )


class Ledger:
    """The ledger over one database. Thread-safe: each call is its own transaction."""

    def __init__(self, url: str, *, pool_size: int = 5):
        self.url = normalize_url(url)
        self.engine = make_engine(self.url, pool_size=pool_size)
        self.is_sqlite = self.engine.dialect.name == "sqlite"

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn.execution_options(**{READ_ONLY: True})

    # -- schema --------------------------------------------------------------------------

    def version(self) -> str | None:
        """The ledger's schema revision; None before any."""
        with self._reading() as conn:
            return schema.current(conn)

    def migrate(self) -> list[str]:
        """Apply the missing revisions in order; return those applied."""
        return schema.migrate(self.engine)

    def ping(self) -> None:
        with self._reading() as conn:
            conn.execute(text("SELECT 1"))

    # -- reads ---------------------------------------------------------------------------

    def get(self, dial_id: str) -> Job | None:
        with self._reading() as conn:
            row = conn.execute(select(jobs).where(jobs.c.dial_id == dial_id)).first()
        return None if row is None else Job.from_row(row)

    def by_call_sid(self, call_sid: str) -> Job | None:
        with self._reading() as conn:
            row = conn.execute(select(jobs).where(jobs.c.call_sid == call_sid)).first()
        return None if row is None else Job.from_row(row)

    def all(self) -> list[Job]:
        with self._reading() as conn:
            return [Job.from_row(r) for r in conn.execute(select(jobs).order_by(jobs.c.id))]

    def active_calls(self) -> list[tuple[str, int]]:
        """The design note's verification query: (business_id, active_calls) rows."""
        with self._reading() as conn:
            return [(r[0], int(r[1])) for r in conn.execute(text(ACTIVE_CALLS_QUERY))]

    def silent_live(self, heard_before: _dt.datetime, limit: int = 500) -> list[Job]:
        """Live rows with a call at Twilio that have heard nothing since `heard_before`."""
        query = (
            select(jobs)
            .where(
                jobs.c.status.in_(LIVE),
                jobs.c.call_sid.is_not(None),
                jobs.c.last_heard_at < heard_before,
            )
            .order_by(jobs.c.last_heard_at)
            .limit(limit)
        )
        with self._reading() as conn:
            return [Job.from_row(r) for r in conn.execute(query)]

    def without_call_sid(
        self,
        created_before: _dt.datetime | None = None,
        limit: int = 500,
        *,
        unowned_at: _dt.datetime | None = None,
    ) -> list[Job]:
        """Live rows whose call Twilio has not confirmed to us (or not created yet);
        with `unowned_at`, only those no dialer owns at that moment."""
        query = select(jobs).where(jobs.c.status.in_(LIVE), jobs.c.call_sid.is_(None))
        if created_before is not None:
            query = query.where(jobs.c.created_at < created_before)
        if unowned_at is not None:
            query = query.where(
                jobs.c.owned_until.is_(None) | (jobs.c.owned_until < unowned_at)
            )
        with self._reading() as conn:
            return [
                Job.from_row(r)
                for r in conn.execute(query.order_by(jobs.c.id).limit(limit))
            ]

    def report_due(
        self, due_before: _dt.datetime | None = None, limit: int = 500
    ) -> list[Job]:
        """The outbox: rows whose current status has not reached `calls.status` yet,
        oldest change first."""
        query = select(jobs).where(jobs.c.report_due_at.is_not(None))
        if due_before is not None:
            query = query.where(jobs.c.report_due_at < due_before)
        query = query.order_by(jobs.c.report_due_at, jobs.c.id).limit(limit)
        with self._reading() as conn:
            return [Job.from_row(r) for r in conn.execute(query)]

    def queued_past_dial_by(
        self, now: _dt.datetime, asked_before: _dt.datetime, limit: int = 500
    ) -> list[Job]:
        """Calls Twilio still holds `queued` after their dial's `dial_by`, whose cancel
        was not asked for since `asked_before`."""
        query = (
            select(jobs)
            .where(
                jobs.c.status.in_(LIVE),
                jobs.c.call_sid.is_not(None),
                jobs.c.twilio_status == "queued",
                jobs.c.dial_by < now,
                jobs.c.cancel_requested_at.is_(None)
                | (jobs.c.cancel_requested_at < asked_before),
            )
            .order_by(jobs.c.dial_by)
            .limit(limit)
        )
        with self._reading() as conn:
            return [Job.from_row(r) for r in conn.execute(query)]

    def dials_to(self, phones: Iterable[str], created_after: _dt.datetime) -> list[Job]:
        """Rows created after `created_after` that dial one of these numbers."""
        phones = list(phones)
        if not phones:
            return []
        query = select(jobs).where(
            jobs.c.phone.in_(phones), jobs.c.created_at > created_after
        )
        with self._reading() as conn:
            return [Job.from_row(r) for r in conn.execute(query)]

    def known_call_sids(
        self, sids: Iterable[str], except_dial_id: str | None = None
    ) -> set[str]:
        """Which of these call SIDs belong to a ledger row (other than `except_dial_id`)."""
        sids = list(sids)
        if not sids:
            return set()
        query = select(jobs.c.call_sid).where(jobs.c.call_sid.in_(sids))
        if except_dial_id is not None:
            query = query.where(jobs.c.dial_id != except_dial_id)
        with self._reading() as conn:
            return {r[0] for r in conn.execute(query)}

    # -- writes --------------------------------------------------------------------------

    def claim(
        self,
        *,
        dial_id: str,
        lead_id: str,
        business_id: str,
        phone: str,
        attempt: int,
        dial_by: _dt.datetime,
        refused_reason: str | None = None,
        owner: str | None = None,
        owned_for: float = 0.0,
        now: _dt.datetime | None = None,
    ) -> tuple[bool, Job]:
        """Insert the command's row: `dialing`, or directly `canceled` with
        `refused_reason` for a command that will not be dialed. (False, existing row)
        when the dial_id is already there. `owner` owns the row's create for
        `owned_for` seconds: no other dialer recovers it meanwhile."""
        now = now or utcnow()
        values = dict(
            dial_id=dial_id,
            lead_id=lead_id,
            business_id=business_id,
            phone=phone,
            attempt=attempt,
            dial_by=dial_by,
            create_requests=0,
            created_at=now,
            updated_at=now,
        )
        if refused_reason is None:
            values.update(
                status=DIALING,
                owner=owner,
                owned_until=now + _dt.timedelta(seconds=owned_for) if owner else None,
            )
        else:
            values.update(
                status="canceled",
                twilio_status="canceled",
                error_message=refused_reason,
                report_due_at=now,
            )
        # Both dialects say "insert unless the dial_id is there" the same way.
        insert = sqlite.insert if self.is_sqlite else postgresql.insert
        statement = (
            insert(jobs)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["dial_id"])
            .returning(jobs.c.id)
        )
        with self.engine.begin() as conn:
            inserted = conn.execute(statement).first() is not None
            row = conn.execute(select(jobs).where(jobs.c.dial_id == dial_id)).one()
        return inserted, Job.from_row(row)

    def _locked(self, conn: Connection, dial_id: str) -> Job | None:
        query = select(jobs).where(jobs.c.dial_id == dial_id)
        if not self.is_sqlite:
            query = query.with_for_update()
        row = conn.execute(query).first()
        return None if row is None else Job.from_row(row)

    def _update(self, conn: Connection, dial_id: str, **values: Any) -> Job:
        conn.execute(update(jobs).where(jobs.c.dial_id == dial_id).values(**values))
        return Job.from_row(
            conn.execute(select(jobs).where(jobs.c.dial_id == dial_id)).one()
        )

    def begin_create(
        self,
        dial_id: str,
        expected_requests: int,
        now: _dt.datetime | None = None,
        *,
        owner: str | None = None,
        owned_for: float = 0.0,
    ) -> Job | None:
        """Compare-and-set before sending a create request: bump `create_requests` from
        `expected_requests` if the row is still live and without a call. None when
        something else moved the row (another process took over, or it ended)."""
        now = now or utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                update(jobs)
                .where(
                    jobs.c.dial_id == dial_id,
                    jobs.c.status.in_(LIVE),
                    jobs.c.call_sid.is_(None),
                    jobs.c.create_requests == expected_requests,
                )
                .values(
                    create_requests=expected_requests + 1,
                    create_sent_at=now,
                    updated_at=now,
                    owner=owner,
                    owned_until=now + _dt.timedelta(seconds=owned_for) if owner else None,
                )
            )
            if result.rowcount != 1:
                return None
            return Job.from_row(
                conn.execute(select(jobs).where(jobs.c.dial_id == dial_id)).one()
            )

    def adopt_call(
        self,
        dial_id: str,
        call_sid: str,
        status: str,
        sequence: int | None = None,
        now: _dt.datetime | None = None,
        *,
        queue_seconds: float | None = None,
    ) -> tuple[bool, Job | None]:
        """Record that Twilio has call `call_sid` for this dial (from the create's answer,
        a lookup, or a callback), with its status. (changed, row); the row keeps a call
        it already has (a different sid is refused: (False, row))."""
        now = now or utcnow()
        with self.engine.begin() as conn:
            job = self._locked(conn, dial_id)
            if job is None:
                return False, None
            if job.call_sid not in (None, call_sid):
                return False, job
            values: dict[str, Any] = {"last_heard_at": now}
            if queue_seconds is not None:
                values["queue_seconds"] = queue_seconds
            changed = False
            if job.call_sid is None:
                values["call_sid"] = call_sid
                changed = True
            if not job.terminal and transition(
                job.twilio_status, job.sequence, status, sequence
            ):
                values.update(
                    status=LEDGER_STATUS[status],
                    twilio_status=status,
                    sequence=sequence if sequence is not None else job.sequence,
                )
                changed = True
            if changed:
                values.update(updated_at=now, report_due_at=now)
            return changed, self._update(conn, dial_id, **values)

    def apply_status(
        self,
        dial_id: str,
        status: str,
        *,
        sequence: int | None = None,
        call_sid: str | None = None,
        error_code: int | None = None,
        error_message: str | None = None,
        sip_response_code: int | None = None,
        now: _dt.datetime | None = None,
    ) -> tuple[bool, Job | None]:
        """A status from Twilio (callback or fetch). (changed, row after); (False, None)
        for an unknown dial_id. Hearing from Twilio refreshes `last_heard_at` even when
        nothing changes; a terminal row changes nothing."""
        now = now or utcnow()
        with self.engine.begin() as conn:
            job = self._locked(conn, dial_id)
            if job is None:
                return False, None
            if call_sid is not None and job.call_sid not in (None, call_sid):
                return False, job  # not this row's call
            if job.terminal:
                if call_sid is not None and job.call_sid is None:
                    # A call for a dial we ended without one (reported stale or failed):
                    # keep its SID for the record; the row stays as it is.
                    return False, self._update(
                        conn, dial_id, call_sid=call_sid, last_heard_at=now
                    )
                return False, job
            values: dict[str, Any] = {"last_heard_at": now}
            changed = False
            if call_sid is not None and job.call_sid is None:
                values["call_sid"] = call_sid
                changed = True
            if transition(job.twilio_status, job.sequence, status, sequence):
                changed = True
                values.update(
                    status=LEDGER_STATUS[status],
                    twilio_status=status,
                    sequence=sequence if sequence is not None else job.sequence,
                )
                if status in TERMINAL_STATUSES:
                    values.update(
                        error_code=error_code,
                        error_message=error_message,
                        sip_response_code=sip_response_code,
                    )
            if changed:
                values.update(updated_at=now, report_due_at=now)
            return changed, self._update(conn, dial_id, **values)

    def finish(
        self,
        dial_id: str,
        status: str,
        *,
        error_code: int | None = None,
        error_message: str | None = None,
        only_without_call: bool = False,
        now: _dt.datetime | None = None,
    ) -> tuple[bool, Job | None]:
        """End a live row that Twilio will never report on: a create Twilio refused
        (`failed`), or a dial refused/abandoned at its deadline (`canceled`). With
        `only_without_call`, a row that got its call meanwhile is left alone."""
        now = now or utcnow()
        with self.engine.begin() as conn:
            job = self._locked(conn, dial_id)
            if job is None or job.terminal or (only_without_call and job.call_sid):
                return False, job
            return True, self._update(
                conn,
                dial_id,
                status=status,
                twilio_status=status,
                error_code=error_code,
                error_message=error_message,
                updated_at=now,
                report_due_at=now,
            )

    def request_cancel(self, dial_id: str, now: _dt.datetime | None = None) -> None:
        """We asked Twilio to cancel this row's queued call (its answer decides)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.dial_id == dial_id)
                .values(cancel_requested_at=now or utcnow())
            )

    def touch(self, dial_id: str, now: _dt.datetime | None = None) -> None:
        """We heard from Twilio about this row (a fetch) without news."""
        with self.engine.begin() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.dial_id == dial_id)
                .values(last_heard_at=now or utcnow())
            )

    def mark_reported(self, dial_id: str, status: str, sequence: int | None) -> None:
        """`status` (with `sequence`) was delivered to `calls.status`; the row leaves the
        outbox when that is its current status."""
        with self.engine.begin() as conn:
            job = self._locked(conn, dial_id)
            if job is None:
                return
            if (job.twilio_status, job.sequence) == (status, sequence):
                conn.execute(
                    update(jobs).where(jobs.c.dial_id == dial_id).values(report_due_at=None)
                )
            if job.reported_status is not None and job.reported_status in TERMINAL_STATUSES:
                return
            if (
                job.reported_status is not None
                and not transition(
                    job.reported_status, job.reported_sequence, status, sequence
                )
                and (job.reported_status, job.reported_sequence) != (status, sequence)
            ):
                return  # something newer was reported already
            conn.execute(
                update(jobs)
                .where(jobs.c.dial_id == dial_id)
                .values(reported_status=status, reported_sequence=sequence)
            )


def businesses_over_limit(
    rows: Sequence[tuple[str, int]], default: int, limits: Mapping[str, int] | None = None
) -> list[str]:
    """The businesses of the verification query's answer above their own limit
    (`limits`, else `default`)."""
    limits = limits or {}
    return [business for business, count in rows if count > limits.get(business, default)]


def format_active_calls(
    rows: Sequence[tuple[str, int]], default: int, limits: Mapping[str, int] | None = None
) -> list[str]:
    """The verification query's answer as the design note shows it, one verdict a line,
    each business judged by its own limit (`limits`, else `default`)."""
    limits = limits or {}
    lines = [f"{'business_id':<24} | active_calls", f"{'-' * 24}-|-------------"]
    over = businesses_over_limit(rows, default, limits)
    for business_id, count in rows:
        limit = limits.get(business_id, default)
        verdict = (
            f"\u2705 <= {limit}" if count <= limit else f"\u274c > {limit}: over the limit"
        )
        lines.append(f"{business_id:<24} | {count:>12}   {verdict}")
    total = sum(count for _, count in rows)
    if not rows:
        lines.append("(no live calls)")
    own = f" ({len(limits)} with their own limit)" if limits else ""
    lines.append(
        f"{len(rows)} businesses, {total} live calls in all;"
        + (
            f" {len(over)} over their limit"
            if over
            else f" each within its limit (default {default}{own}) \u2705"
        )
    )
    return lines
