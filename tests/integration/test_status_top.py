"""`streams status` and `streams top` against a real worker on the broker.

No dialer runs: each business holds 3 granted dials (the default limit) and the rest of
its leads wait, which is exactly what both commands must show.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.deployment import Deployment, free_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

#: business -> leads sent: 3 get a slot, the others wait.
LEADS = {"S1": 5, "S2": 4}


def streams(deployment: Deployment, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env={**deployment.env, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def queues_held(worker) -> dict[str, dict]:
    """The worker's businesses, once each holds 3 dials and the rest of its leads."""
    seen = {b["business_id"]: b for b in worker.businesses() or ()}
    assert all(
        len(seen.get(bid, {}).get("active", ())) == 3 and seen[bid]["waiting"] == count - 3
        for bid, count in LEADS.items()
    ), f"the worker never held the leads: {seen}"
    return seen


def test_status_and_top_show_active_calls_and_queues(deployment):
    worker = deployment.start_worker()
    worker.wait_serving()
    deployment.produce_leads(
        [
            {"lead_id": f"{bid}-L{n}", "business_id": bid, "phone": "+14155550100"}
            for bid, count in LEADS.items()
            for n in range(1, count + 1)
        ]
    )
    eventually(lambda: queues_held(worker), timeout=30)
    here = f"127.0.0.1:{worker.web_port}"
    down = f"127.0.0.1:{free_port()}"

    # All businesses as JSON, from the worker and one that is down (reported, not fatal).
    run = streams(deployment, "status", "--workers", f"{here},{down}", "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["workers"] == [
        {"worker": here, "state": "ok", "businesses": 2},
        {"worker": down, "state": "down", "error": "connection refused"},
    ]
    found = {b["business_id"]: b for b in report["businesses"]}
    assert set(found) == set(LEADS)
    for bid, count in LEADS.items():
        business = found[bid]
        assert (business["limit"], business["paused"], business["waiting"]) == (
            3,
            False,
            count - 3,
        )
        assert business["worker"] == here
        assert sorted(a["lead_id"] for a in business["active"]) == [
            f"{bid}-L{n}" for n in (1, 2, 3)
        ]
        assert {a["dial_id"] for a in business["active"]} == {
            f"{bid}:{bid}-L{n}:1" for n in (1, 2, 3)
        }
        assert all(
            a["age_seconds"] >= 0 and a["lease_left_seconds"] > 0
            for a in business["active"]
        )
        assert business["oldest_waiting_seconds"] >= 0
    assert report["totals"]["active"] == 6 and report["totals"]["waiting"] == 3

    # One business and one lead, from the default worker (localhost:WORKER_WEB_PORT).
    run = streams(
        deployment, "status", "S1", "--lead", "S1-L5", WORKER_WEB_PORT=str(worker.web_port)
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith(
        "business S1: limit 3, running, 3 of 3 active, 2 waiting, oldest for "
    ), run.stdout
    assert [line.split()[:2] for line in lines[2:5]] == [
        [f"S1:S1-L{n}:1", f"S1-L{n}"] for n in (1, 2, 3)
    ]
    assert lines[-2:] == [
        "lead S1-L5: waiting (attempt 1), number 2 in line",
        "  waits for a free slot: 3 of 3 in use, 1 lead(s) ahead",
    ]

    run = streams(deployment, "status", "nobody", "--workers", here)
    assert run.returncode == 1, run.stderr
    assert (
        run.stdout.strip()
        == f"business nobody: not found on the worker that answered ({here})"
    )

    run = streams(deployment, "status", "--workers", down)
    assert run.returncode == 2
    assert run.stderr.strip() == (
        f"streams: error: no worker answered: {down} down (connection refused)"
    )

    # top without a terminal: one plain snapshot, lag of the worker group in the header.
    run = streams(deployment, "top", "--workers", here, "--sort", "waiting")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert "workers 1/1 answering" in lines[0]
    assert lines[1].split()[:6] == ["businesses", "2", "active", "6", "waiting", "3"]
    assert "dials granted 6 since start" in lines[1]
    group = deployment.settings.topic_prefix + deployment.settings.app_id
    assert lines[2].startswith(f"lag {group}") and "unavailable" not in lines[2], lines[2]
    assert lines[3] == "outcomes since start: none yet"
    assert lines[4] == "sorted by waiting, top 2 of 2"
    table = [line.split() for line in lines[5:]]
    assert table[0] == [
        "business",
        "active",
        "limit",
        "waiting",
        "oldest",
        "dials/min",
        "state",
        "outcomes",
    ]
    assert [row[:4] for row in table[1:3]] == [["S1", "3", "3", "2"], ["S2", "3", "3", "1"]]
    assert [(row[5], row[6]) for row in table[1:3]] == [("3", "full"), ("3", "full")]
    assert table[3][0] == "total" and table[3][1:3] == ["6", "3"]
