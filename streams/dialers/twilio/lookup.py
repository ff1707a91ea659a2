"""Finding at Twilio the call of a dial whose create answer we never got, and adopting it.

Twilio's Call resource does not return the StatusCallback URL, so a call cannot be
matched to its `dial_id` there. Instead the calls to the row's phone from our number
are listed (newest first), and a call created between the row's creation (minus
`LOOKUP_SKEW_SECONDS`) and its last create request plus the request timeout is the
row's, unless another ledger row owns that SID; the earliest such call wins. (A status
callback carrying the `dial_id` also adopts its call, see `callbacks`.)

Twilio's reads are eventually consistent, with no documented bound: a call a failed
create made may be missing from the list for a while. So nothing is concluded from one
empty list: a dial is sent again only after `TWILIO_LIST_SETTLE_SECONDS` past the moment
its request could no longer be in flight, and a second look after that (`settled`). A
call that shows up later still, with no row owning it, is hung up by the reconciler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from twilio.rest.api.v2010.account.call import CallInstance

from streams.dialers.twilio.client import TwilioApi
from streams.dialers.twilio.ledger import Job, Ledger
from streams.dialers.twilio.report import Reporter
from streams.dialers.twilio.runtime import Runtime
from streams.topics import CALL_STATUSES

log = logging.getLogger(__name__)

#: Clock skew allowed between us and Twilio when matching a call to a dial.
LOOKUP_SKEW_SECONDS = 5.0
#: Newest calls to a number looked at when matching.
LOOKUP_LIMIT = 50


def creation_window(job: Job, now: float, request_timeout: float) -> tuple[float, float]:
    """When Twilio may have created this row's call (epoch seconds, both included)."""
    low = job.created_at.timestamp() - LOOKUP_SKEW_SECONDS - 1.0  # 1 s resolution
    last_sent = (job.create_sent_at or job.created_at).timestamp()
    high = max(last_sent, now) + request_timeout + LOOKUP_SKEW_SECONDS
    return low, high


def created_within(
    calls: Iterable[CallInstance], window: tuple[float, float]
) -> list[CallInstance]:
    low, high = window
    return [
        call
        for call in calls
        if call.date_created is not None and low <= call.date_created.timestamp() <= high
    ]


def settled(job: Job, now: float, request_timeout: float, settle: float) -> bool:
    """Whether the row's last create request can no longer be in flight, nor its call
    still missing from Twilio's list (so a lookup that finds nothing is final)."""
    sent = (job.create_sent_at or job.created_at).timestamp()
    return now >= sent + request_timeout + settle


class Lookup:
    """Asks Twilio for a row's call (module doc), and records the one found."""

    def __init__(
        self,
        runtime: Runtime,
        reporter: Reporter,
        ledger: Ledger,
        api: TwilioApi,
        from_number: str,
        settle: float,
    ):
        self.runtime = runtime
        self.reporter = reporter
        self.ledger = ledger
        self.api = api
        self.from_number = from_number
        self.settle = settle

    async def find(self, job: Job) -> CallInstance | None:
        """The call Twilio has for this row, if any; raises `REQUEST_ERRORS`."""
        calls = await self.api.calls_to(job.phone, self.from_number, LOOKUP_LIMIT)
        window = creation_window(job, time.time(), self.api.timeout)
        candidates = created_within(calls, window)
        if not candidates:
            return None
        owned = await self.runtime.db(
            self.ledger.known_call_sids,
            [call.sid for call in candidates],
            except_dial_id=job.dial_id,
        )
        candidates = [call for call in candidates if call.sid not in owned]
        if not candidates:
            return None
        return min(candidates, key=lambda call: (call.date_created, call.sid))

    async def adopt(self, job: Job, call: CallInstance, how: str) -> None:
        """Record the call found as the row's, and report its status."""
        status = call.status if call.status in CALL_STATUSES else "queued"
        await self.reporter.change(
            job.dial_id, lambda: self.ledger.adopt_call(job.dial_id, call.sid, status)
        )
        self.runtime.counters["recovered"] += 1
        log.info(
            "recovered dial %s for lead %s of business %s %s: Twilio has call %s (%s)",
            job.dial_id,
            job.lead_id,
            job.business_id,
            how,
            call.sid,
            status,
        )

    async def find_after_settling(self, job: Job) -> CallInstance | None:
        """Look for the row's call once its list had `settle` seconds to show it, and once
        more `settle` seconds later before concluding there is none; raises
        `REQUEST_ERRORS`."""
        for _ in range(2):
            await self.runtime.wait(self.settle)
            found = await self.find(job)
            if found is not None:
                return found
        return None
