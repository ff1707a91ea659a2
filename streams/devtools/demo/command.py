"""`streams demo`: start what is missing, send the seed scenario, watch it live, judge
it from the dialer's ledger, stop what was started."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.live import Live

from streams.devtools.demo.model import (
    Scenario,
    WithdrawalPlan,
    demo_namespace,
    demo_overrides,
    seed_leads,
)
from streams.devtools.demo.processes import Demo
from streams.devtools.demo.readers import (
    LedgerTail,
    OutcomeReader,
    WorkerView,
    ledger_peaks,
)
from streams.devtools.demo.view import plain_line, render, summarize
from streams.devtools.leads import produce_leads
from streams.errors import StreamsError
from streams.ops.runs.reader import send_withdrawal
from streams.settings import Settings, settings_environment

DEMO_DIR = ".streams-demo"
#: Frames per second of the live view (and of its loop).
REFRESH_PER_SECOND = 4
#: Without a terminal: a progress line at most this often, and at least every
#: PLAIN_HEARTBEAT seconds when nothing changes.
PLAIN_INTERVAL = 1.0
PLAIN_HEARTBEAT = 10.0


class _Stop(Exception):
    """SIGTERM arrived: stop like Ctrl-C, exit 143."""


def watch(
    demo: Demo,
    scenario: Scenario,
    ledger: LedgerTail,
    view: WorkerView,
    reader: OutcomeReader,
    timeout: float,
    plan: WithdrawalPlan | None = None,
) -> bool:
    """Show the run until every lead has an outcome (True) or `timeout` passes (False);
    withdraw the run of `plan` when it is due."""
    console = demo.console
    period = 1.0 / REFRESH_PER_SECOND
    deadline = time.monotonic() + timeout

    def step() -> bool:
        reader.poll()
        ledger.read()
        if plan is not None and plan.due(ledger.calls):
            send_withdrawal(demo.settings, plan.business, plan.run_id)
            plan.sent = True
            console.print(
                f"withdrawing run {plan.run_id} of business {plan.business}: its waiting"
                " leads end withdrawn ⛔, its calls in progress are not hung up",
                highlight=False,
                soft_wrap=True,
            )
        view.fetch(timeout=period)
        demo.check_worker_alive("while the demo ran")
        if not demo.dialer_alive():
            raise StreamsError(
                "the simulated dialer stopped unexpectedly; see"
                f" {demo.rel(demo.workdir / 'dialer.log')}"
            )
        return reader.done()

    if console.is_terminal and not console.is_dumb_terminal:
        with Live(
            render(scenario, ledger.calls, view.businesses, reader.outcomes),
            console=console,
            auto_refresh=False,
            transient=False,
        ) as live:
            while True:
                finished = step()
                live.update(
                    render(scenario, ledger.calls, view.businesses, reader.outcomes),
                    refresh=True,
                )
                if finished:
                    return True
                if time.monotonic() > deadline:
                    return False
                time.sleep(period)
    last_line, last_at = None, 0.0
    while True:
        finished = step()
        line = plain_line(scenario, ledger.calls, view.businesses, reader.outcomes)
        now = time.monotonic()
        state = line.split("]", 1)[1]  # without the clock
        if (
            finished
            or (state != last_line and now - last_at >= PLAIN_INTERVAL)
            or (now - last_at >= PLAIN_HEARTBEAT)
        ):
            console.print(line, highlight=False, soft_wrap=True)
            last_line, last_at = state, now
        if finished:
            return True
        if now > deadline:
            return False
        time.sleep(period)


def check_flags(businesses: int, leads_per_business: int) -> None:
    if not 1 <= businesses <= 26:
        raise StreamsError(f"--businesses must be 1-26 (A-Z), got {businesses}")
    if leads_per_business < 1:
        raise StreamsError(
            f"--leads-per-business must be at least 1, got {leads_per_business}"
        )


def run_demo(
    settings: Settings,
    *,
    leads_per_business: int = 5,
    businesses: int = 3,
    talk_seconds: tuple[float, float] = (2.0, 5.0),
    timeout: float = 300.0,
    console: Console | None = None,
) -> int:
    """Run the demo; the exit status: 0 all well, 1 a limit violated or the run timed
    out, 130 Ctrl-C, 143 SIGTERM. Setup problems raise `StreamsError` (exit status 2)."""
    check_flags(businesses, leads_per_business)
    console = console or Console()
    environ = dict(os.environ)
    overrides = demo_overrides(settings, talk_seconds, environ)
    run_id = uuid.uuid4().hex[:8]
    workdir = Path.cwd() / DEMO_DIR
    workdir.mkdir(parents=True, exist_ok=True)
    worker_data = workdir / "worker-data"
    namespace = demo_namespace(run_id, str(worker_data), environ)
    if "STREAMS_DATA_DIR" in namespace:
        shutil.rmtree(worker_data, ignore_errors=True)  # a previous run's table
    env = {
        **environ,
        **settings_environment(settings),
        **overrides,
        **namespace,
        "PYTHONUNBUFFERED": "1",
    }
    settings = Settings.from_env(env)
    demo = Demo(settings, console, workdir, run_id, talk_seconds)
    limit = settings.max_outbound_calls_per_business

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        raise _Stop()

    previous_term = None
    if threading.current_thread() is threading.main_thread():
        previous_term = signal.signal(signal.SIGTERM, on_term)
    reader: OutcomeReader | None = None
    ledger = LedgerTail(demo.ledger_path)
    scenario: Scenario | None = None
    code = 0
    try:
        console.rule(f"streams demo · run {run_id}", style="cyan")
        demo.ensure_broker()
        demo.create_topics()
        if overrides:
            demo.say(
                "demo timings (set these variables to choose your own): "
                + " ".join(f"{var}={value}" for var, value in overrides.items()),
                style="dim",
            )
        demo.start_worker(env)
        demo.start_dialer()
        view = WorkerView(settings.worker_web_port)
        demo.wait_worker(view)
        leads = seed_leads(businesses, leads_per_business, run_id)
        scenario = Scenario(run_id, limit, leads)
        reader = OutcomeReader(settings, run_id, scenario.lead_ids)
        produce_leads(settings, leads, progress=False)
        scenario.started = time.monotonic()
        excess = leads_per_business - limit
        console.print(
            f"sent {len(leads)} leads: {businesses} businesses × {leads_per_business},"
            f" limit {limit} per business, so "
            + (
                f"{excess} of each business's leads must wait"
                if excess > 0
                else "no lead has to wait"
            ),
            highlight=False,
            soft_wrap=True,
        )
        last = chr(ord("A") + businesses - 1)
        plan = WithdrawalPlan(last, run_id, after_calls=min(limit, leads_per_business))
        finished = watch(demo, scenario, ledger, view, reader, timeout, plan)
        if not finished:
            console.print(
                f"✘ timed out after {timeout:g}s with"
                f" {len(scenario.lead_ids) - len(reader.outcomes)} leads still"
                " without an outcome",
                style="bold red",
                highlight=False,
            )
            code = 1
    except KeyboardInterrupt:
        console.print("interrupted; stopping", style="yellow")
        code = 130
    except _Stop:
        console.print("terminated; stopping", style="yellow")
        code = 143
    finally:
        demo.stop_all(before=[ledger.close] + ([reader.close] if reader else []))
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
    if scenario is not None:
        outcomes = reader.outcomes if reader is not None else {}
        peaks, overall = ledger_peaks(demo.ledger_path)
        if not summarize(
            console,
            scenario,
            peaks,
            overall,
            demo.ledger_path,
            outcomes,
            limit,
            complete=code == 0,
        ):
            code = 1
    return code
