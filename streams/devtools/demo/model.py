"""The demo's scenario and what it shows, as pure functions of what was read."""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Iterable, Mapping
from typing import Any

from streams.settings import Settings
from streams.topics import LeadOutcome

#: US area codes for the businesses' fictional 555-01xx numbers, in business order.
AREA_CODES = (
    "415",
    "212",
    "312",
    "617",
    "206",
    "303",
    "512",
    "404",
    "305",
    "702",
    "503",
    "612",
    "615",
    "619",
    "214",
    "713",
    "602",
    "215",
    "646",
    "718",
    "310",
    "408",
    "510",
    "720",
    "919",
    "801",
)

Lead = dict[str, Any]
#: One line of the simulated dialer's ledger (JSON): event, at, dial_id, business_id...
LedgerLine = dict[str, Any]


def demo_overrides(
    settings: Settings, talk_seconds: tuple[float, float], environ: Mapping[str, str]
) -> dict[str, str]:
    """Timings that make the demo snappy, for variables the user did not set.

    The deadline and lease settings matter after a Ctrl-C: calls cut off then hold their
    business's slots until their lease ends (granted at most DIAL_DEADLINE +
    RING_TIMEOUT + CALL_TIME_LIMIT + LEASE_GRACE before), and with the production
    defaults (about 12 minutes) the next demo would wait that long. Simulated calls
    last seconds, so these give about 35 seconds.
    """
    wanted = {
        "TICK_INTERVAL_SECONDS": "0.5",
        "DIAL_DEADLINE_SECONDS": "10",
        "DIAL_ACK_TIMEOUT_SECONDS": "3",
        "RING_TIMEOUT_SECONDS": "5",
        "CALL_TIME_LIMIT_SECONDS": f"{max(15.0, 2 * talk_seconds[1]):g}",
        "LEASE_GRACE_SECONDS": "5",
    }
    wanted = {
        var: value for var, value in wanted.items() if not environ.get(var, "").strip()
    }
    deadline = float(wanted.get("DIAL_DEADLINE_SECONDS", settings.dial_deadline_seconds))
    ack = float(wanted.get("DIAL_ACK_TIMEOUT_SECONDS", settings.dial_ack_timeout_seconds))
    if ack >= deadline:  # the user's own value wins; ours must stay below it
        wanted.pop("DIAL_ACK_TIMEOUT_SECONDS", None)
        wanted.pop("DIAL_DEADLINE_SECONDS", None)
    return wanted


def demo_namespace(
    run_id: str, data_dir: str, environ: Mapping[str, str]
) -> dict[str, str]:
    """Topics, consumer groups and worker state of this run's own, for variables the
    user did not set: a previous run's leftovers (slots held by calls cut off by Ctrl-C,
    a table of another app) then never block this one."""
    wanted = {"TOPIC_PREFIX": f"demo-{run_id}-", "STREAMS_DATA_DIR": data_dir}
    return {var: value for var, value in wanted.items() if not environ.get(var, "").strip()}


def restore_text(restore: Mapping[str, Any]) -> str:
    """`/ready/`'s restore figures as the demo shows them while its worker starts."""
    text = f"worker restoring its table: {restore.get('replayed', 0):,} of"
    text += f" {restore.get('total', 0):,} records"
    if restore.get("seconds_left") is not None:
        text += f", about {restore['seconds_left']:.0f} s left"
    return text


def seed_leads(businesses: int, leads_per_business: int, run_id: str) -> list[Lead]:
    """The scenario: businesses A, B, C..., each with its leads (the demo's run), sent one
    business after the other."""
    leads = []
    for b in range(businesses):
        business = chr(ord("A") + b)
        for n in range(1, leads_per_business + 1):
            line = 100 + n if n < 100 else n % 10_000  # 555-0101..0199 are fictional
            leads.append(
                {
                    "lead_id": f"{business}-{run_id}-{n}",
                    "business_id": business,
                    "phone": f"+1{AREA_CODES[b]}555{line:04d}",
                    "priority": 0,
                    "run_id": run_id,
                }
            )
    return leads


