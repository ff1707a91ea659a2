"""What `streams business` prints."""

from __future__ import annotations

import json
from typing import Any

from streams.topics import BusinessControl


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
