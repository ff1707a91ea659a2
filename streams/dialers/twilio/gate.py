"""Whether the account may dial: open while Twilio accepts our creates, closed after an
error about the account itself (`failures.Kind.ACCOUNT`: a rotated auth token, a From
that is not the account's, a trial account, a URL of ours Twilio rejects).

While closed, the dialer stops taking commands (the feed pauses), dials already taken
wait here with their rows live and uncharged, `/healthz` answers 503 and
`streams_dialer_account_paused` is 1. Resuming needs no operator: after a backoff
(`PROBE_FIRST_SECONDS`, doubling up to `PROBE_MAX_SECONDS`) one waiting dial goes
through as the probe, a real create. If Twilio accepts it, or refuses only its number,
the account is usable again and every dial goes on; if Twilio refuses the account again,
the gate stays closed for twice as long; if the answer says nothing (a 5xx, a timeout),
another probe follows after the same backoff. A probe is a create and not a cheaper
read (fetching the account), because only a create tells that the From number, the URLs
and the account's permissions are right.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable

from streams import metrics
from streams.dialers.twilio.rate import wait_for_any

log = logging.getLogger(__name__)

#: Backoff before the first probe after the account was refused, and its cap.
PROBE_FIRST_SECONDS, PROBE_MAX_SECONDS = 1.0, 60.0


class Passage(enum.Enum):
    """How a create went through the gate."""

    OPEN = "open"
    PROBE = "probe"  # the one create that tests a closed account


class AccountGate:
    """See the module doc. Lives on the dialer's event loop; `closed` may be read from
    any thread (the feed's)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        #: What is wrong with the account while closed; None while open.
        self.problem: str | None = None
        self._backoff = PROBE_FIRST_SECONDS
        self._probe_at = 0.0
        self._probing = False
        self._changed = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self.problem is not None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def enter(self, deadline: float | None, cancel: asyncio.Event) -> Passage | None:
        """Wait until a create may go; None when `deadline` (a clock time) or `cancel`
        comes first."""
        while True:
            now = self._clock()
            if cancel.is_set() or (deadline is not None and now >= deadline):
                return None
            if self.problem is None:
                return Passage.OPEN
            if not self._probing and now >= self._probe_at:
                self._probing = True
                return Passage.PROBE
            wait = None if self._probing else self._probe_at - now
            if deadline is not None:
                wait = deadline - now if wait is None else min(wait, deadline - now)
            await wait_for_any(self._changed, cancel, timeout=wait)

    def refused(self, problem: str) -> None:
        """Twilio refused the account: close (or stay closed, backing off longer)."""
        if self.problem is None:
            self._backoff = PROBE_FIRST_SECONDS
            log.error(
                "dialing paused: %s; dials wait, nothing is failed, a probe create"
                " follows in %.0fs",
                problem,
                self._backoff,
            )
        else:
            self._backoff = min(self._backoff * 2, PROBE_MAX_SECONDS)
            log.warning(
                "dialing still paused: %s; next probe in %.0fs", problem, self._backoff
            )
        self.problem = problem
        self._probing = False
        self._probe_at = self._clock() + self._backoff
        metrics.DIALER_ACCOUNT_PAUSED.set(1)
        self._notify()

    def accepted(self) -> None:
        """A create got past Twilio's account checks: open."""
        if self.problem is not None:
            log.info("dialing resumed: Twilio accepts the account again")
        self.problem = None
        self._probing = False
        metrics.DIALER_ACCOUNT_PAUSED.set(0)
        self._notify()

    def inconclusive(self, passage: Passage | None) -> None:
        """A create whose answer says nothing about the account (or that never went)."""
        if passage is Passage.PROBE and self.problem is not None:
            self._probing = False
            self._probe_at = self._clock() + self._backoff
            self._notify()
