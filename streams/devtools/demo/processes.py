"""Starting and stopping what one demo run needs: a local broker (unless one answers),
the topics, a worker process and a simulated dialer thread; stopped in order, and only
what this run started."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.status import Status

from streams.devtools.broker import Broker
from streams.devtools.demo.model import restore_text
from streams.devtools.demo.readers import WorkerView, restore_figures
from streams.dialers.simulated import SimulatedDialer
from streams.errors import StreamsError
from streams.kafka import admin, preflight
from streams.settings import Settings

DEFAULT_BOOTSTRAP_HOSTS = ("localhost", "127.0.0.1")
DEFAULT_BOOTSTRAP_PORT = 9092
#: How long the worker may take to serve its web view (renewed while a restore advances).
WORKER_START_TIMEOUT = 90.0
#: Without a terminal, a line on the worker's restore at most this often.
RESTORE_SAY_SECONDS = 5.0
#: SIGTERM, then SIGKILL after this long.
WORKER_STOP_TIMEOUT = 30.0
#: How long the simulated dialer may take to stop.
DIALER_STOP_TIMEOUT = 20.0
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

SignalHandler = Callable[[int, FrameType | None], Any] | int | None


def is_default_bootstrap(bootstrap: str) -> bool:
    """Whether `bootstrap` is the local broker the demo may start itself."""
    host, _, port = bootstrap.rpartition(":")
    return (
        "," not in bootstrap
        and host in DEFAULT_BOOTSTRAP_HOSTS
        and port == str(DEFAULT_BOOTSTRAP_PORT)
    )


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def install(handler: SignalHandler) -> dict[int, SignalHandler]:
    """Set `handler` for SIGINT and SIGTERM (main thread only); return what was there."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def restore(previous: dict[int, SignalHandler]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


