"""What `streams run show` prints."""

from __future__ import annotations

from typing import Any


def run_lines(run: dict[str, Any]) -> list[str]:
    """A run's figures: leads received, waiting, scheduled, on a call, outcomes."""
    outcomes = run.get("outcomes") or {}
    done = sum(int(n) for n in outcomes.values())
    state = (
        "withdrawn" if run.get("withdrawn") else "open" if done < run["total"] else "done"
    )
    lines = [
        f"run {run['run_id']} of business {run['business_id']}: {state},"
        f" {run['total']} leads: {run['waiting']} waiting, {run['scheduled']} scheduled,"
        f" {run['live']} on a call, {done} ended",
    ]
    if outcomes:
        lines.append(
            "  outcomes so far: "
            + ", ".join(
                f"{kind} {n}" for kind, n in sorted(outcomes.items(), key=lambda o: -o[1])
            )
        )
    return lines
