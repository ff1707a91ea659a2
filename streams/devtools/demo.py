"""`streams demo`: the whole system on one machine, watched live.

Starts what is missing (a local broker, the topics, a worker process, a simulated dialer
thread), sends a seed scenario (businesses A, B, C... with a few leads each), shows live
how many calls each business really has, and ends with the independent record's verdict:
the dialer's ledger, recomputed with `concurrency_from_ledger`, must never show a
business above its limit. Then it stops what it started, and only that.

Files go to `.streams-demo/` under the current directory: `worker.log`, `dialer.log`,
and one ledger per run, `dialer-<run>.jsonl`.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from streams.devtools.leads import produce_leads
from streams.dialers.simulated import (
    SimulatedDialer,
    _ledger_lines,
    concurrency_from_ledger,
)
from streams.errors import StreamsError
from streams.settings import _ENVIRONMENT, ConfigError, Settings
from streams.topics import LEADS_OUTCOMES, LeadOutcome, topic_name

DEMO_DIR = ".streams-demo"
DEFAULT_BOOTSTRAP_HOSTS = ("localhost", "127.0.0.1")
DEFAULT_BOOTSTRAP_PORT = 9092
#: How long the worker may take to serve its web view.
WORKER_START_TIMEOUT = 90.0
#: SIGTERM, then SIGKILL after this long.
WORKER_STOP_TIMEOUT = 30.0
#: Frames per second of the live view (and of its loop).
REFRESH_PER_SECOND = 4
#: Without a terminal: a progress line at most this often, and at least every
#: PLAIN_HEARTBEAT seconds when nothing changes.
PLAIN_INTERVAL = 1.0
PLAIN_HEARTBEAT = 10.0
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
OUTCOME_STYLES = {
    "completed": "green",
    "no-answer": "yellow",
    "busy": "yellow",
    "failed": "red",
    "canceled": "red",
    "expired": "red",
    "rejected": "red",
}
LIVE, WAITING, EARLIER_LIVE = "✅", "⏳", "📞"
#: More glyphs than this in one cell are shown as a count.
MAX_GLYPHS = 12


def demo_overrides(
    settings: Settings, talk_seconds: tuple[float, float], environ: dict[str, str]
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


def settings_environment(settings: Settings) -> dict[str, str]:
    """The environment variables that reproduce `settings` in another process."""
    values = {var: getattr(settings, field) for field, (var, _) in _ENVIRONMENT.items()}
    return {var: str(value) for var, value in values.items() if value is not None}


def seed_leads(businesses: int, leads_per_business: int, run_id: str) -> list[dict]:
    """The scenario: businesses A, B, C..., each with its leads, sent business by business."""
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
                }
            )
    return leads


def total_peak_from_ledger(path: str | os.PathLike) -> int:
    """Peak number of calls live at once over all businesses, ordered like
    `concurrency_from_ledger` (equal times count the end first)."""
    events = [line for line in _ledger_lines(path) if line["event"] in ("placed", "ended")]
    events.sort(key=lambda line: (line["at"], line["event"] == "placed"))
    live = peak = 0
    for line in events:
        live += 1 if line["event"] == "placed" else -1
        peak = max(peak, live)
    return peak


class _Stop(Exception):
    """SIGTERM arrived: stop like Ctrl-C, exit 143."""


class LedgerTail:
    """Follows the dialer's ledger as it grows: the true live calls, with lead ids."""

    def __init__(self, path: Path):
        self.path = path
        self._file = None
        self._partial = ""
        self.live: dict[str, dict[str, str]] = collections.defaultdict(
            dict
        )  # biz -> dial -> lead
        self.peak: collections.Counter[str] = collections.Counter()
        self.total_live = self.total_peak = 0
        self.placed = self.refused = self.duplicates = 0

    def read(self) -> None:
        if self._file is None:
            if not self.path.exists():
                return
            self._file = open(self.path, encoding="utf-8")
        chunk = self._file.read()
        if not chunk:
            return
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()  # "" after a complete line, else a line still growing
        for raw in lines:
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                continue
            self._apply(line)

    def _apply(self, line: dict) -> None:
        event, business = line.get("event"), line.get("business_id")
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

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class WorkerView:
    """The worker's GET /businesses/ view, by business id."""

    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}/businesses/"
        self.businesses: dict[str, dict] = {}

    def fetch(self, timeout: float = 1.0) -> bool:
        """Refresh; False (keeping the last view) when the worker did not answer."""
        try:
            with urllib.request.urlopen(self.url, timeout=timeout) as reply:
                data = json.load(reply)
        except (OSError, ValueError):
            return False
        if not isinstance(data, dict) or not isinstance(data.get("businesses"), list):
            return False
        self.businesses = {
            b["business_id"]: b
            for b in data["businesses"]
            if isinstance(b, dict) and "business_id" in b
        }
        return True


