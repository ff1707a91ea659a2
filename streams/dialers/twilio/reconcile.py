"""The reconciler: what the ledger holds is brought in line with Twilio, so that a lost
webhook, answer or report costs seconds of a slot, not a lease.

Every pass (a third of `RECONCILE_AFTER_SECONDS`, within 0.5-5 s):

* every live call that heard nothing for `RECONCILE_AFTER_SECONDS` is fetched
  (`calls(sid).fetch()`) and its true status applied and reported;
* every live row without a CallSid that this process is not dialing is recovered
  (`recover`), once `RECOVER_AFTER_SECONDS` old; the dialer's start recovers them all;
* every terminal row whose report never got through is reported again.

Recovering a row without a CallSid (the crash window between "Twilio accepted the call"
and "the ledger has its CallSid"):

* `create_requests == 0`: no request ever left for it, so it is dialed now (or reported
  stale past `dial_by`). The compare-and-set before each request stops two processes
  from both sending.
* otherwise Twilio may have the call, and we find out before anything else
  (`streams.dialers.twilio.lookup`). Not found, the create is not known to have failed
  until its request could no longer be in flight (`lookup.settled`); after that the
  dial is sent again if `dial_by` allows, or reported `canceled`/`dial-deadline-passed`.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import time

from twilio.base.exceptions import TwilioException
from twilio.rest import Client

from streams.dialers.twilio.create import Creator
from streams.dialers.twilio.failures import REQUEST_ERRORS, TRANSPORT_ERRORS, TwilioFailure
from streams.dialers.twilio.ledger import Job, Ledger, utcnow
from streams.dialers.twilio.lookup import Lookup, settled
from streams.dialers.twilio.report import Reporter
from streams.dialers.twilio.runtime import Runtime, Stopping
from streams.topics import CALL_STATUSES

log = logging.getLogger(__name__)

#: A row without CallSid not being dialed by us is recovered once this old.
RECOVER_AFTER_SECONDS = 10.0
#: A terminal row whose report failed is reported again once this old.
REREPORT_AFTER_SECONDS = 5.0
#: Calls fetched from Twilio at once at most.
FETCHES_AT_ONCE = 8


class Reconciler:
    """Recovers rows and reconciles calls (module doc)."""

    def __init__(
        self,
        runtime: Runtime,
        reporter: Reporter,
        lookup: Lookup,
        creator: Creator,
        ledger: Ledger,
        client: Client,
        *,
        reconcile_after_seconds: float,
    ):
        self.runtime = runtime
        self.reporter = reporter
        self.lookup = lookup
        self.creator = creator
        self.ledger = ledger
        self.client = client
        self.reconcile_after_seconds = reconcile_after_seconds

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
        orphans = await self.runtime.db(
            self.ledger.without_call_sid, now - _dt.timedelta(seconds=RECOVER_AFTER_SECONDS)
        )
        for job in orphans:
            if job.dial_id not in self.runtime.inflight:
                self.runtime.spawn(self.recover(job), f"recovering dial {job.dial_id}")
        unreported = await self.runtime.db(
            self.ledger.unreported_terminal,
            now - _dt.timedelta(seconds=REREPORT_AFTER_SECONDS),
        )
        for job in unreported:
            await self._report_again(job)

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
                if not settled(job, now):
                    return  # its create may still be on its way; ask again later
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
            call = await self.client.calls(job.call_sid).fetch_async()
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
        """A terminal row whose report never got through."""
        changed, _ = await self.reporter.change(job.dial_id, lambda: (False, job))
        if changed:
            log.info(
                "re-reported dial %s's %s (its first report never got through)",
                job.dial_id,
                job.twilio_status,
            )