class Demo:
    """The parts one demo run started, so that it stops exactly those."""

    def __init__(
        self,
        settings: Settings,
        console: Console,
        workdir: Path,
        run_id: str,
        talk_seconds: tuple[float, float],
    ) -> None:
        self.settings = settings
        self.console = console
        self.workdir = workdir
        self.run_id = run_id
        self.talk_seconds = talk_seconds
        self.broker: Broker | None = None  # only when this run started it
        self.interrupted_broker: Broker | None = None  # its start() was cut short
        self.worker: subprocess.Popen[bytes] | None = None
        self.worker_log = workdir / "worker.log"
        self.ledger_path = workdir / f"dialer-{run_id}.jsonl"
        self.dialer: SimulatedDialer | None = None
        self.dialer_thread: threading.Thread | None = None
        self.dialer_stop = threading.Event()
        self._dialer_log: tuple[logging.Handler, int, bool] | None = None
        self.hurry = False  # a second Ctrl-C while stopping: do not wait for a clean stop

    def say(self, message: str, style: str | None = None) -> None:
        self.console.print(message, style=style, highlight=False, soft_wrap=True)

    # -- start ---------------------------------------------------------------------

    def ensure_broker(self) -> None:
        bootstrap = self.settings.kafka_bootstrap_servers
        if is_default_bootstrap(bootstrap):
            broker = Broker()
            try:
                if broker.start():
                    self.broker = broker
            except BaseException as exc:
                if broker.launched:  # it launched a JVM before it failed
                    self.interrupted_broker = broker
                if not isinstance(exc, StreamsError):
                    print(file=sys.stderr)  # end the broker's line of progress dots
                raise
        else:
            try:
                preflight.connect(self.settings)
            except preflight.UnreachableError:
                raise StreamsError(
                    f"no Kafka broker answers at {bootstrap}"
                    " (KAFKA_BOOTSTRAP_SERVERS); start it, or unset the variable"
                    " to let the demo run a local one on localhost:9092"
                ) from None

    def create_topics(self) -> int:
        created = admin.create_topics(self.settings)
        partitions = admin.check_copartitioned(self.settings)
        if created:
            self.say(f"created {len(created)} topics ({partitions} partitions each)")
        return partitions

    def start_worker(self, env: dict[str, str]) -> None:
        port = self.settings.worker_web_port
        if port_in_use(port):
            raise StreamsError(
                f"something already listens on port {port} (WORKER_WEB_PORT): a worker"
                " left running? Stop it, or set WORKER_WEB_PORT to a free port"
            )
        with open(self.worker_log, "wb") as log:
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
        said_at, replayed = 0.0, -1
        with status:
            while not view.fetch():
                self.check_worker_alive("during startup")
                restore = restore_figures(self.settings.worker_web_port)
                now = time.monotonic()
                if restore is not None:
                    text = restore_text(restore)
                    if isinstance(status, Status):
                        status.update(text)
                    elif now - said_at >= RESTORE_SAY_SECONDS:
                        self.say(text)
                        said_at = now
                    if restore.get("replayed", 0) > replayed:  # slow, not stuck
                        replayed = restore.get("replayed", 0)
                        deadline = max(deadline, now + WORKER_START_TIMEOUT)
                if now > deadline:
                    raise StreamsError(
                        f"the worker did not serve {view.url} within"
                        f" {WORKER_START_TIMEOUT:g}s; end of {self.rel(self.worker_log)}:\n"
                        + log_tail(self.worker_log)
                    )
                time.sleep(0.5)
        self.say(f"worker ready after {time.monotonic() - began:.1f}s")

    def check_worker_alive(self, when: str) -> None:
        if self.worker is not None and self.worker.poll() is not None:
            code = self.worker.returncode
            self.worker = None
            raise StreamsError(
                f"the worker exited (status {code}) {when}; end of"
                f" {self.rel(self.worker_log)}:\n{log_tail(self.worker_log)}"
            )

    def start_dialer(self) -> None:
        # The demo process logs only through the dialer: whatever its modules name
        # their loggers, their lines go to dialer.log, out of the live view.
        handler = logging.FileHandler(
            self.workdir / "dialer.log", mode="w", encoding="utf-8"
        )
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        streams_log = logging.getLogger("streams")
        self._dialer_log = (handler, streams_log.level, streams_log.propagate)
        streams_log.addHandler(handler)
        streams_log.setLevel(logging.INFO)
        streams_log.propagate = False
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
            self.dialer_thread.join(timeout=DIALER_STOP_TIMEOUT)
            if self.dialer_thread.is_alive():
                self.say(
                    f"the simulated dialer did not stop within {DIALER_STOP_TIMEOUT:g}s",
                    style="yellow",
                )
        self.dialer_thread = None
        self.dialer = None  # frees its Kafka clients, which would log the broker's exit
        if self._dialer_log is not None:
            handler, level, propagate = self._dialer_log
            streams_log = logging.getLogger("streams")
            streams_log.removeHandler(handler)
            streams_log.setLevel(level)
            streams_log.propagate = propagate
            handler.close()
            self._dialer_log = None

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
    def _signal_worker(worker: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(worker.pid, sig)  # its own process group: anything it spawned too

    def stop_broker(self) -> None:
        if self.broker is not None:
            broker, self.broker = self.broker, None
            broker.stop()
        elif self.interrupted_broker is not None:
            # start() stops a broker it launched when it fails; make sure of it.
            broker, self.interrupted_broker = self.interrupted_broker, None
            if broker.launched_is_running():
                broker.stop()
            else:
                self.say("the Kafka broker the demo was starting has stopped")
        elif is_default_bootstrap(self.settings.kafka_bootstrap_servers):
            self.say(
                f"leaving Kafka running at {self.settings.kafka_bootstrap_servers}"
                " (the demo did not start it)",
                style="dim",
            )

    def stop_all(self, before: Sequence[Callable[[], None]] = ()) -> None:
        """Stop in order (after the `before` steps); a second Ctrl-C only hurries it,
        never cuts it short."""

        def hurry(_signum: int, _frame: FrameType | None) -> None:
            self.hurry = True
            self.say("still stopping; one moment", style="yellow")

        previous = install(hurry)
        try:
            for step in (*before, self.stop_dialer, self.stop_worker, self.stop_broker):
                try:
                    step()
                except Exception as exc:  # keep stopping the rest
                    name = getattr(step, "__name__", "stop").replace("_", " ")
                    self.say(f"could not {name}: {exc}", style="red")
        finally:
            restore(previous)

    def rel(self, path: Path) -> str:
        with contextlib.suppress(ValueError):
            return str(path.relative_to(Path.cwd()))
        return str(path)
