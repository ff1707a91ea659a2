"""`streams business set-limit|reset-limit|pause|resume|show BUSINESS`."""

from __future__ import annotations

import sys
from typing import TextIO

from streams.ops.control.model import CHANGES
from streams.ops.control.reader import current_control, worker_business, write_control
from streams.ops.control.view import control_line, worker_text
from streams.settings import Settings


def run_business(
    settings: Settings,
    action: str,
    business_id: str,
    limit: int | None = None,
    out: TextIO | None = None,
) -> int:
    """Apply `action` to the business's configuration (or only show it, with the local
    worker's view); print the result."""
    out = out or sys.stdout
    control = current_control(settings, business_id)
    change = CHANGES.get(action)
    if change is not None:
        control = change(control, limit)
        write_control(settings, control)
        print(f"business {business_id}: {action} sent", file=sys.stderr)
    print(control_line(control, settings.max_outbound_calls_per_business), file=out)
    if action == "show":
        business = worker_business(settings, business_id)
        print(worker_text(business, settings.worker_web_port), file=out)
    return 0
