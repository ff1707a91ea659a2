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
| `REJECTED` | any other error | no, and asking again will not change that |
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import re

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


class Kind(enum.Enum):
    """What a failed create request says about the call (module doc's table)."""

    NOT_SENT = "not-sent"
    RATE_LIMITED = "rate-limited"
    SERVER_ERROR = "server-error"
    NO_ANSWER = "no-answer"
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


def error_label(failure: TwilioFailure) -> str:
    """Twilio's error code, or the HTTP status without one: the errors metric's label."""
    return str(failure.code or failure.status)
