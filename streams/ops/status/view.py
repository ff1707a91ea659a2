"""What `streams status` prints: lines of text, or one JSON document."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streams.ops.formatting import format_age
from streams.ops.runs.view import run_lines
from streams.ops.status.model import Found, Merged, Reply, count_active, natural_key, totals
from streams.topics import to_iso

# -- text ----------------------------------------------------------------------------


def business_line(business: dict[str, Any]) -> str:
    """One line about a business: limit, paused, active of limit, waiting, oldest wait."""
    active, waiting, limit = (
        count_active(business),
        int(business.get("waiting") or 0),
        business.get("limit"),
    )
    parts = [
        f"limit {limit}",
        "paused" if business.get("paused") else "running",
        f"{active} of {limit} active"
        + (" (draining to the limit)" if isinstance(limit, int) and active > limit else ""),
    ]
    if waiting:
        parts.append(
            f"{waiting} waiting, oldest for"
            f" {format_age(business.get('oldest_waiting_seconds'))}"
        )
    else:
        parts.append("none waiting")
    scheduled = int(business.get("scheduled") or 0)
    if scheduled:
        parts.append(f"{scheduled} scheduled")
    runs = int(business.get("open_runs") or 0)
    if runs:
        parts.append(f"{runs} open run{'s' if runs != 1 else ''}")
    held = business.get("held_statuses") or 0
    if held:
        parts.append(f"{held} status{'es' if held != 1 else ''} held for an unknown dial")
    where = f"  [worker {business['worker']}]" if business.get("worker") else ""
    return f"business {business.get('business_id')}: {', '.join(parts)}{where}"


def active_lines(business: dict[str, Any], indent: str = "  ") -> list[str]:
    """The business's active calls as an aligned table (nothing when there are none)."""
    calls = sorted(business.get("active") or (), key=lambda a: -(a.get("age_seconds") or 0))
    if not calls:
        return []
    rows = [("dial_id", "lead", "phase", "age", "lease left")]
    for call in calls:
        left = call.get("lease_left_seconds")
        rows.append(
            (
                str(call.get("dial_id")),
                str(call.get("lead_id")),
                str(call.get("status")),
                format_age(call.get("age_seconds")),
                "due now" if left is not None and left <= 0 else format_age(left),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            row[0].ljust(widths[0]),
            row[1].ljust(widths[1]),
            row[2].ljust(widths[2]),
            row[3].rjust(widths[3]),
            row[4].rjust(widths[4]),
        ]
        lines.append(indent + "  ".join(cells).rstrip())
    return lines


def lead_lines(
    business_id: str,
    lead_id: str,
    lead: dict[str, Any] | None,
    business: dict[str, Any] | None = None,
) -> list[str]:
    """Where one lead stands and, when it waits, what for."""
    if lead is None:
        return [
            f"lead {lead_id}: unknown to business {business_id} (not received yet,"
            " sent to another business, or never sent)"
        ]
    state, attempt = lead.get("state"), lead.get("attempt")
    dial_id = lead.get("dial_id")
    if state == "waiting":
        ahead = int(lead.get("ahead") or 0)
        return [
            f"lead {lead_id}: waiting (attempt {attempt}), number {ahead + 1} in line",
            f"  waits for {lead.get('waits_for')}",
        ]
    if state == "active":
        call = next(
            (
                a
                for a in (business or {}).get("active") or ()
                if a.get("dial_id") == dial_id
            ),
            None,
        )
        phase = (
            f", phase {call.get('status')} for {format_age(call.get('age_seconds'))}"
            if call
            else ""
        )
        return [
            f"lead {lead_id}: on a call (attempt {attempt}), dial {dial_id}{phase};"
            " it holds one of the business's slots"
        ]
    if state == "scheduled":
        return [f"lead {lead_id}: scheduled (attempt {attempt}) for {lead.get('due')}"]
    if state == "done":
        return [
            f"lead {lead_id}: done, outcome {lead.get('outcome')}"
            + (f" (dial {dial_id}, attempt {attempt})" if dial_id else "")
        ]
    return [f"lead {lead_id}: {state} (attempt {attempt})"]


def policy_lines(business: dict[str, Any]) -> list[str]:
    """The business's calling window and retries, when it has any."""
    lines = []
    if business.get("window"):
        default = " (default)" if business.get("window_default") else ""
        lines.append(f"  calling window: {business['window']}{default}")
    if business.get("retry"):
        default = " (default)" if business.get("retry_default") else ""
        lines.append(f"  retries: {business['retry']}{default}")
    return lines


def workers_line(replies: Sequence[Reply], counts: dict[str, int] | None = None) -> str:
    parts = []
    for reply in replies:
        if reply.state == "ok" and counts is not None:
            n = counts.get(reply.worker, 0)
            parts.append(f"{reply.worker} ok, {n} business{'es' if n != 1 else ''}")
        else:
            parts.append(reply.describe())
    return "workers: " + "; ".join(parts)


def format_all(merged: Merged) -> list[str]:
    """`streams status`: every business, sorted by id, then the totals."""
    several = len(merged.replies) > 1
    lines = [workers_line(merged.replies, merged.counts())]
    for bid in sorted(merged.businesses, key=natural_key):
        business = merged.businesses[bid]
        shown = business if several else {**business, "worker": None}
        lines.append(business_line(shown))
        lines.extend(active_lines(business))
    total = totals(merged.businesses.values())
    summary = (
        f"{total['businesses']:,} business{'es' if total['businesses'] != 1 else ''}:"
        f" {total['active']:,} active, {total['waiting']:,} waiting"
    )
    if total.get("scheduled"):
        summary += f", {total['scheduled']:,} scheduled"
    if total["oldest_waiting_seconds"] is not None:
        summary += f", oldest wait {format_age(total['oldest_waiting_seconds'])}"
    lines.append(summary)
    for bid, workers in sorted(merged.duplicates.items()):
        lines.append(
            f"note: business {bid} is reported by {', '.join(workers)} (a rebalance"
            f" in progress?); shown from {workers[0]}"
        )
    if merged.unanswered:
        lines.append("note: businesses of workers that did not answer are missing")
    return lines


def format_one(found: Found) -> list[str]:
    """`streams status BUSINESS [--lead LEAD]`: the business, its calls and the lead."""
    lines = []
    if len(found.replies) > 1:
        lines.append(workers_line(found.replies))
    if found.business is None:
        answered = [r.worker for r in found.replies if r.state == "ok"]
        missing = [r for r in found.replies if r.state != "ok"]
        which = (
            "the worker" if len(answered) == 1 else f"any of the {len(answered)} workers"
        )
        line = (
            f"business {found.business_id}: not found on {which}"
            f" that answered ({', '.join(answered)})"
        )
        if missing:
            line += "; it may be on one that did not: " + "; ".join(
                r.describe() for r in missing
            )
        return lines + [line]
    lines.append(
        business_line(
            {**found.business, "worker": found.worker if len(found.replies) > 1 else None}
        )
    )
    lines.extend(active_lines(found.business))
    for line in policy_lines(found.business):
        lines.append(line)
    for run in found.business.get("runs") or ():
        lines.extend("  " + line for line in run_lines(run))
    if found.lead_id:
        lines.extend(
            lead_lines(found.business_id, found.lead_id, found.lead, found.business)
        )
    if found.also_on:
        lines.append(
            f"note: also reported by {', '.join(found.also_on)} (a rebalance in"
            f" progress?); shown from {found.worker}"
        )
    return lines


# -- JSON ----------------------------------------------------------------------------


def workers_json(
    replies: Sequence[Reply], counts: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    out = []
    for reply in replies:
        item: dict[str, Any] = {"worker": reply.worker, "state": reply.state}
        if reply.state != "ok":
            item["error"] = reply.error or (
                "restoring its table" if reply.code == 503 else f"HTTP {reply.code}"
            )
        elif counts is not None:
            item["businesses"] = counts.get(reply.worker, 0)
        out.append(item)
    return out


def all_json(merged: Merged, at: float) -> dict[str, Any]:
    return {
        "at": to_iso(at),
        "workers": workers_json(merged.replies, merged.counts()),
        "businesses": [
            merged.businesses[bid] for bid in sorted(merged.businesses, key=natural_key)
        ],
        "totals": totals(merged.businesses.values()),
        "duplicates": merged.duplicates,
    }


def one_json(found: Found, at: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "at": to_iso(at),
        "workers": workers_json(found.replies),
        "business_id": found.business_id,
        "found": found.found,
        "worker": found.worker,
        "business": found.business,
    }
    if found.lead_id:
        out["lead_id"] = found.lead_id
        out["lead"] = found.lead
    if found.also_on:
        out["also_on"] = found.also_on
    return out
