"""`streams status [BUSINESS] [--lead LEAD]`: ask every worker, merge, print."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from streams.ops.status.model import (
    StatusError,
    business_path,
    check_timeout,
    find_business,
    merge_businesses,
    require_an_answer,
)
from streams.ops.status.reader import DEFAULT_TIMEOUT, Get, ask, fetch
from streams.ops.status.view import all_json, format_all, format_one, one_json


def run_status(
    workers: Sequence[str],
    business_id: str | None = None,
    lead_id: str | None = None,
    as_json: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    out: TextIO | None = None,
    get: Get = fetch,
) -> int:
    """`streams status`; 0, 1 (the business, or the lead, is not found), StatusError
    when no worker answered."""
    check_timeout(timeout)
    out = out or sys.stdout
    if lead_id and not business_id:
        raise StatusError("--lead needs the BUSINESS it belongs to")
    if business_id is None:
        merged = merge_businesses(ask(workers, "/businesses/", timeout, get))
        require_an_answer(merged.replies)
        document = all_json(merged, time.time()) if as_json else None
        lines = [] if as_json else format_all(merged)
        code = 0
    else:
        replies = ask(workers, business_path(business_id, lead_id), timeout, get)
        require_an_answer(replies)
        found = find_business(replies, business_id, lead_id)
        document = one_json(found, time.time()) if as_json else None
        lines = [] if as_json else format_one(found)
        code = 0 if found.found and (not lead_id or found.lead is not None) else 1
    if document is not None:
        print(json.dumps(document), file=out, flush=True)
    else:
        print("\n".join(lines), file=out, flush=True)
    return code
