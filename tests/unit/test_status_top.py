"""`streams status` and `streams top` on hand-made worker answers: no broker, no network.

Every worker answer here has the shape of the worker's web views (`streams/app.py`):
GET /businesses/, GET /businesses/{id}/?lead=ID and GET /counters/.
"""

from __future__ import annotations

import io
import json
import re
import time
import urllib.parse

import pytest

from streams.ops.lag.model import GroupSample, PartitionOffsets, evaluate
from streams.ops.status.command import run_status as run_status_command
from streams.ops.status.model import (
    Reply,
    StatusError,
    merge_businesses,
    parse_workers,
    require_an_answer,
)
from streams.ops.status.reader import http_get_json
from streams.ops.status.view import active_lines, business_line, format_all, lead_lines
from streams.ops.top import model as tp
from streams.ops.top import view as top_view
from streams.ops.top.command import run_top
from streams.ops.top.reader import LagWatcher
from streams.settings import Settings

# -- hand-made worker answers ----------------------------------------------------------


def call(
    business: str, lead: str, age: float, status: str = "in-progress", attempt: int = 1
) -> dict:
    return {
        "dial_id": f"{business}:{lead}:{attempt}",
        "lead_id": lead,
        "status": status,
        "age_seconds": age,
        "lease_left_seconds": 90.0 - age,
    }


def business(
    bid: str,
    active: list[dict] = (),
    waiting: int = 0,
    oldest: float | None = None,
    limit: int = 3,
    paused: bool = False,
    held: int = 0,
    outcomes: dict | None = None,
) -> dict:
    return {
        "business_id": bid,
        "limit": limit,
        "paused": paused,
        "active": list(active),
        "waiting": waiting,
        "oldest_waiting_seconds": oldest,
        "held_statuses": held,
        "outcomes": outcomes or {},
    }


W1, W2, W3 = "10.0.0.1:6066", "10.0.0.2:6066", "10.0.0.3:6066"

A = business(
    "A",
    [
        call("A", "a1", 40.0, "in-progress"),
        call("A", "a2", 12.5, "ringing"),
        call("A", "a3", 1.2, "granted"),
    ],
    waiting=2,
    oldest=30.0,
)
B = business("biz-10", [call("biz-10", "b1", 5.0)], waiting=0)
C = business("biz-2", [], waiting=0, outcomes={"busy": 1, "completed": 4})
P = business("P", [], waiting=4, oldest=300.0, paused=True)


class FakeWorkers:
    """`get(worker, path, timeout)` over a dict of worker -> path -> (code, body); a
    worker missing from it is down."""

    def __init__(self, answers: dict[str, dict[str, tuple[int, object]]]):
        self.answers = answers
        self.asked: list[tuple[str, str]] = []

    def __call__(self, worker: str, path: str, timeout: float) -> Reply:
        self.asked.append((worker, path))
        if worker not in self.answers:
            return Reply(worker, None, None, "connection refused")
        paths = self.answers[worker]
        base = path.split("?")[0]
        if path in paths:
            code, body = paths[path]
        elif base in paths:
            code, body = paths[base]
        elif "*" in paths:  # e.g. a 503 for every path
            code, body = paths["*"]
        elif base.startswith("/businesses/") and base != "/businesses/":
            code, body = (
                404,
                {
                    "business_id": urllib.parse.unquote(base.split("/")[2]),
                    "active": [],
                    "waiting": 0,
                    "lead": None,
                },
            )
        else:
            code, body = 404, {"error": "not found"}
        return Reply(worker, code, body, None)


def listing(*businesses: dict) -> tuple[int, dict]:
    return 200, {"businesses": list(businesses)}


def one(found: dict, lead: dict | None = None) -> tuple[int, dict]:
    return 200, {**found, **({"lead": lead} if lead is not None else {})}


# -- parse_workers ------------------------------------------------------------------------


def test_parse_workers_defaults_dedupes_and_rejects_nonsense():
    assert parse_workers(None, 6066) == ["localhost:6066"]
    assert parse_workers("", 7000) == ["localhost:7000"]
    assert parse_workers("a:1, b:2,a:1,,", 6066) == ["a:1", "b:2"]
    assert parse_workers("worker-0.svc", 6066) == ["worker-0.svc:6066"]
    assert parse_workers(":6067", 6066) == ["localhost:6067"]
    assert parse_workers("http://w:80/", 6066) == ["w:80"]
    assert parse_workers("[::1]:6066", 1) == ["[::1]:6066"]
    for bad in ("a:b", "a:99999", "a b:1", "a:1:2", ",,"):
        with pytest.raises(StatusError, match="--workers wants host:port"):
            parse_workers(bad, 6066)


