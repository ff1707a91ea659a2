"""`streams worker` with one thing switched off, to measure what that thing costs.

Diagnostic only: these variants are NOT safe to run in production, and nothing in
streams/ changes. `bench/throughput.py --variants ...` runs them beside the real worker.

    BENCH_VARIANT=no-wait python bench/worker_variant.py      # env as for `streams worker`

Variants (join several with +):
  quiet      no log lines from the worker at all (its logger off).
  queue-log  the worker's lines formatted and written by a thread (QueueListener).
  summary    DECISION_LOG_LEVEL=debug: decisions at DEBUG, a summary line a second
             (a setting, safe: here to measure it beside the default).
  asyncio    asyncio's own event loops instead of the worker's uvloop.
  timings    the agent's own clock, every 5 s on stderr: time handling records,
             waiting for the next one from Faust, waiting for room in the outbox,
             and commits waiting for the outbox (`confirmed`).
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
    unknown = parts - {"quiet", "queue-log", "summary", "asyncio", "timings"}
    if unknown:
        raise SystemExit(f"unknown variant(s): {', '.join(sorted(unknown))}")
    if "summary" in parts:
        os.environ["DECISION_LOG_LEVEL"] = "debug"
    if "asyncio" in parts:
        import mode.loop

        mode.loop.use = lambda name: None  # the worker's run_worker asks for uvloop
    if "timings" in parts:
        _time_the_agent()
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


def _time_the_agent() -> None:
    """Wrap the agent's steps with clocks; print the totals every 5 s."""
    import time

    from streams import app
    from streams.shell import outbox

    spent = {"run": 0.0, "gap": 0.0, "room": 0.0, "confirmed": 0.0, "flush": 0.0}
    counts = {"records": 0, "confirmed": 0, "flushes": 0}
    state = {"last": None, "shown": time.monotonic()}
    run, room, confirmed, flush = (
        app.Limiter._run,
        outbox.Outbox.room,
        outbox.Outbox.confirmed,
        outbox.Outbox.flush,
    )

    def show(now: float) -> None:
        if now - state["shown"] >= 5:
            state["shown"] = now
            figures = [f"{k} {v:.2f}s" for k, v in spent.items()]
            figures += [f"{k} {v}" for k, v in counts.items()]
            print("timings: " + ", ".join(figures), file=sys.stderr, flush=True)

    async def timed_run(self, steps):
        began = time.monotonic()
        if state["last"] is not None:
            spent["gap"] += began - state["last"]
        await run(self, steps)
        state["last"] = now = time.monotonic()
        spent["run"] += now - began
        counts["records"] += 1
        show(now)

    def timed(name, method):
        async def wrapper(self, *args):
            began = time.monotonic()
            await method(self, *args)
            spent[name] += time.monotonic() - began
            if name in counts:
                counts[name] += 1

        return wrapper

    app.Limiter._run = timed_run
    outbox.Outbox.room = timed("room", room)
    outbox.Outbox.confirmed = timed("confirmed", confirmed)
    outbox.Outbox.flush = timed("flush", flush)


def main() -> int:
    apply(os.environ.get("BENCH_VARIANT", ""))
    from streams.cli import main as cli_main

    return cli_main(["worker"])


if __name__ == "__main__":
    sys.exit(main())