class OutcomeReader:
    """`leads.outcomes` from its end when the run began, keeping this run's leads only."""

    def __init__(self, settings: Settings, run_id: str, lead_ids: set[str]):
        from confluent_kafka import Consumer, TopicPartition

        self.lead_ids = lead_ids
        self.outcomes: dict[str, LeadOutcome] = {}
        self.topic = topic_name(LEADS_OUTCOMES, settings.topic_prefix)
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap_servers,
                "group.id": f"{settings.topic_prefix}streams-demo-{run_id}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "log_level": 3,
            }
        )
        # Start at each partition's current end, read before any lead is sent: every
        # outcome of this run comes later, and old runs' outcomes need not be read.
        metadata = self.consumer.list_topics(self.topic, timeout=15).topics[self.topic]
        starts = []
        for partition in metadata.partitions:
            _low, high = self.consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=15
            )
            starts.append(TopicPartition(self.topic, partition, high))
        self.consumer.assign(starts)

    def poll(self) -> None:
        for message in self.consumer.consume(500, timeout=0):
            if message.error() is not None:
                continue
            try:
                outcome = LeadOutcome.decode(message.value())
            except (ValueError, TypeError):
                continue
            if outcome.lead_id in self.lead_ids:
                self.outcomes.setdefault(outcome.lead_id, outcome)  # outputs may repeat

    def done(self) -> bool:
        return len(self.outcomes) == len(self.lead_ids)

    def close(self) -> None:
        self.consumer.close()


@dataclasses.dataclass
class Scenario:
    """What one run sent, and what the demo has seen of it so far."""

    run_id: str
    limit: int
    leads: list[dict]
    started: float = dataclasses.field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.by_business: dict[str, list[str]] = collections.defaultdict(list)
        for lead in self.leads:
            self.by_business[lead["business_id"]].append(lead["lead_id"])
        self.lead_ids = {lead["lead_id"] for lead in self.leads}

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def _business_row(
    scenario: Scenario,
    business: str,
    ledger: LedgerTail,
    view: WorkerView,
    outcomes: dict[str, LeadOutcome],
) -> dict[str, Any]:
    mine = set(scenario.by_business[business])
    live_leads = list(ledger.live.get(business, {}).values())
    live_mine = sum(lead in mine for lead in live_leads)
    live_earlier = len(live_leads) - live_mine
    state = view.businesses.get(business, {})
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
    counts = collections.Counter(o.outcome for o in done)
    return {
        "business": business,
        "leads": len(mine),
        "live": live_mine,
        "live_earlier": live_earlier,
        "waiting": waiting_mine,
        "waiting_earlier": waiting_all - waiting_mine,
        "done": len(done),
        "outcomes": counts,
        "peak": ledger.peak.get(business, 0),
        "limit": int(state.get("limit") or scenario.limit),
        "held": held,
    }


def _outcome_text(counts: collections.Counter) -> Text:
    text = Text()
    for i, (kind, n) in enumerate(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))):
        if i:
            text.append(" · ", style="dim")
        text.append(f"{kind} {n}", style=OUTCOME_STYLES.get(kind, ""))
    return text


def _rows(
    scenario: Scenario,
    ledger: LedgerTail,
    view: WorkerView,
    outcomes: dict[str, LeadOutcome],
) -> list[dict[str, Any]]:
    return [
        _business_row(scenario, b, ledger, view, outcomes) for b in scenario.by_business
    ]