def test_reply_states():
    assert Reply("w", None, None, "connection refused").state == "down"
    assert Reply("w", 503, {"ready": False}).state == "not ready"
    assert Reply("w", 200, {"businesses": []}).state == "ok"
    assert Reply("w", 404, {"active": []}).state == "ok"
    assert Reply("w", 500, None, "HTTP 500, not JSON").state == "error"
    assert Reply("w", 200, [1, 2]).state == "error"
    assert (
        Reply("w", None, None, "no answer within 3 s").describe()
        == "w down (no answer within 3 s)"
    )


def test_http_get_json_reports_a_refused_connection():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: refused
        code, body, error = http_get_json(f"http://127.0.0.1:{port}/businesses/", 1)
    assert (code, body, error) == (None, None, "connection refused")


# -- merging ----------------------------------------------------------------------------


def test_merge_takes_each_workers_partitions_and_reports_the_rest():
    replies = [
        Reply(W1, *listing(A, C)),
        Reply(W2, *listing(B, P)),
        Reply(W3, 503, {"ready": False, "businesses": []}),
        Reply("10.0.0.4:6066", None, None, "connection refused"),
    ]
    merged = merge_businesses(replies)
    assert set(merged.businesses) == {"A", "biz-2", "biz-10", "P"}
    assert merged.businesses["P"]["worker"] == W2
    assert merged.businesses["A"]["worker"] == W1
    assert merged.duplicates == {}
    assert [r.worker for r in merged.answered] == [W1, W2]
    assert [r.state for r in merged.unanswered] == ["not ready", "down"]


def test_merge_keeps_the_first_worker_of_a_business_reported_twice():
    stale = business("A", [], waiting=0)
    merged = merge_businesses([Reply(W1, *listing(A)), Reply(W2, *listing(stale, B))])
    assert merged.businesses["A"]["worker"] == W1
    assert len(merged.businesses["A"]["active"]) == 3
    assert merged.duplicates == {"A": [W1, W2]}
    assert any(
        "business A is reported by 10.0.0.1:6066, 10.0.0.2:6066" in line
        for line in format_all(merged)
    )


def test_merge_treats_an_answer_without_a_list_as_an_error():
    merged = merge_businesses([Reply(W1, 200, {"something": "else"})])
    assert merged.replies[0].state == "error"
    with pytest.raises(StatusError, match="no worker answered"):
        require_an_answer(merged.replies)


def test_require_an_answer_says_whether_workers_are_down_or_recovering():
    with pytest.raises(StatusError) as down:
        require_an_answer([Reply(W1, None, None, "connection refused")])
    assert str(down.value) == f"no worker answered: {W1} down (connection refused)"
    with pytest.raises(StatusError, match="no worker is ready: .*not ready"):
        require_an_answer(
            [Reply(W1, 503, {"ready": False}), Reply(W2, None, None, "connection refused")]
        )
    require_an_answer([Reply(W1, 503, {"ready": False}), Reply(W2, *listing())])


# -- streams status: formatting -----------------------------------------------------------


def test_business_line_and_active_calls():
    assert business_line(A) == (
        "business A: limit 3, running, 3 of 3 active, 2 waiting, oldest for 30s"
    )
    assert business_line(P) == (
        "business P: limit 3, paused, 0 of 3 active, 4 waiting, oldest for 5m00s"
    )
    draining = business("D", [call("D", f"d{n}", n) for n in range(1, 4)], limit=1, held=2)
    assert business_line({**draining, "worker": W2}) == (
        "business D: limit 1, running, 3 of 1 active (draining to the limit), none"
        f" waiting, 2 statuses held for an unknown dial  [worker {W2}]"
    )
    lines = active_lines(A)
    assert lines[0].split() == ["dial_id", "lead", "phase", "age", "lease", "left"]
    # Oldest call first, columns aligned.
    assert [line.split()[:3] for line in lines[1:]] == [
        ["A:a1:1", "a1", "in-progress"],
        ["A:a2:1", "a2", "ringing"],
        ["A:a3:1", "a3", "granted"],
    ]
    assert lines[1].split()[3:] == ["40s", "50s"]
    starts = {tuple(m.start() for m in re.finditer(r"\S+", line))[:3] for line in lines}
    assert len(starts) == 1  # dial_id, lead and phase start in the same columns
    overdue = business("O", [{**call("O", "o1", 100.0), "lease_left_seconds": -0.5}])
    assert active_lines(overdue)[1].endswith("due now")
    assert active_lines(C) == []


