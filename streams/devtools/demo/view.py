"""What the demo shows: the live view (rich, or one plain line for logs and pipes) and
the closing summary with its verdict."""

from __future__ import annotations

import collections
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from streams.devtools.demo.model import BusinessRow, LiveCalls, Scenario, rows, violations
from streams.topics import LeadOutcome

OUTCOME_STYLES = {
    "completed": "green",
    "no-answer": "yellow",
    "busy": "yellow",
    "failed": "red",
    "canceled": "red",
    "expired": "red",
    "rejected": "red",
    "withdrawn": "magenta",
}
LIVE, WAITING, EARLIER_LIVE = "✅", "⏳", "📞"
#: More glyphs than this in one cell are shown as a count.
MAX_GLYPHS = 12

Worker = Mapping[str, dict[str, Any]]
Outcomes = Mapping[str, LeadOutcome]


def _outcome_text(counts: collections.Counter[str]) -> Text:
    text = Text()
    for i, (kind, n) in enumerate(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))):
        if i:
            text.append(" · ", style="dim")
        text.append(f"{kind} {n}", style=OUTCOME_STYLES.get(kind, ""))
    return text


def _glyphs(glyph: str, count: int) -> str:
    return " ".join([glyph] * count) if count <= MAX_GLYPHS else f"{glyph} ×{count}"


def _earlier_note(r: BusinessRow) -> str:
    notes = []
    if r.live_earlier:
        notes.append(f"{r.live_earlier} on a call")
    if r.waiting_earlier:
        notes.append(f"{r.waiting_earlier} waiting")
    if r.held:
        left = max(a.get("lease_left_seconds", 0) for a in r.held)
        notes.append(
            f"{len(r.held)} held, "
            + (f"≤{left:.0f}s left" if left > 0 else "lease over, freeing")
        )
    return ", ".join(notes)


def render(
    scenario: Scenario, calls: LiveCalls, worker: Worker, outcomes: Outcomes
) -> Group:
    """One frame of the live view."""
    shown = rows(scenario, calls, worker, outcomes)
    limit = scenario.limit
    header = Text()
    header.append(" calls live now ", style="bold")
    header.append(f"{calls.total_live}", style="bold cyan")
    header.append("   peak ", style="bold")
    header.append(f"{calls.total_peak}", style="bold cyan")
    header.append("   limit ", style="bold")
    header.append(f"{limit} per business", style="bold cyan")
    header.append(f"   {scenario.elapsed():5.1f}s", style="dim")
    done = sum(r.done for r in shown)
    header.append(f"   {done}/{len(scenario.leads)} leads done", style="dim")

    table = Table(
        box=box.ROUNDED,
        header_style="bold",
        expand=False,
        title=f"streams demo · run {scenario.run_id}",
        title_style="bold",
    )
    table.add_column("business", justify="center")
    table.add_column("on a call", min_width=2 * limit + limit)
    table.add_column("waiting", min_width=8)
    table.add_column("done", justify="right")
    table.add_column("outcomes", min_width=28)
    table.add_column("peak/limit", justify="right")
    show_notes = any(r.held or r.live_earlier or r.waiting_earlier for r in shown)
    if show_notes:
        table.add_column("earlier runs", style="dim")
    for r in shown:
        on_call = [_glyphs(LIVE, r.live), _glyphs(EARLIER_LIVE, r.live_earlier)]
        peak_style = "bold red" if r.peak > r.limit else "green"
        cells: list[RenderableType] = [
            Text(r.business, style="bold"),
            Text(" ".join(filter(None, on_call))),
            Text(_glyphs(WAITING, r.waiting)),
            f"{r.done}/{r.leads}",
            _outcome_text(r.outcomes),
            Text(f"{r.peak}/{r.limit}", style=peak_style),
        ]
        if show_notes:
            cells.append(_earlier_note(r))
        table.add_row(*cells)
    others = calls.others(scenario.by_business)
    footer = Text()
    footer.append(
        f" each business ≤ {limit} calls at once; no global limit", style="italic"
    )
    footer.append(
        f" ({len(shown)} businesses may have {len(shown) * limit} calls together)",
        style="dim italic",
    )
    if any(r.live_earlier for r in shown):
        footer.append(
            f"\n {EARLIER_LIVE} a call for a lead of an earlier run: it counts"
            " against the limit too",
            style="dim",
        )
    if any(r.held for r in shown):
        footer.append(
            "\n held: slots of calls an interrupted run cut off; the limiter frees"
            " them when their lease runs out",
            style="dim",
        )
    if others:
        footer.append(
            f"\n {others} calls live for other businesses (leads of earlier runs)",
            style="dim",
        )
    return Group(header, table, footer)


