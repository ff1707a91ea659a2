"""`streams business set-limit|reset-limit|pause|resume|set-window|reset-window|set-retry|
reset-retry|show BUSINESS`."""

from __future__ import annotations

import sys
from typing import TextIO

from streams.ops.control.model import CHANGES, Change
from streams.ops.control.reader import current_control, worker_business, write_control
from streams.ops.control.view import control_line, policy_lines, worker_text
from streams.settings import Settings


def run_business(
    settings: Settings,
    action: str,
    business_id: str,
    limit: Change = None,
    out: TextIO | None = None,
) -> int:
    """Apply `action` to the business's configuration, setting `limit` (a limit, a
    calling window or a retry policy), or only show it with the local worker's view;
    print the result."""
    out = out or sys.stdout
    control = current_control(settings, business_id)
    change = CHANGES.get(action)
    if change is not None:
        control = change(control, limit)
        write_control(settings, control)
        print(f"business {business_id}: {action} sent", file=sys.stderr)
    print(control_line(control, settings.max_outbound_calls_per_business), file=out)
    if action == "show" or "window" in action or "retry" in action:
        lines = policy_lines(control, settings.default_window(), settings.default_retry())
        print("\n".join(lines), file=out)
    if action == "show":
        business = worker_business(settings, business_id)
        print(worker_text(business, settings.worker_web_port), file=out)
    return 0