def test_format_all_sorts_naturally_and_totals():
    merged = merge_businesses([Reply(W1, *listing(C, A, B, P))])
    lines = format_all(merged)
    assert lines[0] == f"workers: {W1} ok, 4 businesses"
    heads = [line.split(":")[0] for line in lines if line.startswith("business ")]
    assert heads == ["business A", "business P", "business biz-2", "business biz-10"]
    assert lines[-1] == "4 businesses: 4 active, 6 waiting, oldest wait 5m00s"
    assert not any("[worker" in line for line in lines)  # one worker: no worker tags


def test_format_all_with_a_worker_down_tags_businesses_and_warns():
    merged = merge_businesses(
        [Reply(W1, *listing(A)), Reply(W2, None, None, "connection refused")]
    )
    lines = format_all(merged)
    assert lines[0] == f"workers: {W1} ok, 1 business; {W2} down (connection refused)"
    assert lines[1].endswith(f"[worker {W1}]")
    assert lines[-1] == "note: businesses of workers that did not answer are missing"


def test_lead_lines_explain_where_a_lead_stands():
    waiting = {
        "lead_id": "a5",
        "business_id": "A",
        "state": "waiting",
        "attempt": 1,
        "outcome": None,
        "dial_id": None,
        "ahead": 1,
        "waits_for": "a free slot: 3 of 3 in use, 1 lead(s) ahead",
    }
    assert lead_lines("A", "a5", waiting) == [
        "lead a5: waiting (attempt 1), number 2 in line",
        "  waits for a free slot: 3 of 3 in use, 1 lead(s) ahead",
    ]
    active = {
        "lead_id": "a2",
        "business_id": "A",
        "state": "active",
        "attempt": 1,
        "outcome": None,
        "dial_id": "A:a2:1",
    }
    assert lead_lines("A", "a2", active, A) == [
        "lead a2: on a call (attempt 1), dial A:a2:1, phase ringing for 12s;"
        " it holds one of the business's slots"
    ]
    done = {
        "lead_id": "a0",
        "business_id": "A",
        "state": "done",
        "attempt": 2,
        "outcome": "busy",
        "dial_id": "A:a0:2",
    }
    assert lead_lines("A", "a0", done) == [
        "lead a0: done, outcome busy (dial A:a0:2, attempt 2)"
    ]
    assert lead_lines("A", "zz", None)[0].startswith("lead zz: unknown to business A")


# -- streams status: the command ----------------------------------------------------------


def run_status(get, *args, **kwargs) -> tuple[int, str]:
    out = io.StringIO()
    code = run_status_command(*args, out=out, get=get, **kwargs)
    return code, out.getvalue()


def test_status_of_all_businesses_merges_workers_text_and_json():
    workers = FakeWorkers(
        {
            W1: {"/businesses/": listing(A, C)},
            W2: {"/businesses/": listing(B, P)},
            W3: {"*": (503, {"ready": False, "businesses": []})},
        }
    )
    code, text = run_status(workers, [W1, W2, W3])
    assert code == 0
    assert text.splitlines()[0] == (
        f"workers: {W1} ok, 2 businesses; {W2} ok, 2 businesses;"
        f" {W3} not ready (restoring its table)"
    )
    assert (
        f"business biz-10: limit 3, running, 1 of 3 active, none waiting  [worker {W2}]"
        in text
    )

    code, raw = run_status(workers, [W1, W2, W3], as_json=True)
    assert code == 0
    report = json.loads(raw)
    assert report["workers"] == [
        {"worker": W1, "state": "ok", "businesses": 2},
        {"worker": W2, "state": "ok", "businesses": 2},
        {"worker": W3, "state": "not ready", "error": "restoring its table"},
    ]
    assert [b["business_id"] for b in report["businesses"]] == ["A", "P", "biz-2", "biz-10"]
    assert report["businesses"][0]["active"][0]["dial_id"] == "A:a1:1"
    assert report["businesses"][0]["worker"] == W1
    assert report["totals"] == {
        "businesses": 4,
        "active": 4,
        "waiting": 6,
        "oldest_waiting_seconds": 300.0,
    }


