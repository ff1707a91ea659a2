"""`streams worker` with one thing switched off, to measure what that thing costs.

Diagnostic only: these variants are NOT safe to run in production, and nothing in
streams/ changes. `bench/throughput.py --variants ...` runs them beside the real worker.

    BENCH_VARIANT=no-wait python bench/worker_variant.py      # env as for `streams worker`

Variants:
  quiet    no per-event log lines from the worker (streams.worker logger off).
  queue-log  the worker's lines formatted and written by a thread (QueueListener).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import sys


def apply(variant: str) -> None:
    from streams import app

    parts = {p for p in variant.split("+") if p}
    unknown = parts - {"quiet", "queue-log"}
    if unknown:
        raise SystemExit(f"unknown variant(s): {', '.join(sorted(unknown))}")
    if "quiet" in parts:
        quiet = logging.getLogger("bench.quiet-worker")
        quiet.setLevel(logging.CRITICAL + 1)
        quiet.propagate = False
        app.log = quiet
    if "queue-log" in parts:
        from streams.worker import WORKER_LOG_FORMAT

        lines: queue.SimpleQueue = queue.SimpleQueue()
        out = logging.StreamHandler(sys.stderr)
        out.setFormatter(logging.Formatter(WORKER_LOG_FORMAT))
        logging.handlers.QueueListener(lines, out).start()
        threaded = logging.getLogger("bench.queue-log-worker")
        threaded.setLevel(logging.INFO)
        threaded.propagate = False

        class Unformatted(logging.handlers.QueueHandler):
            def prepare(self, record):  # formatting left to the listener's thread
                return record

        threaded.addHandler(Unformatted(lines))
        app.log = threaded


def main() -> int:
    apply(os.environ.get("BENCH_VARIANT", ""))
    from streams.cli import main as cli_main

    return cli_main(["worker"])


if __name__ == "__main__":
    sys.exit(main())
