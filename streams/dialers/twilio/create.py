"""Creating a dial's call at Twilio: one request at a time, within the CPS budget, until
Twilio has the call, refuses it for good, or the dial's `dial_by` passes.

Each round of the create loop:

0. passes the account gate (`streams.dialers.twilio.gate`): while Twilio refuses the
   account, the dial waits there, its row live, never failed;
1. takes a token of this dialer's share of the calls-per-second budget
   (`CreateRateLimiter`, `TWILIO_CPS` / `TWILIO_DIALER_INSTANCES`), waiting no later than
   `dial_by` (then the row ends `canceled`/`dial-deadline-passed`); the token is spent
   when the request leaves, so a request Twilio never answers holds none;
2. bumps the row's `create_requests` (compare-and-set, `Ledger.begin_create`): from
   then on a crash leaves a row that recovery looks up at Twilio before dialing again,
   and a row another process took over is left alone;
3. sends `calls.create` (bounded by `TWILIO_REQUEST_TIMEOUT_SECONDS`) with our status
   callback for the events the limiter acts on (`CALLBACK_EVENTS`), `time_limit` =
   `CALL_TIME_LIMIT_SECONDS` and ring `timeout` = `RING_TIMEOUT_SECONDS`, so no call
   outlives the limiter's lease;
4. acts on the answer: a call is recorded with Twilio's `queue_time` (reported `queued`,
   or as Twilio says); a failure goes by its kind (`streams.dialers.twilio.failures`)
   through `AFTER_FAILURE`: an error about the account closes the gate and the dial
   waits, an error about the number ends the row `failed` with Twilio's code and
   message, a request that created nothing is sent again after a backoff, and one that
   may have created the call is looked for at Twilio once its list had time to show it,
   twice, before it is ever sent again (`streams.dialers.twilio.lookup`);
5. backs off with jitter before the next round, never past `dial_by` and never beyond
   `MAX_CREATE_REQUESTS` requests (then `failed`).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import random
import sys
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from twilio.base.exceptions import TwilioException
from twilio.rest.api.v2010.account.call import CallInstance

from streams import metrics
from streams.dialers.twilio.client import TwilioAccount, TwilioApi
from streams.dialers.twilio.failures import (
    REQUEST_ERRORS,
    Kind,
    TwilioFailure,
    account_problem,
    classify,
    error_label,
)
from streams.dialers.twilio.gate import AccountGate, Passage
from streams.dialers.twilio.ledger import Job, Ledger
from streams.dialers.twilio.lookup import Lookup
from streams.dialers.twilio.rate import CreateRateLimiter, backoff_seconds
from streams.dialers.twilio.report import Reporter
from streams.dialers.twilio.runtime import Runtime
from streams.settings import Settings
from streams.topics import DIAL_DEADLINE_PASSED

log = logging.getLogger(__name__)

#: Create requests sent for one dial at most (retries included).
MAX_CREATE_REQUESTS = 12
#: The status callback events asked for: those the limiter acts on. `completed` ends the
#: slot; `initiated` is when Twilio took the call out of its CPS queue, and the lease it
#: starts covers the whole ring and call. `ringing` and `answered` would only move the
#: lease to an end no later than that one, at the cost of a worker event each.
CALLBACK_EVENTS = ["initiated", "completed"]
#: The path of our status callback; Twilio signs the URL with the query we give it.
STATUS_PATH = "/twilio/status"
#: What an answered call does when neither TWILIO_VOICE_URL nor TWILIO_TWIML is set.
DEFAULT_TWIML = '<Response><Pause length="1"/></Response>'
#: A token taken later than this after asking counts as throttled by TWILIO_CPS.
THROTTLED_AFTER_SECONDS = 0.005
#: Test hook: exit(137) right after this many successful creates, before the ledger
#: write, to open the crash window on purpose.
CRASH_AFTER_CREATE_ENV = "STREAMS_DIALER_CRASH_AFTER_CREATE"


class Step(enum.Enum):
    """What the create loop does after a failed request."""

    FAIL = "fail"  # end the row failed, with Twilio's reason
    RETRY = "retry"  # nothing was created: send again after a backoff
    LOOK_UP = "look-up"  # Twilio may have the call: look before ever sending again
    WAIT = "wait"  # the account is refused: wait at the gate, fail nothing


#: The create loop's transitions: a failed request's kind -> the next step.
AFTER_FAILURE: Mapping[Kind, Step] = {
    Kind.NOT_SENT: Step.RETRY,
    Kind.RATE_LIMITED: Step.RETRY,
    Kind.SERVER_ERROR: Step.LOOK_UP,
    Kind.NO_ANSWER: Step.LOOK_UP,
    Kind.ACCOUNT: Step.WAIT,
    Kind.REJECTED: Step.FAIL,
}


class Found(enum.Enum):
    """What a lookup after a failed create found."""

    CALL = "call"  # Twilio has the call: adopted
    NOTHING = "nothing"  # no call: it may be sent again
    UNKNOWN = "unknown"  # Twilio could not be asked: the reconciler will


@dataclasses.dataclass(frozen=True)
class Created:
    """Twilio accepted the create request."""

    call: CallInstance


@dataclasses.dataclass
class CreateState:
    """One dial's create loop so far."""

    job: Job
    dial_by: float  # epoch seconds
    requests: int  # create requests the row has counted: the compare-and-set's value
    failures: int = 0
    last_failure: TwilioFailure | None = None