def test_status_with_no_worker_answering_is_an_error():
    with pytest.raises(StatusError, match=f"no worker answered: {W1} down"):
        run_status(FakeWorkers({}), [W1])


def test_status_of_one_business_asks_everyone_and_takes_the_owner():
    lead = {
        "lead_id": "a5",
        "business_id": "A",
        "state": "waiting",
        "attempt": 1,
        "outcome": None,
        "dial_id": None,
        "ahead": 1,
        "waits_for": "a free slot: 3 of 3 in use, 1 lead(s) ahead",
    }
    workers = FakeWorkers({W1: {}, W2: {"/businesses/A/": one(A, lead)}})
    code, text = run_status(workers, [W1, W2], "A", "a5")
    assert code == 0
    assert (W1, "/businesses/A/?lead=a5") in workers.asked
    lines = text.splitlines()
    assert lines[0] == f"workers: {W1} ok; {W2} ok"
    assert lines[1].startswith("business A: limit 3, running, 3 of 3 active, 2 waiting")
    assert lines[1].endswith(f"[worker {W2}]")
    assert lines[-2:] == [
        "lead a5: waiting (attempt 1), number 2 in line",
        "  waits for a free slot: 3 of 3 in use, 1 lead(s) ahead",
    ]

    code, raw = run_status(workers, [W1, W2], "A", "a5", as_json=True)
    report = json.loads(raw)
    assert (code, report["found"], report["worker"], report["lead"]["ahead"]) == (
        0,
        True,
        W2,
        1,
    )
    assert "lead" not in report["business"]


def test_status_of_one_business_quotes_its_id():
    workers = FakeWorkers({W1: {}})
    run_status(workers, [W1], "a b/c", "l&1")
    assert workers.asked == [(W1, "/businesses/a%20b%2Fc/?lead=l%261")]


def test_status_of_an_unknown_business_or_lead_is_exit_1():
    workers = FakeWorkers({W1: {}, W2: {"/businesses/A/": one(A)}})
    code, text = run_status(workers, [W1, W2], "nope")
    assert code == 1
    assert text.splitlines()[-1] == (
        f"business nope: not found on any of the 2 workers that answered ({W1}, {W2})"
    )
    code, text = run_status(FakeWorkers({W1: {}}), [W1, W2], "nope")
    assert code == 1
    assert text.splitlines()[-1] == (
        f"business nope: not found on the worker that answered ({W1}); it may be on one"
        f" that did not: {W2} down (connection refused)"
    )
    code, text = run_status(
        FakeWorkers({W2: {"/businesses/A/": one(A, None)}}), [W2], "A", "zz"
    )
    assert code == 1 and "lead zz: unknown to business A" in text
    with pytest.raises(StatusError, match="--lead needs the BUSINESS"):
        run_status(workers, [W1], None, "a5")


# -- streams top: rows, sorting, rates ----------------------------------------------------


def rows_of(*businesses: dict) -> list[tp.Row]:
    merged = merge_businesses([Reply(W1, *listing(*businesses))])
    return tp.build_rows(merged, tp.DialCounter())


def test_row_states():
    rows = {
        r.business_id: r
        for r in rows_of(
            A, B, C, P, business("D", [call("D", "d1", 1), call("D", "d2", 1)], limit=1)
        )
    }
    assert {k: r.state for k, r in rows.items()} == {
        "A": "full",
        "biz-10": "",
        "biz-2": "idle",
        "P": "paused",
        "D": "draining",
    }


