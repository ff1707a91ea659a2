"""Starting the limiter worker (`streams worker`): topics checked, then Faust's worker.

The worker refuses to start, with one line, when the input topics or its changelog are
not co-partitioned (`streams.kafka.admin`); otherwise it runs `streams.app.Limiter`
until Ctrl-C or SIGTERM, its decisions logged one plain line each.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from typing import Any

import faust
import mode.loop

from streams.app import Limiter
from streams.kafka import admin
from streams.settings import Settings

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


def run_worker(settings: Settings, loglevel: str = "warning") -> int:
    """Create missing topics, check co-partitioning, run the worker until stopped."""
    # uvloop for every event loop made from here on (Faust's, its consumer thread's),
    # the way Faust's `--loop uvloop` sets it: measured, more records/s for less CPU
    # per record (bench/RESULTS.md).
    mode.loop.use("uvloop")
    created = admin.create_topics(settings)
    partitions = admin.check_copartitioned(settings)
    if created:
        print(f"created topics: {', '.join(created)}", file=sys.stderr)
    limiter = Limiter(dataclasses.replace(settings, topic_partitions=partitions))
    print(
        f"worker {limiter.app.conf.id}: {partitions} partitions on"
        f" {settings.kafka_bootstrap_servers}, limit"
        f" {settings.max_outbound_calls_per_business} calls per business,"
        f" web on :{settings.worker_web_port}",
        file=sys.stderr,
    )
    # One log line per decision: skip what no format here uses (the caller's file and
    # line, found by walking the stack; thread and multiprocessing names), as the
    # logging HOWTO's "Optimization" section suggests.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    worker = faust.Worker(
        limiter.app, loglevel="info", quiet=True, logging_config=logging_config(loglevel)
    )
    worker.execute_from_commandline()
    return 0