def status_callback_url(public_base_url: str, job: Job) -> str:
    """Our status callback for this dial; its query tells us the dial of a callback."""
    query = urllib.parse.urlencode(
        {"dial_id": job.dial_id, "business_id": job.business_id, "lead_id": job.lead_id}
    )
    return f"{public_base_url}{STATUS_PATH}?{query}"


@dataclasses.dataclass(frozen=True)
class CallRequest:
    """The parameters of every create request but the dial's own."""

    from_number: str
    public_base_url: str
    voice: Mapping[str, str]  # the answered call's flow: url or twiml
    time_limit: int
    ring_timeout: int

    @classmethod
    def of(cls, account: TwilioAccount, settings: Settings) -> CallRequest:
        voice = (
            {"url": settings.twilio_voice_url}
            if settings.twilio_voice_url
            else {"twiml": settings.twilio_twiml or DEFAULT_TWIML}
        )
        return cls(
            from_number=account.from_number,
            public_base_url=account.public_base_url,
            voice=voice,
            time_limit=int(settings.call_time_limit_seconds),
            ring_timeout=int(settings.ring_timeout_seconds),
        )

    def params(self, job: Job) -> dict[str, Any]:
        """`calls.create_async` keyword arguments for this dial."""
        return {
            "to": job.phone,
            "from_": self.from_number,
            **self.voice,
            "status_callback": status_callback_url(self.public_base_url, job),
            "status_callback_event": CALLBACK_EVENTS,
            "status_callback_method": "POST",
            "time_limit": self.time_limit,
            "timeout": self.ring_timeout,
        }


def queue_time_seconds(call: CallInstance) -> float | None:
    """Twilio's `queue_time` of a created call (milliseconds, as a string) in seconds."""
    raw = call.queue_time
    try:
        return None if raw in (None, "") else float(raw) / 1000.0
    except (TypeError, ValueError):
        return None


class CrashAfterCreates:
    """Test hook: exit(137) right after the n-th successful create of this process."""

    def __init__(self, after: int | None):
        self.after = after
        self.creates = 0

    @classmethod
    def from_env(cls) -> CrashAfterCreates:
        raw = os.environ.get(CRASH_AFTER_CREATE_ENV)
        return cls(int(raw) if raw else None)

    def created(self) -> None:
        self.creates += 1
        if self.after is not None and self.creates >= self.after:
            sys.stderr.write(
                f"{CRASH_AFTER_CREATE_ENV}: exiting after create"
                f" #{self.creates}, before the ledger write\n"
            )
            sys.stderr.flush()
            os._exit(137)


