"""The reconciler: what the ledger holds is brought in line with Twilio, so that a lost
webhook, answer or report costs seconds of a slot, not a lease.

Every pass (a third of `RECONCILE_AFTER_SECONDS`, within 0.5-5 s):

* every live call that heard nothing for `RECONCILE_AFTER_SECONDS` is fetched
  (`calls(sid).fetch()`) and its true status applied and reported;
* every call still `queued` at Twilio after its dial's `dial_by` is canceled
  (`Status=canceled`): a call Twilio's CPS queue held past `dial_by` would ring while
  the limiter may have refilled its slot. The row ends only with the status Twilio
  answers (or calls back), so it is reported `canceled` only once Twilio confirms it;
* every live row without a CallSid that no dialer is creating is recovered (`recover`),
  once `RECOVER_AFTER_SECONDS` old and its owner's lease over; the dialer's start
  recovers them all;
* the outbox: every row whose current status has not reached `calls.status` (live
  statuses included) is delivered (the webhook answers as soon as the ledger has it);
* live calls from our number that no row owns, to the number of one of our dials whose
  rows all have a call of their own (or ended), are hung up (`Status=completed`) and
  counted: a second call a lagging list let through, whatever made it.

Recovering a row without a CallSid (the crash window between "Twilio accepted the call"
and "the ledger has its CallSid"):

* `create_requests == 0`: no request ever left for it, so it is dialed now (or reported
  stale past `dial_by`). The compare-and-set before each request stops two processes
  from both sending.
* otherwise Twilio may have the call, and we find out before anything else
  (`streams.dialers.twilio.lookup`). Not found, the create is not known to have failed
  until its request could no longer be in flight and Twilio's list had twice
  `TWILIO_LIST_SETTLE_SECONDS` to show it (`lookup.settled`); only a look after that
  sends the dial again if `dial_by` allows, or reports it
  `canceled`/`dial-deadline-passed`.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import time

from twilio.base.exceptions import TwilioException
from twilio.rest.api.v2010.account.call import CallInstance

from streams import metrics
from streams.dialers.twilio.client import TwilioApi
from streams.dialers.twilio.create import Creator
from streams.dialers.twilio.failures import REQUEST_ERRORS, TRANSPORT_ERRORS, TwilioFailure
from streams.dialers.twilio.ledger import Job, Ledger, utcnow
from streams.dialers.twilio.lookup import LOOKUP_SKEW_SECONDS, Lookup, settled
from streams.dialers.twilio.report import Reporter
from streams.dialers.twilio.runtime import Runtime, Stopping
from streams.topics import CALL_STATUSES

log = logging.getLogger(__name__)

#: A row without CallSid not being dialed by us is recovered once this old.
RECOVER_AFTER_SECONDS = 10.0
#: A status whose delivery failed (or is still on its way) is delivered again once its
#: change is this old.
REREPORT_AFTER_SECONDS = 2.0
#: Calls fetched from Twilio at once at most.
FETCHES_AT_ONCE = 8
#: A cancel of a call queued past `dial_by` is asked again after this long.
CANCEL_AGAIN_SECONDS = 5.0
#: Live calls listed per status when looking for calls no row owns.
LIVE_LIST_LIMIT = 200
#: The statuses of a live call resource at Twilio (`initiated` is a callback's only: the
#: list's Status filter takes none such).
TWILIO_LIVE_STATUSES = ("queued", "ringing", "in-progress")
#: Rows this recent are the dials an unowned call may duplicate.
DUPLICATE_WINDOW = _dt.timedelta(hours=6)


class Reconciler:
    """Recovers rows and reconciles calls (module doc)."""

    def __init__(
        self,
        runtime: Runtime,
        reporter: Reporter,
        lookup: Lookup,
        creator: Creator,
        ledger: Ledger,
        api: TwilioApi,
        *,
        reconcile_after_seconds: float,
        from_number: str,
    ):
        self.runtime = runtime
        self.reporter = reporter
        self.lookup = lookup
        self.creator = creator
        self.ledger = ledger
        self.api = api
        self.reconcile_after_seconds = reconcile_after_seconds
        self.from_number = from_number

    # -- passes ----------------------------------------------------------------------

    async def run(self) -> None:
        """Pass after pass until the dialer stops."""
        interval = min(5.0, max(0.5, self.reconcile_after_seconds / 3))
        while not self.runtime.stopping.is_set():
            try:
                await self.once()
            except Stopping:
                return
            except Exception:
                log.exception("reconciler pass failed; next pass in %.1fs", interval)
            try:
                await self.runtime.wait(interval)
            except Stopping:
                return

    async def once(self) -> None:
        """One pass (module doc)."""
        now = utcnow()
        silent = await self.runtime.db(
            self.ledger.silent_live,
            now - _dt.timedelta(seconds=self.reconcile_after_seconds),
        )
        gate = asyncio.Semaphore(FETCHES_AT_ONCE)

        async def fetch(job: Job) -> None:
            async with gate:
                await self._reconcile_call(job)

        await asyncio.gather(
            *(fetch(job) for job in silent if job.dial_id not in self.runtime.inflight)
        )
        await self._cancel_queued_past_dial_by(now)
        orphans = await self.runtime.db(
            self.ledger.without_call_sid,
            now - _dt.timedelta(seconds=RECOVER_AFTER_SECONDS),
            unowned_at=now,
        )
        for job in orphans:
            if job.dial_id not in self.runtime.inflight:
                self.runtime.spawn(self.recover(job), f"recovering dial {job.dial_id}")
        due = await self.runtime.db(
            self.ledger.report_due, now - _dt.timedelta(seconds=REREPORT_AFTER_SECONDS)
        )
        for job in due:
            await self._report_again(job)
        await self._hang_up_unowned()

    async def recover_at_start(self) -> None:
        """Recover every row a previous run left without a CallSid."""
        rows = await self.runtime.db(self.ledger.without_call_sid)
        if rows:
            log.info(
                "recovering %d dials that a previous run left without a CallSid", len(rows)
            )
        for job in rows:
            self.runtime.spawn(self.recover(job), f"recovering dial {job.dial_id}")

    # -- one row ---------------------------------------------------------------------

    async def recover(self, job: Job) -> None:
        """A live row without CallSid that nobody here is dialing (module doc)."""
        inflight = self.runtime.inflight
        if job.dial_id in inflight:
            return
        inflight.add(job.dial_id)
        try:
            now = time.time()
            if job.create_requests > 0:
                try:
                    found = await self.lookup.find(job)
                except REQUEST_ERRORS as exc:
                    log.warning(
                        "dial %s: cannot ask Twilio whether its call exists (%r);"
                        " will ask again",
                        job.dial_id,
                        exc,
                    )
                    return
                if found is not None:
                    await self.lookup.adopt(job, found, "after a crash or lost answer")
                    return
                if not settled(job, now, self.api.timeout, 2 * self.lookup.settle):
                    return  # its call may still be on its way to the list; ask again
            if now > job.dial_by.timestamp():
                await self.creator.deadline_passed(
                    job, None, "recovering it (Twilio has no call)"
                )
                return
            log.info(
                "resuming dial %s for lead %s of business %s: Twilio has no call for it"
                " (%d create requests sent before)",
                job.dial_id,
                job.lead_id,
                job.business_id,
                job.create_requests,
            )
            await self.creator.create(job)
        finally:
            inflight.discard(job.dial_id)

    async def _reconcile_call(self, job: Job) -> None:
        try:
            assert job.call_sid is not None
            call = await self.api.fetch(job.call_sid)
        except TwilioException as exc:
            failure = TwilioFailure.of(exc)
            log.warning(
                "reconciler: cannot fetch call %s of dial %s: %s %s",
                job.call_sid,
                job.dial_id,
                failure.status,
                failure.message,
            )
            if failure.status == 404:
                await self.runtime.db(self.ledger.touch, job.dial_id)
            return
        except TRANSPORT_ERRORS as exc:
            log.warning(
                "reconciler: cannot reach Twilio for call %s: %r", job.call_sid, exc
            )
            return
        await self._apply_fetched(job, call)

    async def _apply_fetched(self, job: Job, call: CallInstance) -> None:
        """The status Twilio's fetch gave, applied to the row and reported."""
        if call.status not in CALL_STATUSES:
            await self.runtime.db(self.ledger.touch, job.dial_id)
            return
        changed, _ = await self.reporter.change(
            job.dial_id,
            lambda: self.ledger.apply_status(
                job.dial_id, call.status, call_sid=job.call_sid
            ),
        )
        if changed:
            self.runtime.counters["reconciled"] += 1
            log.info(
                "reconciled dial %s for lead %s of business %s: no word for %gs; Twilio"
                " says call %s is %s (ledger had %s)",
                job.dial_id,
                job.lead_id,
                job.business_id,
                self.reconcile_after_seconds,
                job.call_sid,
                call.status,
                job.twilio_status,
            )

    async def _report_again(self, job: Job) -> None:
        """A row in the outbox: its current status never reached `calls.status`."""
        if await self.reporter.deliver(job.dial_id):
            log.info(
                "delivered dial %s's %s from the outbox (its first report did not"
                " get through)",
                job.dial_id,
                job.twilio_status,
            )

    # -- calls Twilio should not have ------------------------------------------------

    async def _cancel_queued_past_dial_by(self, now: _dt.datetime) -> None:
        late = await self.runtime.db(
            self.ledger.queued_past_dial_by,
            now,
            now - _dt.timedelta(seconds=CANCEL_AGAIN_SECONDS),
        )
        for job in late:
            if job.dial_id not in self.runtime.inflight:
                await self._cancel(job)

    async def _cancel(self, job: Job) -> None:
        """Ask Twilio to cancel a call still queued after `dial_by`; its answer (or its
        callback) decides what the row becomes."""
        assert job.call_sid is not None
        await self.runtime.db(self.ledger.request_cancel, job.dial_id)
        try:
            # `canceled` also hangs up a ringing call: only a call still queued goes.
            seen = await self.api.fetch(job.call_sid)
            if seen.status != "queued":
                await self._apply_fetched(job, seen)
                return
            call = await self.api.update_status(job.call_sid, "canceled")
        except REQUEST_ERRORS as exc:
            log.warning(
                "cannot cancel call %s of dial %s, queued past its dial_by (%r);"
                " asking again in %gs",
                job.call_sid,
                job.dial_id,
                exc,
                CANCEL_AGAIN_SECONDS,
            )
            return
        if call.status not in CALL_STATUSES:
            return
        changed, after = await self.reporter.change(
            job.dial_id,
            lambda: self.ledger.apply_status(
                job.dial_id,
                call.status,
                call_sid=job.call_sid,
                error_message="queued at Twilio past dial_by"
                if call.status == "canceled"
                else None,
            ),
        )
        if changed and after is not None and after.twilio_status == "canceled":
            metrics.DIALER_QUEUED_CALLS_CANCELED.inc()
            self.runtime.counters["canceled-queued"] += 1
            log.info(
                "canceled call %s of dial %s for lead %s of business %s: still queued at"
                " Twilio after its dial_by %s; Twilio confirmed",
                job.call_sid,
                job.dial_id,
                job.lead_id,
                job.business_id,
                job.dial_by.isoformat(),
            )

    async def _hang_up_unowned(self) -> None:
        """Hang up live calls that duplicate one of our dials (module doc)."""
        live: list[CallInstance] = []
        try:
            for status in TWILIO_LIVE_STATUSES:
                live += await self.api.calls_in(status, self.from_number, LIVE_LIST_LIMIT)
        except REQUEST_ERRORS as exc:
            log.warning("cannot list live calls to look for unowned ones: %r", exc)
            return
        sids = [call.sid for call in live if call.sid]
        owned = await self.runtime.db(self.ledger.known_call_sids, sids)
        strangers = [call for call in live if call.sid and call.sid not in owned]
        if not strangers:
            return
        rows = await self.runtime.db(
            self.ledger.dials_to,
            {call.to for call in strangers if call.to},
            utcnow() - DUPLICATE_WINDOW,
        )
        for call in strangers:
            mine = [row for row in rows if row.phone == call.to and _may_own(row, call)]
            if not mine or any(
                row.call_sid == call.sid or (row.live and row.call_sid is None)
                for row in mine
            ):
                # Not a dial of ours, a row still looking for its call, or a row that
                # adopted it since its SID was checked (rows are read after SIDs).
                continue
            await self._hang_up(call, mine[-1])

    async def _hang_up(self, call: CallInstance, row: Job) -> None:
        assert call.sid is not None
        try:
            await self.api.update_status(call.sid, "completed")
        except REQUEST_ERRORS as exc:
            log.warning("cannot hang up unowned call %s: %r", call.sid, exc)
            return
        metrics.DIALER_UNOWNED_CALLS_HUNG_UP.inc()
        self.runtime.counters["unowned-hung-up"] += 1
        log.error(
            "hung up call %s to %s (%s): no ledger row owns it, and dial %s of lead %s"
            " of business %s to that number has call %s; a second call for one dial",
            call.sid,
            call.to,
            call.status,
            row.dial_id,
            row.lead_id,
            row.business_id,
            row.call_sid,
        )


def _may_own(row: Job, call: CallInstance) -> bool:
    """Whether `call` was created while `row` was being dialed."""
    if call.date_created is None:
        return True
    return call.date_created.timestamp() >= (
        row.created_at.timestamp() - LOOKUP_SKEW_SECONDS - 1.0
    )
