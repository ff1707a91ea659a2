"""Runtime control through `streams business ...` on a running worker."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from streams.dialers.simulated import concurrency_from_ledger
from streams.ops.control.reader import current_control, current_controls
from streams.topics import BusinessControl, record_key
from tests.support.deployment import Deployment
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


def cli(deployment: Deployment, worker, *args: str) -> str:
    env = {**deployment.env, "WORKER_WEB_PORT": str(worker.web_port)}
    result = subprocess.run(
        [sys.executable, "-m", "streams", "business", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def view(worker, business_id: str, lead: str | None = None) -> dict:
    url = f"http://127.0.0.1:{worker.web_port}/businesses/{business_id}/"
    with urllib.request.urlopen(
        url + (f"?lead={lead}" if lead else ""), timeout=5
    ) as reply:
        return json.load(reply)


def test_pause_resume_and_lower_the_limit_of_one_business(deployment):
    worker = deployment.start_worker()
    worker.wait_serving()
    assert "paused" in cli(deployment, worker, "pause", "P")
    deployment.produce_leads(
        [
            {"lead_id": f"P{n}", "business_id": "P", "phone": "+14155550100"}
            for n in range(6)
        ]
    )
    paused = eventually(lambda: (v := view(worker, "P"))["waiting"] == 6 and v)
    assert paused["paused"] and paused["active"] == []
    lead = view(worker, "P", lead="P4")["lead"]
    assert lead["state"] == "waiting" and lead["ahead"] == 4
    assert lead["waits_for"] == "the business is paused"
    assert '"waiting": 6' in cli(deployment, worker, "show", "P")

    cli(deployment, worker, "set-limit", "P", "2")
    cli(deployment, worker, "resume", "P")
    resumed = eventually(lambda: len((v := view(worker, "P"))["active"]) == 2 and v)
    assert resumed["waiting"] == 4 and resumed["limit"] == 2
    assert "limit 2, running" in cli(deployment, worker, "show", "P")

    deployment.start_dialer(talk_seconds=(0.5, 1.0))
    outcomes = deployment.read(
        "leads.outcomes", until=lambda recs: len({r["lead_id"] for r in recs}) == 6
    )
    assert len({r["lead_id"] for r in outcomes}) == 6
    assert concurrency_from_ledger(deployment.ledger) == {"P": 2}


def test_controls_are_read_to_the_end_latest_per_business(deployment):
    """The reader stops at each partition's end (no batch to wait for) and keeps every
    business's last record, wherever its partition."""
    businesses = [f"C{n}" for n in range(12)]
    first = [(record_key(b), BusinessControl(b, 1, False).encode()) for b in businesses]
    then = [
        (record_key(b), BusinessControl(b, n, n % 2 == 0).encode())
        for n, b in enumerate(businesses)
    ]
    deployment.produce("business.control", first + then)
    assert current_controls(deployment.settings) == {
        b: BusinessControl(b, n, n % 2 == 0) for n, b in enumerate(businesses)
    }
    assert current_control(deployment.settings, "nobody") == BusinessControl("nobody")
