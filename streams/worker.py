"""Starting the limiter worker (`streams worker`): Kafka and the topics checked, then
Faust's worker.

The worker refuses to start, with one line, when it cannot connect (`streams.kafka.
preflight` names why), when the input topics or its changelog are not co-partitioned,
or when a topic it uses has fewer replicas than `TOPIC_REPLICATION_FACTOR` (else the
cluster's default) (`streams.kafka.admin`); otherwise it runs `streams.app.Limiter`
until Ctrl-C or SIGTERM, its decisions logged one plain line each.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import time
from typing import Any

import faust
import mode.loop

from streams.app import Limiter
from streams.kafka import admin, preflight
from streams.settings import Settings

#: How long a stop may take: within the 30 s orchestrators give before SIGKILL.
STOP_SECONDS = 20.0
WORKER_LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"


class PlainFormatter(logging.Formatter):
    """The worker's lines, their time formatted as logging's default does but the date
    and seconds once a second: `strftime` for every line was half of a decision line's
    cost."""

    def __init__(self, fmt: str = WORKER_LOG_FORMAT) -> None:
        super().__init__(fmt)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"


def logging_config(loglevel: str) -> dict[str, Any]:
    """Faust's, aiokafka's and kafka's loggers at `loglevel`; ours at INFO, with a plain
    formatter of their own: Faust's colouring formatter cost a tenth of the worker's
    time."""
    quiet = {"level": loglevel.upper()}
    return {
        "version": 1,
        "merge": True,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"()": PlainFormatter}},
        "handlers": {"streams": {"class": "logging.StreamHandler", "formatter": "plain"}},
        "loggers": {
            "faust": quiet,
            "mode": quiet,
            "aiokafka": quiet,
            "kafka": quiet,
            "streams": {"level": "INFO", "handlers": ["streams"], "propagate": False},
        },
    }


class _Worker(faust.Worker):
    """Faust's worker, whose stop ends within STOP_SECONDS."""

    async def stop(self) -> None:
        if not self._stopped.is_set():
            _exit_after(STOP_SECONDS)
        await super().stop()


def _exit_after(seconds: float) -> None:
    """Exit the process `seconds` from now unless it has ended by then.

    Faust's stop waits on the brokers without a bound (the last commit, the changelog
    writes still pending, leaving the group): with every broker gone it would wait for
    ever, and an orchestrator's SIGKILL would end it anyway. Exiting is as safe as that
    kill: what was not committed is read again at the next start."""

    def deadline() -> None:
        time.sleep(seconds)
        print(
            f"worker: not stopped {seconds:g} s after it was asked to (Kafka"
            " unreachable?); exiting now, what it did not commit is read again at"
            " the next start",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)

    threading.Thread(target=deadline, name="stop-deadline", daemon=True).start()


def run_worker(settings: Settings, loglevel: str = "warning") -> int:
    """Check Kafka, create missing topics, check co-partitioning and replication, run
    the worker until stopped."""
    # uvloop for every event loop made from here on (Faust's, its consumer thread's),
    # the way Faust's `--loop uvloop` sets it: measured, more records/s for less CPU
    # per record (bench/RESULTS.md).
    mode.loop.use("uvloop")
    cluster = preflight.connect(settings)
    factor = admin.replication_factor(settings)
    created = admin.create_topics(settings, factor)
    partitions = admin.check_copartitioned(settings)
    warnings = admin.check_replication(settings, factor, cluster.brokers)
    if created:
        print(f"created topics: {', '.join(created)}", file=sys.stderr)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    limiter = Limiter(dataclasses.replace(settings, topic_partitions=partitions), factor)
    print(
        f"worker {limiter.app.conf.id}: {partitions} partitions, replication {factor},"
        f" on {settings.kafka_bootstrap_servers} ({settings.kafka_security_protocol}),"
        f" limit {settings.max_outbound_calls_per_business} calls per business,"
        f" web on :{settings.worker_web_port}",
        file=sys.stderr,
    )
    # One log line per decision: skip what no format here uses (the caller's file and
    # line, found by walking the stack; thread and multiprocessing names), as the
    # logging HOWTO's "Optimization" section suggests.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    worker = _Worker(
        limiter.app, loglevel="info", quiet=True, logging_config=logging_config(loglevel)
    )
    worker.execute_from_commandline()
    return 0
