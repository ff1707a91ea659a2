"""`streams run`, run figures in `streams status` and `streams top`, the business's
window and retries in `streams business`, and produce-leads' new flags."""

from __future__ import annotations

import io
import json

import pytest

from streams.cli import main
from streams.devtools.leads import lead_source
from streams.ops.control.model import CHANGES
from streams.ops.control.view import policy_lines
from streams.ops.runs.command import run_show
from streams.ops.runs.reader import run_path
from streams.ops.status.model import Found, Reply
from streams.ops.status.view import business_line, format_one
from streams.ops.top.model import Top
from streams.ops.top.view import plain
from streams.topics import BusinessControl, CallingWindow, RetryPolicy

RUN = {
    "run_id": "spring",
    "business_id": "A",
    "total": 10,
    "waiting": 3,
    "scheduled": 2,
    "live": 1,
    "outcomes": {"completed": 3, "withdrawn": 1},
    "withdrawn": False,
}


def test_run_show_prints_the_figures_of_the_worker_that_knows_the_run():
    asked = []

    def get(worker, path, timeout):
        asked.append(path)
        if worker == "w2":
            return Reply(worker, 200, {"business_id": "A", "run": RUN})
        return Reply(worker, 404, {"business_id": "A", "run": None})

    out = io.StringIO()
    assert run_show(["w1", "w2"], "A", "spring", out=out, get=get) == 0
    assert asked == [run_path("A", "spring")] * 2 == ["/businesses/A/?run=spring"] * 2
    assert out.getvalue().splitlines() == [
        "run spring of business A: open, 10 leads: 3 waiting, 2 scheduled, 1 on a call,"
        " 4 ended",
        "  outcomes so far: completed 3, withdrawn 1",
    ]
    missing = io.StringIO()
    unknown = lambda w, p, t: Reply(w, 404, {"run": None})  # noqa: E731
    assert run_show(["w1"], "A", "nope", out=missing, get=unknown) == 1
    assert "unknown to the workers" in missing.getvalue()
    as_json = io.StringIO()
    run_show(["w2"], "A", "spring", as_json=True, out=as_json, get=get)
    assert json.loads(as_json.getvalue())["run"] == RUN


def test_status_shows_scheduled_leads_open_runs_windows_and_run_figures():
    business = {
        "business_id": "A",
        "limit": 3,
        "paused": False,
        "active": [],
        "waiting": 3,
        "scheduled": 2,
        "open_runs": 1,
        "oldest_waiting_seconds": 5.0,
        "window": "09:00-20:00 mon,tue,wed,thu,fri Europe/Paris",
        "window_default": False,
        "retry": "on busy after 10m, at most 2 attempts",
        "retry_default": True,
        "runs": [RUN],
    }
    assert business_line(business).endswith(
        "3 waiting, oldest for 5.0s, 2 scheduled, 1 open run"
    )
    lines = format_one(Found("A", None, [Reply("w", 200, business)], "w", business))
    assert "  calling window: 09:00-20:00 mon,tue,wed,thu,fri Europe/Paris" in lines
    assert "  retries: on busy after 10m, at most 2 attempts (default)" in lines
    assert any(line.startswith("  run spring of business A: open") for line in lines)


def test_top_shows_scheduled_and_runs_columns_only_when_there_are_some():
    top = Top(["w"])
    plain_business = {"business_id": "A", "limit": 3, "active": [], "waiting": 1}
    top.update([Reply("w", 200, {"businesses": [plain_business]})], [], 100.0)
    assert "sched" not in plain(top, None)
    runs = {**plain_business, "scheduled": 4, "open_runs": 2}
    top.update([Reply("w", 200, {"businesses": [runs]})], [], 101.0)
    table = plain(top, None).splitlines()
    header = next(line for line in table if line.startswith("business "))
    assert header.split()[:6] == ["business", "active", "limit", "waiting", "sched", "runs"]
    assert "scheduled 4" in table[1] and "open runs 2" in table[1]


def test_business_windows_and_retries_are_set_reset_and_shown_with_their_defaults():
    window = CallingWindow.parse("09:00-20:00", "mon-fri", "Europe/Paris")
    retry = RetryPolicy.parse("busy,no-answer", "10m,1h", 3)
    control = CHANGES["set-window"](BusinessControl("A"), window)
    control = CHANGES["set-retry"](control, retry)
    assert (control.window, control.retry) == (window, retry)
    assert policy_lines(control, None, None) == [
        "  calling window: 09:00-20:00 mon,tue,wed,thu,fri Europe/Paris",
        "  retries: on busy,no-answer after 10m,1h, at most 3 attempts",
    ]
    control = CHANGES["reset-retry"](CHANGES["reset-window"](control, None), None)
    assert policy_lines(control, None, RetryPolicy.parse("busy", "1m")) == [
        "  calling window: any hour (default)",
        "  retries: on busy after 1m, at most 2 attempts (default)",
    ]


def test_generated_leads_carry_their_run_schedule_and_zone():
    leads = list(
        lead_source(
            None,
            2,
            1,
            "spring",
            1,
            not_before="2026-03-02T15:00:00.000Z",
            timezone="Europe/Paris",
        )
    )
    assert [lead["lead_id"] for lead in leads] == ["spring-0", "spring-1"]
    assert {lead["run_id"] for lead in leads} == {"spring"}
    assert leads[0]["not_before"] == "2026-03-02T15:00:00.000Z"
    assert leads[0]["timezone"] == "Europe/Paris" and "expires_at" not in leads[0]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["business", "set-window", "A", "--hours", "20:00-09:00"], "start before it ends"),
        (["business", "set-retry", "A", "--on", "busy", "--delays", "soon"], "duration"),
        (["business", "set-retry", "A", "--on", "completed", "--delays", "1m"], "retry on"),
    ],
)
def test_bad_business_settings_fail_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
