"""Twilio's error answers, and what each tells the dialer about the call it asked for.

Every failed request is reduced to a `TwilioFailure`: the HTTP status, Twilio's error
code and message (what a failed lead's outcome reports), and its `Kind`, which is all
the create loop (`streams.dialers.twilio.create`) decides on:

| kind | when | was a call created? |
|---|---|---|
| `NOT_SENT` | the connection failed | no: the request never reached Twilio |
| `RATE_LIMITED` | 429, or error 20429 | no |
| `SERVER_ERROR` | 5xx | maybe |
| `NO_ANSWER` | timed out, or cut off mid-request | maybe, or it is still on its way |
| `ACCOUNT` | 401/403, or a code in `ACCOUNT_CODES` | no, and no other dial will get one |
| `REJECTED` | any other error | no, and asking again will not change that |

`ACCOUNT` errors are about the account or our own settings, not the number dialed:
every create would get the same answer, so the dialer pauses instead of failing the
whole backlog at CPS speed. Per-destination errors (21211 invalid To, 21214 To cannot be
reached, 21215/13227 no Geo Permission to call that country, 21216 blocked number, 21217
not a valid number, 13223/13224 number Twilio cannot call) end only their lead. An error
code in neither list ends its lead too: pausing on a code we cannot place would let one
unusual number stop every business. Each code as Twilio's error reference,
https://www.twilio.com/docs/api/errors/NNNNN, describes it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import re
from collections.abc import Mapping

import aiohttp
from twilio.base.exceptions import (
    TwilioException,
    TwilioRestException,
    TwilioServiceException,
)

#: A request that failed on the way, not at Twilio.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    asyncio.TimeoutError,
    OSError,
)
#: Everything a request to Twilio may raise that is not a bug of ours.
REQUEST_ERRORS: tuple[type[BaseException], ...] = (TwilioException, *TRANSPORT_ERRORS)

#: Twilio's "Too Many Requests" error code.
TOO_MANY_REQUESTS = 20429
#: Errors about the account or our settings (the module doc): code -> what to fix.
ACCOUNT_CODES: Mapping[int, str] = {
    20003: "authentication failed: TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN (rotated?)",
    20005: "the account is not active (suspended or closed)",
    21205: "Twilio rejects our Url (TWILIO_VOICE_URL)",
    21210: "TWILIO_FROM_NUMBER is not a verified caller id of the account",
    21212: "TWILIO_FROM_NUMBER is not a valid caller id",
    21219: "a trial account may only call verified numbers: upgrade the account",
    21609: "Twilio rejects our StatusCallback URL (PUBLIC_BASE_URL)",
}


class Kind(enum.Enum):
    """What a failed create request says about the call (module doc's table)."""

    NOT_SENT = "not-sent"
    RATE_LIMITED = "rate-limited"
    SERVER_ERROR = "server-error"
    NO_ANSWER = "no-answer"
    ACCOUNT = "account"
    REJECTED = "rejected"


@dataclasses.dataclass(frozen=True)
class TwilioFailure:
    """A failed request reduced to what we decide on and report."""

    status: int  # HTTP status; 0 when no answer came
    code: int | None  # Twilio's error code
    message: str
    kind: Kind = Kind.REJECTED

    @property
    def rate_limited(self) -> bool:
        return self.kind is Kind.RATE_LIMITED

    @property
    def server_error(self) -> bool:
        return self.kind is Kind.SERVER_ERROR

    @classmethod
    def of(cls, exc: TwilioException) -> TwilioFailure:
        """An error answer from Twilio (or the library's own complaint)."""
        if isinstance(exc, TwilioRestException):
            message = re.sub(r"^Unable to \w+ record: ", "", str(exc.msg or ""))
            code = exc.code if isinstance(exc.code, int) else None
            return cls.answered(int(exc.status), code, message)
        if isinstance(exc, TwilioServiceException):
            return cls.answered(int(exc.status), exc.code, exc.detail or exc.title)
        return cls(status=0, code=None, message=str(exc))

    @classmethod
    def answered(cls, status: int, code: int | None, message: str) -> TwilioFailure:
        if status == 429 or code == TOO_MANY_REQUESTS:
            kind = Kind.RATE_LIMITED
        elif status in (401, 403) or code in ACCOUNT_CODES:
            kind = Kind.ACCOUNT
        elif status >= 500:
            kind = Kind.SERVER_ERROR
        else:
            kind = Kind.REJECTED
        return cls(status=status, code=code, message=message, kind=kind)


def classify(exc: BaseException) -> TwilioFailure:
    """The failure of a request that raised one of `REQUEST_ERRORS`."""
    if isinstance(exc, TwilioException):
        return TwilioFailure.of(exc)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return TwilioFailure(0, None, f"cannot connect: {exc}", Kind.NOT_SENT)
    if isinstance(exc, TRANSPORT_ERRORS):
        return TwilioFailure(0, None, f"no answer: {exc!r}", Kind.NO_ANSWER)
    raise TypeError(f"not a Twilio request error: {exc!r}")


def account_problem(failure: TwilioFailure) -> str:
    """What an account-level failure says is wrong, for logs and `/healthz`."""
    hint = ACCOUNT_CODES.get(failure.code or 0, "the account refuses our requests")
    return f"Twilio error {error_label(failure)} ({hint}): {failure.message}"


def error_label(failure: TwilioFailure) -> str:
    """Twilio's error code, or the HTTP status without one: the errors metric's label."""
    return str(failure.code or failure.status)
