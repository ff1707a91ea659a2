"""Leads for end-to-end tests, and the guarantees every run of them must keep.

The limit is checked on the simulated dialer's ledger (the calls it really placed and
ended), never on the worker's own counters.
"""

from __future__ import annotations

import collections

from streams.dialers.simulated import concurrency_from_ledger
from tests.support.deployment import Deployment

#: MAX_OUTBOUND_CALLS_PER_BUSINESS of a Deployment (the setting's default).
LIMIT = 3


def make_leads(businesses: list[str], per_business: int, run: str = "r") -> list[dict]:
    """Each business's leads in one burst, so that every business saturates its slots."""
    return [
        {
            "lead_id": f"{b}-{run}-{n}",
            "business_id": b,
            "phone": f"+1415{abs(hash((b, n))) % 10**7:07d}",
        }
        for b in businesses
        for n in range(per_business)
    ]


def assert_core_guarantees(deployment: Deployment, leads: list[dict]) -> list[dict]:
    """One outcome per lead (checked by Deployment.outcomes), the limit, no lead twice.
    Returns the dialer's ledger lines."""
    lines = deployment.ledger_lines()
    per_business = concurrency_from_ledger(deployment.ledger)
    assert per_business and max(per_business.values()) <= LIMIT, per_business
    placed = collections.Counter(
        line["lead_id"] for line in lines if line["event"] == "placed"
    )
    assert max(placed.values()) == 1, [lead for lead, n in placed.items() if n > 1]
    assert set(placed) <= {lead["lead_id"] for lead in leads}
    return lines
