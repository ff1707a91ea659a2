"""`streams demo` (streams/devtools/demo/) end to end, as a newcomer runs it, on the test
broker."""

from __future__ import annotations

import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from rich.console import Console

from streams.devtools.demo.model import Scenario, seed_leads
from streams.devtools.demo.readers import ledger_peaks
from streams.devtools.demo.view import summarize
from streams.dialers.simulated import concurrency_from_ledger
from streams.topics import LeadRequest, record_key
from tests.support.ports import free_port

LIMIT = 3
BUSINESSES = ("A", "B", "C")


def demo_env(bootstrap: str, tmp_path: Path) -> dict[str, str]:
    """Settings of a demo that shares the test broker with nobody."""
    tag = uuid.uuid4().hex[:8]
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "TOPIC_PREFIX": f"demo{tag}.",
        "STREAMS_APP_ID": f"demo-{tag}",
        "WORKER_WEB_PORT": str(free_port()),
        "STREAMS_DATA_DIR": str(tmp_path / "data"),
        "MAX_OUTBOUND_CALLS_PER_BUSINESS": str(LIMIT),
        "PYTHONUNBUFFERED": "1",
    }


def demo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "streams", "demo", "--talk-seconds", "1,2", *args]


def processes_with(variable: str, value: str) -> list[int]:
    """Pids of live processes whose environment has variable=value (Linux /proc)."""
    wanted = f"{variable}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if wanted in environ and state != "Z":
            found.append(int(entry.name))
    return found


def the_ledger(tmp_path: Path) -> Path:
    ledgers = list((tmp_path / ".streams-demo").glob("dialer-*.jsonl"))
    assert len(ledgers) == 1, ledgers
    return ledgers[0]


def test_seed_leads_are_valid_and_unique_per_run() -> None:
    leads = seed_leads(3, 5, "run1") + seed_leads(3, 5, "run2")
    assert len({lead["lead_id"] for lead in leads}) == 30
    for lead in leads:
        decoded = LeadRequest.decode(
            json.dumps(lead).encode(), record_key(lead["business_id"])
        )
        assert decoded.business_id in BUSINESSES
    assert [lead["lead_id"] for lead in leads[:2]] == ["A-run1-1", "A-run1-2"]


