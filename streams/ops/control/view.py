"""What `streams business` prints."""

from __future__ import annotations

import json
from typing import Any

from streams.topics import BusinessControl, CallingWindow, RetryPolicy


def control_line(control: BusinessControl, default_limit: int) -> str:
    """The business's limit (its own, or the default) and whether it is paused."""
    limit = control.limit if control.limit is not None else f"{default_limit} (default)"
    state = "paused" if control.paused else "running"
    return f"business {control.business_id}: limit {limit}, {state}"


def worker_text(business: dict[str, Any] | None, port: int) -> str:
    """The worker's live view of the business, or that no worker answered."""
    if business is None:
        return f"(no worker answering on localhost:{port})"
    return json.dumps(business, indent=2)


def policy_lines(
    control: BusinessControl,
    default_window: CallingWindow | None,
    default_retry: RetryPolicy | None,
) -> list[str]:
    """The business's calling window and retry policy: its own, or the defaults."""
    window = control.window or default_window
    retry = control.retry or default_retry
    return [
        f"  calling window: {'any hour' if window is None else window.describe()}"
        + (" (default)" if control.window is None else ""),
        f"  retries: {'off' if retry is None else retry.describe()}"
        + (" (default)" if control.retry is None else ""),
    ]
