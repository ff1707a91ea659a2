"""What `streams ledger active` prints: the query and its verdicts, or one JSON object."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from streams.dialers.twilio.ledger import ACTIVE_CALLS_QUERY, format_active_calls


def report_lines(
    rows: Sequence[tuple[str, int]], default: int, limits: Mapping[str, int]
) -> list[str]:
    return [f"-- {ACTIVE_CALLS_QUERY}", *format_active_calls(rows, default, limits)]


def report_json(
    rows: Sequence[tuple[str, int]],
    default: int,
    limits: Mapping[str, int],
    within: bool,
) -> dict[str, Any]:
    return {
        "limit": default,
        "limits": dict(limits),
        "active_calls": dict(rows),
        "within_limit": within,
    }