def test_sorting_by_every_key_and_only_the_top_n():
    many = [
        business(
            f"biz-{n}",
            [call(f"biz-{n}", "l", 1.0)] * (n % 4),
            waiting=n % 7,
            oldest=float(n) if n % 7 else None,
        )
        for n in range(200)
    ]
    rows = rows_of(*many)
    for sort in tp.SORTS:
        full = tp.top_rows(rows, sort, None)
        assert tp.top_rows(rows, sort, 10) == full[:10]  # the heap agrees with a full sort
        assert len(full) == 200
    by_waiting = tp.top_rows(rows, "waiting", 3)
    assert [r.waiting for r in by_waiting] == [6, 6, 6]
    assert by_waiting[0].oldest >= by_waiting[1].oldest >= by_waiting[2].oldest
    assert [r.business_id for r in tp.top_rows(rows, "business", 4)] == [
        "biz-0",
        "biz-1",
        "biz-2",
        "biz-3",
    ]  # natural order: biz-2 before biz-10
    assert tp.top_rows(rows, "active", 1)[0].active == 3
    assert tp.top_rows(rows, "oldest", 1)[0].oldest == 199.0
    assert tp.top_rows(rows, "waiting", 0) == []


def test_dial_counter_counts_new_dials_per_business_over_the_window():
    counter = tp.DialCounter(window=60)
    counter.observe(
        [business("A", [call("A", "a1", 5.0), call("A", "a2", 70.0)])], now=1000
    )
    assert counter.count("A") == 1  # a2 was granted 70 s ago: outside the window
    counter.observe([business("A", [call("A", "a1", 7.0), call("A", "a3", 0.5)])], now=1002)
    assert counter.count("A") == 2  # a1 again is not new; a3 is
    counter.observe([business("A", [])], now=1030)
    assert counter.count("A") == 2  # ended calls still count within the minute
    counter.observe([business("A", [])], now=1058)
    assert counter.count("A") == 1  # a1 (granted at 995) left the window
    counter.observe([business("A", [])], now=1062)
    assert counter.count("A") == 0 and counter.seen == {}


def test_counter_history_rates_and_a_restarted_worker():
    history = tp.CounterHistory(window=60)
    history.observe(W1, {"dial-granted": 100}, now=0)
    assert history.per_minute("dial-granted", [W1]) is None
    history.observe(W1, {"dial-granted": 110}, now=30)
    assert history.per_minute("dial-granted", [W1]) == pytest.approx(20.0)
    history.observe(W2, {"dial-granted": 5}, now=30)
    history.observe(W2, {"dial-granted": 35}, now=60)
    assert history.per_minute("dial-granted", [W1, W2]) == pytest.approx(80.0)
    history.observe(W1, {"dial-granted": 3}, now=60)  # restarted: counters began again
    assert history.per_minute("dial-granted", [W1]) is None
    for t in range(90, 400, 30):
        history.observe(W2, {"dial-granted": t}, now=t)
    assert history.samples[W2][0][0] >= 400 - 30 - 60  # older samples dropped


# -- streams top: the view ---------------------------------------------------------------


def make_top(workers: list[str] = (W1,), sort: str = "waiting") -> tp.Top:
    return tp.Top(list(workers), sort=sort)


def counters(**kinds: int) -> dict:
    return {kind.replace("_", "-"): n for kind, n in kinds.items()}


def test_plain_snapshot_has_header_rows_and_totals():
    top = make_top([W1, W2])
    top.update(
        [Reply(W1, *listing(A, C)), Reply(W2, None, None, "connection refused")],
        [
            Reply(
                W1,
                200,
                counters(
                    dial_granted=9, outcome_completed=4, outcome_busy=1, dead_lettered=2
                ),
            ),
            Reply(W2, None, None, "connection refused"),
        ],
        now=time.time(),
    )
    text = top_view.plain(top, None)
    lines = text.splitlines()
    assert lines[0].endswith(f"workers 1/2 answering  {W2} down (connection refused)")
    assert lines[1].split() == [
        "businesses",
        "2",
        "active",
        "3",
        "waiting",
        "2",
        "oldest",
        "wait",
        "30s",
        "dials",
        "granted",
        "9",
        "since",
        "start",
    ]
    assert lines[2] == ("outcomes since start: completed 4 · busy 1  dead-lettered 2")
    assert lines[3] == "sorted by waiting, top 2 of 2"
    assert lines[4].split() == [
        "business",
        "worker",
        "active",
        "limit",
        "waiting",
        "oldest",
        "dials/min",
        "state",
        "outcomes",
    ]
    assert lines[5].split() == ["A", W1, "3", "3", "2", "30s", "3", "full"]
    assert lines[6].split() == [
        "biz-2",
        W1,
        "0",
        "3",
        "0",
        "-",
        "0",
        "idle",
        "completed",
        "4",
        "busy",
        "1",
    ]
    assert lines[7].split() == ["total", "3", "2", "30s", "3"]
    assert "✅" not in text and "⏳" not in text


