"""What each `streams business` action does to a business's configuration."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from streams.topics import BusinessControl

#: The actions that change the configuration, given the current one and `--limit`.
CHANGES: dict[str, Callable[[BusinessControl, int | None], BusinessControl]] = {
    "set-limit": lambda control, limit: dataclasses.replace(control, limit=limit),
    "reset-limit": lambda control, _: dataclasses.replace(control, limit=None),
    "pause": lambda control, _: dataclasses.replace(control, paused=True),
    "resume": lambda control, _: dataclasses.replace(control, paused=False),
}