def test_demo_fails_clearly_when_kafka_is_not_there(tmp_path: Path) -> None:
    env = demo_env(f"127.0.0.1:{free_port()}", tmp_path)  # nothing listens there
    run = subprocess.run(
        demo_command(), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2, run.stdout + run.stderr
    errors = [
        line for line in run.stderr.splitlines() if line.startswith("streams: error:")
    ]
    assert len(errors) == 1 and "no Kafka broker answers at" in errors[0], run.stderr
    assert "Traceback" not in run.stderr


def test_summary_calls_a_violation_out_loud(tmp_path: Path) -> None:
    """The verdict comes from the ledger: four overlapping calls of A must fail the run."""
    ledger = tmp_path / "dialer-x.jsonl"
    lines = [
        {
            "event": "placed",
            "at": 100.0 + n,
            "dial_id": f"A:A-x-{n}:1",
            "lead_id": f"A-x-{n}",
            "business_id": "A",
            "phone": "+14155550101",
        }
        for n in range(4)
    ]
    lines += [
        {**line, "event": "ended", "at": 110.0 + n, "status": "completed"}
        for n, line in enumerate(lines)
    ]
    ledger.write_text("".join(json.dumps(line) + "\n" for line in lines))
    scenario = Scenario("x", LIMIT, seed_leads(1, 4, "x"))
    console = Console(file=io.StringIO(), width=100)
    peaks, overall = ledger_peaks(ledger)
    assert summarize(console, scenario, peaks, overall, ledger, {}, LIMIT) is False
    text = console.file.getvalue()
    assert "LIMIT VIOLATED: business A had 4 calls at once (limit 3)" in text, text
    assert "stayed within" not in text


@pytest.mark.integration
def test_demo_runs_the_seed_scenario_within_the_limit(kafka_broker, tmp_path: Path) -> None:
    env = demo_env(kafka_broker.bootstrap, tmp_path)
    # Within 90 s: refills come as calls end, no lead waits out a lease. Calls of 2-3 s
    # leave the withdrawal of C's run time to reach the worker before C's calls end.
    run = subprocess.run(
        demo_command("--talk-seconds", "2,3"),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert f"every business stayed within {LIMIT} calls" in run.stdout, output

    # The independent record: the dialer's ledger of this run.
    ledger = the_ledger(tmp_path)
    peaks = concurrency_from_ledger(ledger)
    assert peaks == {b: LIMIT for b in BUSINESSES}, (
        f"each business should fill its {LIMIT} slots and never exceed them: {peaks}"
    )
    # No global limit: all three businesses were on their three calls at the start.
    assert ledger_peaks(ledger)[1] == LIMIT * len(BUSINESSES), output

    # What the summary printed agrees with the ledger.
    for business in BUSINESSES:
        assert re.search(
            rf"^\s*{business}\s+{LIMIT} \(limit {LIMIT}\)\s+5/5", run.stdout, re.MULTILINE
        ), output
    assert f"overall peak: {LIMIT * len(BUSINESSES)} calls at once" in run.stdout, output
    assert "outcomes: 15 of 15 leads" in run.stdout, output
    # The last business's run was withdrawn once its calls were placed: its waiting
    # leads ended withdrawn and were never called, its calls went on.
    assert f"withdrawing run {env_run_id(run.stdout)} of business C" in run.stdout, output
    # A call of C may end before the withdrawal reaches the worker, so one waiting lead
    # may be dialed first; every other one ends withdrawn, none is both.
    called = {line["lead_id"] for line in ledger_lines(ledger) if line["event"] == "placed"}
    called_c = len({lead for lead in called if lead.startswith("C-")})
    withdrawn = re.search(r"withdrawn (\d+)", run.stdout)
    assert withdrawn is not None, output
    assert called_c >= LIMIT and int(withdrawn.group(1)) >= 1, (called, output)
    assert called_c + int(withdrawn.group(1)) == 5, (called, output)
    # The live view, without a terminal, printed plain progress lines, not a flood.
    progress = [line for line in run.stdout.splitlines() if line.startswith("[")]
    assert 2 <= len(progress) <= 40, progress
    assert f"(peak {LIMIT * len(BUSINESSES)})" in progress[-1], progress
    assert all(f"{b}: 0 on a call, 0 waiting, 5/5 done" in progress[-1] for b in BUSINESSES)

    # It stopped what it started: no process of this demo's worker is left.
    assert processes_with("STREAMS_APP_ID", env["STREAMS_APP_ID"]) == []
    # The broker was not the demo's to start, nor to stop.
    assert "stopping Kafka broker" not in output


@pytest.mark.integration
def test_ctrl_c_during_the_live_view_stops_everything(kafka_broker, tmp_path: Path) -> None:
    env = demo_env(kafka_broker.bootstrap, tmp_path)
    # Its own process group, like a shell job: Ctrl-C goes to the whole group.
    demo = subprocess.Popen(
        demo_command("--leads-per-business", "8"),
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in demo.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    worker_pid = None
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail("the demo ended before the live view:\n" + "".join(seen))
            seen.append(line)
            match = re.search(r"started worker \(pid (\d+)\)", line)
            if match:
                worker_pid = int(match.group(1))
            if re.search(r"calls live [1-9]", line):  # calls are live: the view runs
                break
        else:
            pytest.fail("no live calls within 90s:\n" + "".join(seen))
        assert worker_pid is not None, "".join(seen)
        os.killpg(demo.pid, signal.SIGINT)
        demo.wait(timeout=40)  # stopping never waits out a lease
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(10)
    while (line := lines.get(timeout=5)) is not None:
        seen.append(line)
    output = "".join(seen)

    assert demo.returncode in (130, 0), output
    assert "Traceback" not in output, output
    assert f"stopping worker (pid {worker_pid})" in output, output
    # Every part stopped when asked: none was killed after its stop timeout.
    assert "killing the worker" not in output, output
    assert "did not stop within" not in output, output
    assert processes_with("STREAMS_APP_ID", env["STREAMS_APP_ID"]) == []
    # What happened before the interrupt still gets its verdict from the ledger.
    peaks = concurrency_from_ledger(the_ledger(tmp_path))
    assert peaks and max(peaks.values()) <= LIMIT, peaks
    assert f"every business stayed within {LIMIT} calls" in output, output


def env_run_id(stdout: str) -> str:
    """The demo's run id, from its banner (`streams demo · run ID`)."""
    match = re.search(r"streams demo · run (\w+)", stdout)
    assert match, stdout
    return match.group(1)


def ledger_lines(ledger: Path) -> list[dict]:
    return [json.loads(line) for line in ledger.read_text().splitlines() if line.strip()]