@dataclasses.dataclass
class Scenario:
    """What one run sent, and what the demo has seen of it so far."""

    run_id: str
    limit: int
    leads: list[Lead]
    started: float = dataclasses.field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.by_business: dict[str, list[str]] = collections.defaultdict(list)
        for lead in self.leads:
            self.by_business[lead["business_id"]].append(lead["lead_id"])
        self.lead_ids = {lead["lead_id"] for lead in self.leads}

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@dataclasses.dataclass
class WithdrawalPlan:
    """The demo withdraws one business's run once that business has `after_calls` calls
    placed: its waiting leads end withdrawn, the calls in progress go on."""

    business: str
    run_id: str
    after_calls: int
    sent: bool = False

    def due(self, calls: LiveCalls) -> bool:
        return not self.sent and calls.peak.get(self.business, 0) >= self.after_calls


class LiveCalls:
    """The true live calls, with lead ids, from the dialer's ledger lines as they come."""

    def __init__(self) -> None:
        # business -> dial_id -> lead_id
        self.live: dict[str, dict[str, str | None]] = collections.defaultdict(dict)
        self.peak: collections.Counter[str] = collections.Counter()
        self.total_live = self.total_peak = 0
        self.placed = self.refused = self.duplicates = 0

    def apply(self, line: LedgerLine) -> None:
        event, business = line.get("event"), line.get("business_id")
        if not isinstance(business, str):
            return
        if event == "placed":
            self.live[business][line["dial_id"]] = line.get("lead_id")
            self.placed += 1
            self.peak[business] = max(self.peak[business], len(self.live[business]))
            self.total_live += 1
            self.total_peak = max(self.total_peak, self.total_live)
        elif event == "ended":
            if self.live[business].pop(line["dial_id"], None) is not None:
                self.total_live -= 1
        elif event == "refused":
            self.refused += 1
        elif event == "duplicate":
            self.duplicates += 1

    def others(self, businesses: Iterable[str]) -> int:
        """Calls live for businesses other than `businesses` (leads of earlier runs)."""
        ours = set(businesses)
        return sum(len(calls) for b, calls in self.live.items() if b not in ours)


@dataclasses.dataclass(frozen=True)
class BusinessRow:
    """One business of this run: its calls, waiting and finished leads, peak and limit."""

    business: str
    leads: int
    live: int  # calls of this run's leads
    live_earlier: int  # calls of earlier runs' leads
    waiting: int
    waiting_earlier: int
    done: int
    outcomes: collections.Counter[str]
    peak: int
    limit: int
    held: list[dict[str, Any]]  # slots held for calls an earlier run cut off


def business_row(
    scenario: Scenario,
    business: str,
    calls: LiveCalls,
    worker: Mapping[str, dict[str, Any]],
    outcomes: Mapping[str, LeadOutcome],
) -> BusinessRow:
    """The row of `business` from the ledger's calls, the worker's view and outcomes."""
    mine = set(scenario.by_business[business])
    live_leads = list(calls.live.get(business, {}).values())
    live_mine = sum(lead in mine for lead in live_leads)
    state = worker.get(business, {})
    active = state.get("active", [])
    done = [o for lead, o in outcomes.items() if lead in mine]
    done_ids = {o.lead_id for o in done}
    # The worker only counts its waiting leads; the oldest wait first, and this run's
    # are the newest, so this run's waiting are at most those not done or granted.
    granted_mine = {a.get("lead_id") for a in active} & mine
    pending = len(mine - done_ids - granted_mine)
    waiting_all = int(state.get("waiting", 0) or 0)
    waiting_mine = min(waiting_all, pending)
    live_ids = set(live_leads)
    # Slots the limiter still holds for leads of earlier runs with no live call here:
    # calls cut off by a stop, held until their lease ends.
    held = [
        a
        for a in active
        if a.get("lead_id") not in mine and a.get("lead_id") not in live_ids
    ]
    return BusinessRow(
        business=business,
        leads=len(mine),
        live=live_mine,
        live_earlier=len(live_leads) - live_mine,
        waiting=waiting_mine,
        waiting_earlier=waiting_all - waiting_mine,
        done=len(done),
        outcomes=collections.Counter(o.outcome for o in done),
        peak=calls.peak.get(business, 0),
        limit=int(state.get("limit") or scenario.limit),
        held=held,
    )


def rows(
    scenario: Scenario,
    calls: LiveCalls,
    worker: Mapping[str, dict[str, Any]],
    outcomes: Mapping[str, LeadOutcome],
) -> list[BusinessRow]:
    return [
        business_row(scenario, b, calls, worker, outcomes) for b in scenario.by_business
    ]


def violations(peaks: Mapping[str, int], limit: int) -> dict[str, int]:
    """The businesses whose peak of concurrent calls exceeded `limit`."""
    return {b: p for b, p in peaks.items() if p > limit}
