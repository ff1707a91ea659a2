"""`streams ledger active [--json] [--default-limit]`: exit 1 when a business is over."""

from __future__ import annotations

import json
import sys
from typing import TextIO

from streams.dialers.twilio.ledger import businesses_over_limit
from streams.ops.ledger.reader import active_calls, business_limits
from streams.ops.ledger.view import report_json, report_lines
from streams.settings import Settings


def run_ledger_active(
    settings: Settings,
    as_json: bool = False,
    default_limit_only: bool = False,
    out: TextIO | None = None,
) -> int:
    """The verification query, each business judged against its own limit
    (`business.control`, or with `default_limit_only` the default); 1 if one is over."""
    out = out or sys.stdout
    rows = active_calls(settings.database_url)
    limits = {} if default_limit_only else business_limits(settings)
    default = settings.max_outbound_calls_per_business
    within = not businesses_over_limit(rows, default, limits)
    if as_json:
        print(json.dumps(report_json(rows, default, limits, within)), file=out)
    else:
        print("\n".join(report_lines(rows, default, limits)), file=out)
    return 0 if within else 1