def plain_line(
    scenario: Scenario, calls: LiveCalls, worker: Worker, outcomes: Outcomes
) -> str:
    """The live view as one line, for logs and pipes."""
    parts = []
    for r in rows(scenario, calls, worker, outcomes):
        part = (
            f"{r.business}: {r.live} on a call, {r.waiting} waiting,"
            f" {r.done}/{r.leads} done"
        )
        note = _earlier_note(r)
        parts.append(part + (f" (earlier runs: {note})" if note else ""))
    others = calls.others(scenario.by_business)
    if others:
        parts.append(f"other businesses: {others} on a call")
    return (
        f"[{scenario.elapsed():5.1f}s] calls live {calls.total_live} (peak"
        f" {calls.total_peak}) | " + " | ".join(parts)
    )


def summarize(
    console: Console,
    scenario: Scenario,
    peaks: Mapping[str, int],
    overall: int,
    ledger_path: Path,
    outcomes: Outcomes,
    limit: int,
    complete: bool = True,
) -> bool:
    """The verdict from the ledger's peaks (each business's, and `overall`); True when
    no business exceeded its limit."""
    table = Table(
        box=box.SIMPLE_HEAD,
        title="summary (recomputed from the dialer's ledger)",
        title_style="bold",
        title_justify="left",
    )
    table.add_column("business", justify="center")
    table.add_column("peak concurrent calls", justify="right")
    table.add_column("leads done", justify="right")
    table.add_column("outcomes")
    for business, lead_ids in scenario.by_business.items():
        peak = peaks.get(business, 0)
        done = [outcomes[lead] for lead in lead_ids if lead in outcomes]
        table.add_row(
            business,
            Text(f"{peak} (limit {limit})", style="bold red" if peak > limit else "green"),
            f"{len(done)}/{len(lead_ids)}",
            _outcome_text(collections.Counter(o.outcome for o in done)),
        )
    console.print(table)
    others = {b: p for b, p in peaks.items() if b not in scenario.by_business}
    if others:
        console.print(
            f"calls for {len(others)} other businesses (leads of earlier runs):"
            f" peak {max(others.values())} per business",
            highlight=False,
        )
    counts = collections.Counter(o.outcome for o in outcomes.values())
    console.print(
        f"overall peak: {overall} calls at once (no global limit)", highlight=False
    )
    console.print(
        f"outcomes: {len(outcomes)} of {len(scenario.leads)} leads: "
        + (", ".join(f"{k} {n}" for k, n in counts.most_common()) or "none"),
        highlight=False,
    )
    console.print(f"ledger: {ledger_path}", style="dim", highlight=False, soft_wrap=True)
    over = violations(peaks, limit)
    if over:
        for business, peak in sorted(over.items()):
            console.print(
                f"✘ LIMIT VIOLATED: business {business} had {peak} calls at once"
                f" (limit {limit})",
                style="bold white on red",
                highlight=False,
            )
        return False
    console.print(
        f"✔ every business stayed within {limit} calls"
        + ("" if complete else " (while the demo ran; it did not finish)"),
        style="bold green",
        highlight=False,
        soft_wrap=True,
    )
    return True
