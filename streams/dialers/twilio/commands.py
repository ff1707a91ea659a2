"""One dial command, to its durable outcome in the ledger.

A command past its `dial_by` is never dialed: its row is written `canceled` and
`canceled`/`dial-deadline-passed` is reported. Otherwise its row is written `dialing`
(unique `dial_id`) *before* any request to Twilio, and the call is created
(`streams.dialers.twilio.create`). A command whose `dial_id` is already in the ledger
is a duplicate (a resend by the limiter, or a redelivery): it is not dialed, and the
last status delivered for that dial is reported again (the limiter resends only when it
heard nothing, and ignores statuses of dials it has closed).
"""

from __future__ import annotations

import asyncio
import logging
import time

from streams.dialers.twilio.create import Creator
from streams.dialers.twilio.ledger import Job, Ledger, from_epoch
from streams.dialers.twilio.report import Reporter
from streams.dialers.twilio.runtime import Runtime
from streams.topics import DIAL_DEADLINE_PASSED, DialCommand, from_iso

log = logging.getLogger(__name__)


class CommandHandler:
    """Handles the commands the feed hands over, on the dialer's event loop."""

    def __init__(
        self, runtime: Runtime, reporter: Reporter, creator: Creator, ledger: Ledger
    ):
        self.runtime = runtime
        self.reporter = reporter
        self.creator = creator
        self.ledger = ledger

    async def handle(self, command: DialCommand) -> None:
        """Claim the command's row, then dial, refuse or re-report (module doc)."""
        self.runtime.check()
        task = asyncio.current_task()
        if task is not None:
            self.runtime.track(task)
        dial_by = from_iso(command.dial_by)

        def claim(refused_reason: str | None = None) -> tuple[bool, Job]:
            return self.ledger.claim(
                dial_id=command.dial_id,
                lead_id=command.lead_id,
                business_id=command.business_id,
                phone=command.phone,
                attempt=command.attempt,
                dial_by=from_epoch(dial_by),
                refused_reason=refused_reason,
                owner=self.creator.owner,
                owned_for=self.creator.owned_for,
            )

        if time.time() > dial_by:
            inserted, job = await self.runtime.db(claim, DIAL_DEADLINE_PASSED)
            if inserted:
                self._refused(command)
                await self.reporter.change(job.dial_id, lambda: (True, job))
                return
        else:
            inserted, job = await self.runtime.db(claim)
            if inserted:
                await self._dial(job)
                return
        await self._duplicate(job)

    def _refused(self, command: DialCommand) -> None:
        self.runtime.counters["refused-stale"] += 1
        log.info(
            "refused stale dial %s for lead %s of business %s: dial_by %s has"
            " passed; reported canceled (%s)",
            command.dial_id,
            command.lead_id,
            command.business_id,
            command.dial_by,
            DIAL_DEADLINE_PASSED,
        )

    async def _dial(self, job: Job) -> None:
        """Create the call for a claimed row; this process owns the row meanwhile."""
        self.runtime.inflight.add(job.dial_id)
        try:
            await self.creator.create(job)
        finally:
            self.runtime.inflight.discard(job.dial_id)

    async def _duplicate(self, job: Job) -> None:
        self.runtime.counters["duplicate"] += 1
        job, repeated = await self.reporter.report_again(job)
        log.info(
            "ignored duplicate dial %s for lead %s of business %s (ledger: %s%s); %s",
            job.dial_id,
            job.lead_id,
            job.business_id,
            job.status,
            f", call {job.call_sid}" if job.call_sid else "",
            f"re-reported {job.reported_status}" if repeated else "nothing to re-report",
        )