def test_live_frame_draws_icons_only_for_small_counts():
    from rich.console import Console

    big = business(
        "Big",
        [call("Big", f"l{n}", 1.0) for n in range(8)],
        waiting=12000,
        oldest=4000.0,
        limit=10,
    )
    top = make_top()
    top.update([Reply(W1, *listing(A, big, C))], [Reply(W1, 200, {})], now=time.time())
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(top_view.render(top, 10, interval=2, keys=True))
    text = console.export_text()
    rows = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert "✅✅✅" in rows["A"] and "⏳⏳" in rows["A"]
    assert "✅" not in rows["Big"] and "⏳" not in rows["Big"]
    assert rows["Big"].split()[1:4] == ["8", "10", "12,000"]
    assert "keys: 1 active  2 waiting  3 oldest  4 dials  5 business  q quit" in text
    assert rows["total"].split()[1:3] == ["11", "12,002"]
    assert text.index("Big") < text.index(" A ")  # sorted by waiting


def test_ten_thousand_businesses_render_only_the_rows_shown():
    from rich.console import Console

    many = [
        business(
            f"biz-{n}",
            [call(f"biz-{n}", f"l{k}", k + 0.5) for k in range(n % 4)],
            waiting=(n * 7919) % 50 if n % 4 == 3 else 0,
            oldest=float(n % 300) if n % 4 == 3 else None,
        )
        for n in range(10_000)
    ]
    answer = Reply(W1, *listing(*many))
    top = make_top(sort="waiting")
    top.update([answer], [Reply(W1, 200, counters(dial_granted=15_000))], now=time.time())
    console = Console(width=120, height=40, record=True, file=io.StringIO())
    console.print(top_view.render(top, top_view.rows_for_height(40, lag=False)))
    text = console.export_text()
    shown = [line for line in text.splitlines() if line.strip().startswith("biz-")]
    assert len(shown) == 40 - top_view.OVERHEAD_LINES
    assert len(text.splitlines()) <= 40
    assert top.totals.businesses == 10_000
    assert top.totals.active == sum(n % 4 for n in range(10_000))
    assert f"sorted by waiting, top {40 - top_view.OVERHEAD_LINES} of 10,000" in text


def test_keys_choose_the_sort():
    assert tp.SORT_KEYS == {
        "1": "active",
        "2": "waiting",
        "3": "oldest",
        "4": "dials",
        "5": "business",
    }
    with pytest.raises(ValueError):
        make_top(sort="size")


def test_run_top_without_a_terminal_prints_one_snapshot():
    workers = FakeWorkers({W1: {"/businesses/": listing(A, B), "/counters/": (200, {})}})
    out = io.StringIO()
    code = run_top(
        Settings(), [W1], sort="business", limit_rows=1, lag=False, out=out, get=workers
    )
    assert code == 0
    lines = out.getvalue().splitlines()
    assert lines[3] == "sorted by business, top 1 of 2"
    assert [line.split()[0] for line in lines[4:]] == ["business", "A", "total"]
    assert sorted(workers.asked) == [(W1, "/businesses/"), (W1, "/counters/")]
    with pytest.raises(StatusError, match="no worker answered"):
        run_top(Settings(), [W1], lag=False, out=io.StringIO(), get=FakeWorkers({}))


def test_lag_header_segments():
    watcher = LagWatcher(Settings(topic_prefix="x."), interval=1)
    assert watcher.state.group == "x.call-limiter"
    assert (
        "".join(t for t, _ in top_view.lag_segments(watcher.state))
        == "lag x.call-limiter: reading..."
    )
    watcher.state.status = evaluate(
        [
            GroupSample(
                "x.call-limiter",
                100.0,
                "STABLE",
                1,
                (PartitionOffsets("x.leads.requests", 0, 5, 9, 4, 2.5),),
            )
        ]
    )
    assert "".join(t for t, _ in top_view.lag_segments(watcher.state)) == (
        "lag x.call-limiter OK  4 records / 2.5s  (stable, 1 member)"
    )
    watcher.state.error = "cannot reach Kafka at localhost:9092: timed out"
    assert "unavailable: cannot reach Kafka" in "".join(
        t for t, _ in top_view.lag_segments(watcher.state)
    )