def _others_live(scenario: Scenario, ledger: LedgerTail) -> int:
    return sum(
        len(calls) for b, calls in ledger.live.items() if b not in scenario.by_business
    )


def render(
    scenario: Scenario,
    ledger: LedgerTail,
    view: WorkerView,
    outcomes: dict[str, LeadOutcome],
) -> Group:
    """One frame of the live view."""
    rows = _rows(scenario, ledger, view, outcomes)
    limit = scenario.limit
    header = Text()
    header.append(" calls live now ", style="bold")
    header.append(f"{ledger.total_live}", style="bold cyan")
    header.append("   peak ", style="bold")
    header.append(f"{ledger.total_peak}", style="bold cyan")
    header.append("   limit ", style="bold")
    header.append(f"{limit} per business", style="bold cyan")
    header.append(f"   {scenario.elapsed():5.1f}s", style="dim")
    done = sum(r["done"] for r in rows)
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
    show_notes = any(r["held"] or r["live_earlier"] or r["waiting_earlier"] for r in rows)
    if show_notes:
        table.add_column("earlier runs", style="dim")
    for r in rows:
        calls = Text(
            " ".join(
                filter(
                    None,
                    [_glyphs(LIVE, r["live"]), _glyphs(EARLIER_LIVE, r["live_earlier"])],
                )
            )
        )
        waiting = Text(_glyphs(WAITING, r["waiting"]))
        peak_style = "bold red" if r["peak"] > r["limit"] else "green"
        cells = [
            Text(r["business"], style="bold"),
            calls,
            waiting,
            f"{r['done']}/{r['leads']}",
            _outcome_text(r["outcomes"]),
            Text(f"{r['peak']}/{r['limit']}", style=peak_style),
        ]
        if show_notes:
            cells.append(_earlier_note(r))
        table.add_row(*cells)
    others = _others_live(scenario, ledger)
    footer = Text()
    footer.append(
        f" each business ≤ {limit} calls at once; no global limit", style="italic"
    )
    footer.append(
        f" ({len(rows)} businesses may have {len(rows) * limit} calls together)",
        style="dim italic",
    )
    if any(r["live_earlier"] for r in rows):
        footer.append(
            f"\n {EARLIER_LIVE} a call for a lead of an earlier run: it counts"
            " against the limit too",
            style="dim",
        )
    if any(r["held"] for r in rows):
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


def _glyphs(glyph: str, count: int) -> str:
    return " ".join([glyph] * count) if count <= MAX_GLYPHS else f"{glyph} ×{count}"


def _earlier_note(r: dict[str, Any]) -> str:
    notes = []
    if r["live_earlier"]:
        notes.append(f"{r['live_earlier']} on a call")
    if r["waiting_earlier"]:
        notes.append(f"{r['waiting_earlier']} waiting")
    if r["held"]:
        left = max(a.get("lease_left_seconds", 0) for a in r["held"])
        notes.append(
            f"{len(r['held'])} held, "
            + (f"≤{left:.0f}s left" if left > 0 else "lease over, freeing")
        )
    return ", ".join(notes)


def plain_line(
    scenario: Scenario,
    ledger: LedgerTail,
    view: WorkerView,
    outcomes: dict[str, LeadOutcome],
) -> str:
    """The live view as one line, for logs and pipes."""
    rows = _rows(scenario, ledger, view, outcomes)
    parts = []
    for r in rows:
        part = (
            f"{r['business']}: {r['live']} on a call, {r['waiting']} waiting,"
            f" {r['done']}/{r['leads']} done"
        )
        note = _earlier_note(r)
        parts.append(part + (f" (earlier runs: {note})" if note else ""))
    others = _others_live(scenario, ledger)
    if others:
        parts.append(f"other businesses: {others} on a call")
    return (
        f"[{scenario.elapsed():5.1f}s] calls live {ledger.total_live} (peak"
        f" {ledger.total_peak}) | " + " | ".join(parts)
    )


