"""Ledger first, then Kafka: every change to a dial's row, and the status it reports.

A change is applied to the ledger (one transaction, which also puts the row in the
outbox: `report_due_at`), and only if the row changed (or its terminal status was never
reported) is the row's status produced to `calls.status`; once the broker has it, the
ledger records it as reported and the row leaves the outbox. Per dial the change and
the produce happen under one lock, so Kafka's order is the ledger's order. `deliver`
produces a row's status from the outbox: the webhook's way (the callback is answered
once the ledger has it) and the reconciler's, for deliveries that failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from streams.dialers.twilio.ledger import Job, Ledger
from streams.dialers.twilio.producer import StatusProducer
from streams.dialers.twilio.runtime import Runtime
from streams.topics import CallStatus, to_iso

#: How long a status may take to reach the broker before the caller gives up.
DELIVERY_TIMEOUT_SECONDS = 20.0
#: Terminal statuses whose report carries the row's error code and message.
FAILURES = ("failed", "canceled", "busy", "no-answer")

#: A ledger change: (whether the row changed, the row after it).
Change = Callable[[], tuple[bool, Job | None]]


def status_record(job: Job, status: str, sequence: int | None) -> CallStatus:
    """The `calls.status` record of a row in `status`, now."""
    failure = status in FAILURES
    return CallStatus(
        dial_id=job.dial_id,
        lead_id=job.lead_id,
        business_id=job.business_id,
        status=status,
        at=to_iso(time.time()),
        call_sid=job.call_sid,
        sequence=sequence,
        reason=job.error_message if failure else None,
        error_code=job.error_code if failure else None,
    )


class Reporter:
    """Applies ledger changes and reports what they changed (module doc)."""

    def __init__(self, runtime: Runtime, ledger: Ledger, producer: StatusProducer):
        self.runtime = runtime
        self.ledger = ledger
        self.producer = producer
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def change(self, dial_id: str, change: Change) -> tuple[bool, Job | None]:
        """Apply a ledger change; report the row's status if it changed (or if its
        terminal status was never reported), after the broker has it. (reported, row)."""
        async with self._dial_lock(dial_id):
            changed, job = await self.runtime.db(change)
            if job is None or job.twilio_status is None:
                return changed, job
            if not (changed or (job.terminal and job.unreported)):
                return False, job
            status = status_record(job, job.twilio_status, job.sequence)
            delivery = self.producer.produce(status)
        await asyncio.wait_for(delivery, DELIVERY_TIMEOUT_SECONDS)
        await self.runtime.db(
            self.ledger.mark_reported, job.dial_id, status.status, status.sequence
        )
        return True, job

    async def report_again(self, job: Job) -> tuple[Job, bool]:
        """Produce the last status delivered for this dial once more (a resent command
        gets the answer it missed); (the row now, whether there was one to repeat)."""
        async with self._dial_lock(job.dial_id):
            now = await self.runtime.db(self.ledger.get, job.dial_id)
            job = now or job
            if job.reported_status is None:
                return job, False
            delivery = self.producer.produce(
                status_record(job, job.reported_status, job.reported_sequence)
            )
        await asyncio.wait_for(delivery, DELIVERY_TIMEOUT_SECONDS)
        return job, True

    @contextlib.asynccontextmanager
    async def _dial_lock(self, dial_id: str) -> AsyncIterator[None]:
        """Serializes ledger change + produce per dial; the lock lives while in use."""
        lock, users = self._locks.get(dial_id, (asyncio.Lock(), 0))
        self._locks[dial_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[dial_id]
            if users <= 1:
                del self._locks[dial_id]
            else:
                self._locks[dial_id] = (lock, users - 1)

    async def deliver(self, dial_id: str) -> bool:
        """Deliver the row's current status if it is still in the outbox (not yet in
        `calls.status`); whether there was one to deliver."""
        async with self._dial_lock(dial_id):
            job = await self.runtime.db(self.ledger.get, dial_id)
            if job is None or job.report_due_at is None or job.twilio_status is None:
                return False
            status = status_record(job, job.twilio_status, job.sequence)
            delivery = self.producer.produce(status)
        await asyncio.wait_for(delivery, DELIVERY_TIMEOUT_SECONDS)
        await self.runtime.db(
            self.ledger.mark_reported, job.dial_id, status.status, status.sequence
        )
        return True
