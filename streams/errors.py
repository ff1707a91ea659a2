"""The one error base of the project.

Every problem a user has to fix (a bad setting or flag, an unreachable broker, topics
that cannot be used, a ledger that cannot be opened) is a `StreamsError` whose message
is one line naming the cause; `streams.cli.main` prints it and exits with status 2.
"""

from __future__ import annotations


class StreamsError(Exception):
    """A problem the user must fix; the message is one line that names its cause."""