# -- starting and stopping -----------------------------------------------------------


def _is_default_bootstrap(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    return (
        "," not in bootstrap
        and host in DEFAULT_BOOTSTRAP_HOSTS
        and port == str(DEFAULT_BOOTSTRAP_PORT)
    )


def _kafka_answers(bootstrap: str) -> bool:
    import socket

    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    reachable = False
    for server in bootstrap.split(","):
        host, _, port = server.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            reachable = True
            break
        except OSError:
            continue
    if not reachable:
        return False
    try:
        AdminClient({"bootstrap.servers": bootstrap, "log_level": 3}).list_topics(
            timeout=10
        )
    except KafkaException:
        return False
    return True


def _port_in_use(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


class Demo:
    """The parts one demo run started, so that it stops exactly those."""

    def __init__(
        self,
        settings: Settings,
        console: Console,
        workdir: Path,
        run_id: str,
        talk_seconds: tuple[float, float],
    ):
        self.settings = settings
        self.console = console
        self.workdir = workdir
        self.run_id = run_id
        self.talk_seconds = talk_seconds
        self.broker = None  # a Broker only when this run started it
        self.interrupted_broker = None  # the Broker whose start() was cut short
        self.worker: subprocess.Popen | None = None
        self.worker_log = workdir / "worker.log"
        self.ledger_path = workdir / f"dialer-{run_id}.jsonl"
        self.dialer: SimulatedDialer | None = None
        self.dialer_thread: threading.Thread | None = None
        self.dialer_stop = threading.Event()
        self.dialer_log_handler: logging.Handler | None = None
        self.hurry = False  # a second Ctrl-C while stopping: do not wait for a clean stop

    def say(self, message: str, style: str | None = None) -> None:
        self.console.print(message, style=style, highlight=False, soft_wrap=True)

    # -- start ---------------------------------------------------------------------

    def ensure_broker(self) -> None:
        bootstrap = self.settings.kafka_bootstrap_servers
        if _is_default_bootstrap(bootstrap):
            from streams.devtools.broker import Broker, BrokerError

            broker = Broker()
            try:
                if broker.start():
                    self.broker = broker
            except BaseException as exc:
                if broker._process is not None:  # it launched a JVM before it failed
                    self.interrupted_broker = broker
                if isinstance(exc, BrokerError):
                    raise StreamsError(str(exc)) from None
                print(file=sys.stderr)  # end the broker's line of progress dots
                raise
        elif not _kafka_answers(bootstrap):
            raise StreamsError(
                f"no Kafka broker answers at {bootstrap}"
                " (KAFKA_BOOTSTRAP_SERVERS); start it, or unset the variable"
                " to let the demo run a local one on localhost:9092"
            )

    def create_topics(self) -> int:
        from streams.kafka import admin

        try:
            created = admin.create_topics(self.settings)
            partitions = admin.check_copartitioned(self.settings)
        except admin.TopicsError as exc:
            raise StreamsError(str(exc)) from None
        if created:
            self.say(f"created {len(created)} topics ({partitions} partitions each)")
        return partitions

    def start_worker(self, env: dict[str, str]) -> None:
        port = self.settings.worker_web_port
        if _port_in_use(port):
            raise StreamsError(
                f"something already listens on port {port} (WORKER_WEB_PORT): a worker"
                " left running? Stop it, or set WORKER_WEB_PORT to a free port"
            )
        log = open(self.worker_log, "wb")
        with log:
            # Its own session: Ctrl-C reaches only the demo, which then stops the
            # worker in order instead of both stopping at once.
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "streams", "worker"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.say(
            f"started worker (pid {self.worker.pid}), log: {self.rel(self.worker_log)}"
        )

    def wait_worker(self, view: WorkerView) -> None:
        began = time.monotonic()
        deadline = began + WORKER_START_TIMEOUT
        status = (
            self.console.status("starting worker...")
            if self.console.is_terminal
            else contextlib.nullcontext()
        )
        if not self.console.is_terminal:
            self.say("starting worker...")
        with status:
            while not view.fetch():
                self.check_worker_alive("during startup")
                if time.monotonic() > deadline:
                    raise StreamsError(
                        f"the worker did not serve {view.url} within"
                        f" {WORKER_START_TIMEOUT:g}s; end of {self.rel(self.worker_log)}:\n"
                        + _log_tail(self.worker_log)
                    )
                time.sleep(0.5)
        self.say(f"worker ready after {time.monotonic() - began:.1f}s")

    def check_worker_alive(self, when: str) -> None:
        if self.worker is not None and self.worker.poll() is not None:
            code = self.worker.returncode
            self.worker = None
            raise StreamsError(
                f"the worker exited (status {code}) {when}; end of"
                f" {self.rel(self.worker_log)}:\n{_log_tail(self.worker_log)}"
            )

    def start_dialer(self) -> None:
        handler = logging.FileHandler(
            self.workdir / "dialer.log", mode="w", encoding="utf-8"
        )
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        )
        dialer_log = logging.getLogger("streams.dialer")
        dialer_log.addHandler(handler)
        dialer_log.setLevel(logging.INFO)
        dialer_log.propagate = False  # keep its lines out of the live view
        self.dialer_log_handler = handler
        self.dialer = SimulatedDialer(
            self.settings, talk_seconds=self.talk_seconds, ledger_path=self.ledger_path
        )
        self.dialer_thread = threading.Thread(
            target=self.dialer.run,
            args=(self.dialer_stop,),
            name="simulated-dialer",
            daemon=True,
        )
        self.dialer_thread.start()
        self.say(
            f"started simulated dialer (talk {self.talk_seconds[0]:g}-"
            f"{self.talk_seconds[1]:g}s), ledger: {self.rel(self.ledger_path)}"
        )

    def dialer_alive(self) -> bool:
        return self.dialer_thread is not None and self.dialer_thread.is_alive()

    # -- stop ----------------------------------------------------------------------

    def stop_dialer(self) -> None:
        if self.dialer_thread is None:
            return
        self.dialer_stop.set()
        if self.dialer_thread.is_alive():
            live = (
                sum(self.dialer.snapshot()["live_by_business"].values())
                if self.dialer
                else 0
            )
            self.say(
                "stopping simulated dialer..."
                + (
                    f" (cutting off {live} live calls: their slots stay held until their"
                    " leases run out)"
                    if live
                    else ""
                )
            )
            self.dialer_thread.join(timeout=20)
            if self.dialer_thread.is_alive():
                self.say("the simulated dialer did not stop within 20s", style="yellow")
        self.dialer_thread = None
        self.dialer = None  # frees its Kafka clients, which would log the broker's exit
        if self.dialer_log_handler is not None:
            logging.getLogger("streams.dialer").removeHandler(self.dialer_log_handler)
            self.dialer_log_handler.close()
            self.dialer_log_handler = None

    def stop_worker(self) -> None:
        worker, self.worker = self.worker, None
        if worker is None:
            return
        if worker.poll() is not None:
            self.say(
                f"worker (pid {worker.pid}) had already exited (status {worker.returncode})"
            )
            return
        self.say(f"stopping worker (pid {worker.pid})...")
        self._signal_worker(worker, signal.SIGTERM)
        deadline = time.monotonic() + WORKER_STOP_TIMEOUT
        while worker.poll() is None and time.monotonic() < deadline and not self.hurry:
            time.sleep(0.1)
        if worker.poll() is None:
            self.say(
                "killing the worker: "
                + (
                    "asked to hurry"
                    if self.hurry
                    else f"it did not stop within {WORKER_STOP_TIMEOUT:g}s"
                ),
                style="yellow",
            )
            self._signal_worker(worker, signal.SIGKILL)
            worker.wait(10)

    @staticmethod
    def _signal_worker(worker: subprocess.Popen, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(worker.pid, sig)  # its own process group: anything it spawned too

    def stop_broker(self) -> None:
        if self.broker is not None:
            broker, self.broker = self.broker, None
            broker.stop()
        elif self.interrupted_broker is not None:
            # start() stops a broker it launched when it fails; make sure of it.
            broker, self.interrupted_broker = self.interrupted_broker, None
            if broker._process.poll() is None:
                broker.stop()
            else:
                self.say("the Kafka broker the demo was starting has stopped")
        elif _is_default_bootstrap(self.settings.kafka_bootstrap_servers):
            self.say(
                f"leaving Kafka running at {self.settings.kafka_bootstrap_servers}"
                " (the demo did not start it)",
                style="dim",
            )

    def stop_all(self, before: list = ()) -> None:
        """Stop in order (after the `before` steps); a second Ctrl-C only hurries it,
        never cuts it short."""

        def hurry(*_: Any) -> None:
            self.hurry = True
            self.say("still stopping; one moment", style="yellow")

        previous = _install(hurry)
        try:
            for step in (*before, self.stop_dialer, self.stop_worker, self.stop_broker):
                try:
                    step()
                except Exception as exc:  # keep stopping the rest
                    self.say(
                        f"could not {step.__name__.replace('_', ' ')}: {exc}", style="red"
                    )
        finally:
            _restore(previous)

    def rel(self, path: Path) -> str:
        with contextlib.suppress(ValueError):
            return str(path.relative_to(Path.cwd()))
        return str(path)


def _install(handler: Any) -> dict[int, Any]:
    """Set `handler` for SIGINT and SIGTERM (main thread only); return what was there."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


# -- the run ---------------------------------------------------------------------------


def watch(
    demo: Demo,
    scenario: Scenario,
    ledger: LedgerTail,
    view: WorkerView,
    reader: OutcomeReader,
    timeout: float,
) -> bool:
    """Show the run until every lead has an outcome (True) or `timeout` passes (False)."""
    console = demo.console
    period = 1.0 / REFRESH_PER_SECOND
    deadline = time.monotonic() + timeout

    def step() -> bool:
        reader.poll()
        ledger.read()
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
            render(scenario, ledger, view, reader.outcomes),
            console=console,
            auto_refresh=False,
            transient=False,
        ) as live:
            while True:
                finished = step()
                live.update(render(scenario, ledger, view, reader.outcomes), refresh=True)
                if finished:
                    return True
                if time.monotonic() > deadline:
                    return False
                time.sleep(period)
    last_line, last_at = None, 0.0
    while True:
        finished = step()
        line = plain_line(scenario, ledger, view, reader.outcomes)
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


def summarize(
    console: Console,
    scenario: Scenario,
    ledger_path: Path,
    outcomes: dict[str, LeadOutcome],
    limit: int,
    complete: bool = True,
) -> bool:
    """The verdict from the ledger alone; True when no business exceeded its limit."""
    peaks = concurrency_from_ledger(ledger_path) if ledger_path.exists() else {}
    overall = total_peak_from_ledger(ledger_path) if ledger_path.exists() else 0
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
    violations = {b: p for b, p in peaks.items() if p > limit}
    if violations:
        for business, peak in sorted(violations.items()):
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
    if not 1 <= businesses <= 26:
        raise StreamsError(f"--businesses must be 1-26 (A-Z), got {businesses}")
    if leads_per_business < 1:
        raise StreamsError(
            f"--leads-per-business must be at least 1, got {leads_per_business}"
        )
    console = console or Console()
    environ = dict(os.environ)
    overrides = demo_overrides(settings, talk_seconds, environ)
    env = {
        **environ,
        **settings_environment(settings),
        **overrides,
        "PYTHONUNBUFFERED": "1",
    }
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        raise StreamsError(str(exc)) from None
    run_id = uuid.uuid4().hex[:8]
    workdir = Path.cwd() / DEMO_DIR
    workdir.mkdir(parents=True, exist_ok=True)
    demo = Demo(settings, console, workdir, run_id, talk_seconds)
    limit = settings.max_outbound_calls_per_business

    def on_term(*_: Any) -> None:
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
        finished = watch(demo, scenario, ledger, view, reader, timeout)
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
        if not summarize(
            console, scenario, demo.ledger_path, outcomes, limit, complete=code == 0
        ):
            code = 1
    return code
