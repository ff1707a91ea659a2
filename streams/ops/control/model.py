"""What each `streams business` action does to a business's configuration."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import cast

from streams.topics import BusinessControl, CallingWindow, RetryPolicy

#: What an action sets: a limit, a calling window, a retry policy, or nothing.
Change = int | CallingWindow | RetryPolicy | None

#: The actions that change the configuration, given the current one and what to set.
CHANGES: dict[str, Callable[[BusinessControl, Change], BusinessControl]] = {
    "set-limit": lambda control, limit: dataclasses.replace(
        control, limit=cast(int, limit)
    ),
    "reset-limit": lambda control, _: dataclasses.replace(control, limit=None),
    "pause": lambda control, _: dataclasses.replace(control, paused=True),
    "resume": lambda control, _: dataclasses.replace(control, paused=False),
    "set-window": lambda control, window: dataclasses.replace(
        control, window=cast(CallingWindow, window)
    ),
    "reset-window": lambda control, _: dataclasses.replace(control, window=None),
    "set-retry": lambda control, retry: dataclasses.replace(
        control, retry=cast(RetryPolicy, retry)
    ),
    "reset-retry": lambda control, _: dataclasses.replace(control, retry=None),
}
