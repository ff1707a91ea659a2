"""`streams run show BUSINESS RUN` and `streams run withdraw BUSINESS RUN`."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TextIO

from streams.ops.runs.reader import ask_run, send_withdrawal
from streams.ops.runs.view import run_lines
from streams.ops.status.model import check_timeout, require_an_answer
from streams.ops.status.reader import DEFAULT_TIMEOUT, Get, fetch
from streams.settings import Settings


def run_show(
    workers: Sequence[str],
    business_id: str,
    run_id: str,
    as_json: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    out: TextIO | None = None,
    get: Get = fetch,
) -> int:
    """Print the run's figures from the worker that owns its business; 1 when no
    worker that answered knows the run."""
    check_timeout(timeout)
    out = out or sys.stdout
    replies = ask_run(workers, business_id, run_id, timeout, get)
    require_an_answer(replies)
    run = next(
        (
            r.body["run"]
            for r in replies
            if r.state == "ok" and isinstance(r.body.get("run"), dict)
        ),
        None,
    )
    if as_json:
        print(
            json.dumps({"business_id": business_id, "run_id": run_id, "run": run}), file=out
        )
    elif run is None:
        print(f"run {run_id} of business {business_id}: unknown to the workers", file=out)
    else:
        print("\n".join(run_lines(run)), file=out)
    return 0 if run is not None else 1


def run_withdraw(
    settings: Settings, business_id: str, run_id: str, out: TextIO | None = None
) -> int:
    """Send the run's withdrawal; the worker ends its leads not yet dialed."""
    send_withdrawal(settings, business_id, run_id)
    print(
        f"run {run_id} of business {business_id}: withdrawal sent; its leads not yet"
        " dialed end withdrawn, calls in progress are not hung up",
        file=out or sys.stdout,
    )
    return 0
