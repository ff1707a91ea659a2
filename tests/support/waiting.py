"""Waiting for a condition instead of sleeping a fixed time.

Tests against real processes cannot know when something will have happened; they can
only know what must eventually hold. `eventually` polls a check until it passes and,
when it never does, fails with the check's own last complaint.

A check either returns what the test goes on with (falsy: not yet) or asserts and
returns True. A check that sees the condition can no longer come true (the process it
waits for has exited) raises `NeverHolds`, so the wait ends at once rather than at the
timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: Exceptions a check may raise while the condition does not hold yet.
NOT_YET: tuple[type[BaseException], ...] = (AssertionError, OSError)


class NeverHolds(AssertionError):
    """The condition can no longer come true; `eventually` stops waiting at once."""


def eventually(
    check: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str | None = None,
) -> T:
    """Call `check` until it returns a truthy value (returned) without raising
    AssertionError or OSError. Past `timeout` seconds the last such exception is raised
    again, or AssertionError naming `what` when the check only returned falsy values.
    `NeverHolds` and exceptions not in `NOT_YET` are raised at once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
            failure: BaseException | None = None
        except NeverHolds:
            raise
        except NOT_YET as exc:
            failure = exc
        if time.monotonic() >= deadline:
            if failure is not None:
                raise failure
            name = what or getattr(check, "__name__", "the condition")
            raise AssertionError(
                f"{name} did not hold within {timeout:g}s (last: {result!r})"
            )
        time.sleep(interval)