class Creator:
    """Runs the create loop (module doc) for rows this process owns."""

    def __init__(
        self,
        runtime: Runtime,
        reporter: Reporter,
        lookup: Lookup,
        ledger: Ledger,
        api: TwilioApi,
        *,
        limiter: CreateRateLimiter,
        gate: AccountGate,
        request: CallRequest,
        rng: random.Random,
        crash: CrashAfterCreates,
        owner: str,
    ):
        self.runtime = runtime
        self.reporter = reporter
        self.lookup = lookup
        self.ledger = ledger
        self.api = api
        self.limiter = limiter
        self.gate = gate
        self.owner = owner
        #: A create is this dialer's until its request and both looks could be over.
        self.owned_for = api.timeout + 2 * lookup.settle + 30.0
        self.request = request
        self.rng = rng
        self.crash = crash

    async def create(self, job: Job) -> None:
        """Create the row's call, to its durable outcome (module doc)."""
        state = CreateState(
            job=job, dial_by=job.dial_by.timestamp(), requests=job.create_requests
        )
        while True:
            self.runtime.check()
            answer = await self._send(state)
            if answer is None:
                return  # no request went out: the row was ended, or is not ours
            if isinstance(answer, Created):
                await self._record(job, answer.call)
                return
            state.last_failure = answer
            step = AFTER_FAILURE[answer.kind]
            if step is Step.FAIL:
                await self.fail(job, answer)
                return
            if step is Step.WAIT:
                continue  # the gate holds the next round until the account is usable
            state.failures += 1
            if step is Step.LOOK_UP:
                found = await self._look_up(job, answer)
                if found is not Found.NOTHING:
                    return  # adopted, or left to the reconciler
            if not await self._back_off(state, answer):
                return

    # -- one round ---------------------------------------------------------------------

    async def _send(self, state: CreateState) -> Created | TwilioFailure | None:
        """Take a token, claim the request in the ledger, send it; None when no
        request could be sent (the row is dealt with)."""
        job = state.job
        passage = await self.gate.enter(self._deadline(state), self.runtime.stopping)
        if passage is None:
            self.runtime.check()
            await self.deadline_passed(
                job, state.last_failure, "Twilio refused the account"
            )
            return None
        try:
            if not await self._take_token(state):
                self.gate.inconclusive(passage)
                return None
            try:
                claimed = await self.runtime.db(
                    self.ledger.begin_create,
                    job.dial_id,
                    state.requests,
                    owner=self.owner,
                    owned_for=self.owned_for,
                )
            except BaseException:
                self.limiter.release(used=False)
                raise
        except BaseException:
            self.gate.inconclusive(passage)
            raise
        if claimed is None:
            self.limiter.release(used=False)
            self.gate.inconclusive(passage)
            log.info(
                "dial %s is no longer ours to create (another dialer took it, or it ended)",
                job.dial_id,
            )
            return None
        state.requests += 1
        self.limiter.release(used=True)  # spent as it leaves: a hung request holds none
        try:
            call = await self.api.create(self.request.params(job))
        except REQUEST_ERRORS as exc:
            failure = classify(exc)
            self._gate_after(failure, passage)
            if isinstance(exc, TwilioException):
                metrics.TWILIO_ERRORS.labels(code=error_label(failure)).inc()
            if failure.rate_limited:
                metrics.TWILIO_CPS_THROTTLED.inc()
            return failure
        except BaseException:
            self.gate.inconclusive(passage)
            raise
        self.gate.accepted()
        return Created(call)

    def _gate_after(self, failure: TwilioFailure, passage: Passage) -> None:
        """What a failed create tells the account gate."""
        if failure.kind is Kind.ACCOUNT:
            self.gate.refused(account_problem(failure))
        elif failure.kind is Kind.REJECTED:
            self.gate.accepted()  # refused for its number: the account itself is fine
        else:
            self.gate.inconclusive(passage)

    @staticmethod
    def _deadline(state: CreateState) -> float:
        """`dial_by` on the loop's clock."""
        return time.monotonic() + (state.dial_by - time.time())

    async def _take_token(self, state: CreateState) -> bool:
        """A token of the CPS budget before `dial_by`; else the row ends stale."""
        asked = time.monotonic()
        deadline = asked + (state.dial_by - time.time())
        got = await self.limiter.acquire(deadline, self.runtime.stopping)
        if time.monotonic() - asked > THROTTLED_AFTER_SECONDS:
            metrics.TWILIO_CPS_THROTTLED.inc()
        if not got:
            self.runtime.check()
        elif time.time() > state.dial_by:
            self.limiter.release(used=False)
        else:
            return True
        await self.deadline_passed(
            state.job, state.last_failure, "waiting for Twilio's rate"
        )
        return False

    async def _record(self, job: Job, call: CallInstance) -> None:
        metrics.DIALER_CALLS_CREATED.inc()
        self.crash.created()
        self.runtime.counters["dialed"] += 1
        status = call.status or "queued"
        queue_seconds = queue_time_seconds(call)
        if queue_seconds is not None:
            metrics.TWILIO_QUEUE_SECONDS.observe(queue_seconds)
        await self.reporter.change(
            job.dial_id,
            lambda: self.ledger.adopt_call(
                job.dial_id, call.sid, status, queue_seconds=queue_seconds
            ),
        )
        log.info(
            "dialed dial %s for lead %s of business %s to %s: call %s (%s%s)",
            job.dial_id,
            job.lead_id,
            job.business_id,
            job.phone,
            call.sid,
            status,
            f", queued {queue_seconds:g}s at Twilio" if queue_seconds else "",
        )

    async def _look_up(self, job: Job, failure: TwilioFailure) -> Found:
        """Twilio may have the call: look (twice, its list lags) before sending again."""
        try:
            found = await self.lookup.find_after_settling(job)
        except REQUEST_ERRORS as exc:
            log.warning(
                "dial %s: create failed (%s) and Twilio cannot be asked whether the"
                " call exists (%r); the reconciler will",
                job.dial_id,
                failure.message,
                exc,
            )
            return Found.UNKNOWN
        if found is None:
            return Found.NOTHING
        await self.lookup.adopt(job, found, "after a failed create answer")
        return Found.CALL

    async def _back_off(self, state: CreateState, failure: TwilioFailure) -> bool:
        """Wait before the next round; False when there is none (the row ended)."""
        job = state.job
        if state.failures >= MAX_CREATE_REQUESTS:
            await self.fail(job, failure, gave_up=state.failures)
            return False
        delay = backoff_seconds(state.failures, self.rng)
        self.runtime.counters["create-retried"] += 1
        log.info(
            "dial %s: create answered %s %s (%s); retry %d in %.2fs",
            job.dial_id,
            failure.status or "-",
            failure.code or "",
            failure.message,
            state.failures,
            delay,
        )
        if time.time() + delay > state.dial_by:
            await self.deadline_passed(job, failure, "retrying the create")
            return False
        await self.runtime.wait(delay)
        return True

    # -- ending a row Twilio will never report on ----------------------------------------

    async def deadline_passed(
        self, job: Job, failure: TwilioFailure | None, doing: str
    ) -> None:
        """The row ends `canceled`/`dial-deadline-passed` (unless it got its call)."""
        changed, _ = await self.reporter.change(
            job.dial_id,
            lambda: self.ledger.finish(
                job.dial_id,
                "canceled",
                error_message=DIAL_DEADLINE_PASSED,
                only_without_call=True,
            ),
        )
        if changed:
            self.runtime.counters["refused-stale"] += 1
            log.info(
                "refused stale dial %s for lead %s of business %s: dial_by passed while"
                " %s%s; reported canceled (%s)",
                job.dial_id,
                job.lead_id,
                job.business_id,
                doing,
                f" (last answer: {failure.message})" if failure else "",
                DIAL_DEADLINE_PASSED,
            )

    async def fail(self, job: Job, failure: TwilioFailure, gave_up: int = 0) -> None:
        """The row ends `failed` with Twilio's reason (unless it got its call)."""
        message = failure.message or f"HTTP {failure.status}"
        if gave_up:
            message = f"gave up after {gave_up} create requests: {message}"
        changed, _ = await self.reporter.change(
            job.dial_id,
            lambda: self.ledger.finish(
                job.dial_id,
                "failed",
                error_code=failure.code,
                error_message=message,
                only_without_call=True,
            ),
        )
        if changed:
            self.runtime.counters["failed"] += 1
            log.info(
                "failed dial %s for lead %s of business %s to %s: Twilio error %s: %s",
                job.dial_id,
                job.lead_id,
                job.business_id,
                job.phone,
                error_label(failure),
                message,
            )
