"""The worker's line per decision, at the level `DECISION_LOG_LEVEL` sets, and its summary.

Every note the core makes (a lead waiting, a dial granted, an outcome...) is a line
naming the lead and business. At `info` (the default) each is logged at INFO: about
7 microseconds of the worker's one core per line with the worker's formatter
(`streams/worker.py`), a few percent of its time at full speed. At `debug` each is
logged at DEBUG, which costs nothing unless DEBUG is on, and one INFO line a second
counts the decisions of that second by kind. Notes that say something went wrong
(`WARNING_NOTES`) are lines of their own at WARNING at either level.
"""

from __future__ import annotations

import collections
import logging

from streams.limiter_table import Note

#: Notes worth more than INFO: a lease expiring means a status was lost somewhere.
WARNING_NOTES = frozenset({"lease-expired", "dead-lettered", "redelivered"})
#: The values `DECISION_LOG_LEVEL` takes.
LEVELS = {"info": logging.INFO, "debug": logging.DEBUG}


class DecisionLog:
    """Logs each note at the decision level and counts them for the summary."""

    def __init__(self, logger: logging.Logger, level: str):
        self._log = logger
        self._level = LEVELS[level]
        #: Whether a summary line is wanted (the decisions themselves are at DEBUG).
        self.summarised = self._level < logging.INFO
        self._counts: collections.Counter[str] = collections.Counter()

    def note(self, note: Note) -> None:
        if note.kind in WARNING_NOTES:
            self._log.warning("%s", note.message)
        elif self._log.isEnabledFor(self._level):
            self._log.log(self._level, "%s", note.message)
        if self.summarised:
            self._counts[note.kind] += 1

    def summary(self, seconds: float) -> None:
        """Log the decisions counted since the last summary, one INFO line, if any."""
        if not self._counts:
            return
        counts = ", ".join(f"{n} {kind}" for kind, n in self._counts.most_common())
        self._counts.clear()
        self._log.info("decisions in the last %.0f s: %s", seconds, counts)
