"""What the long-running commands share: log lines on stderr, and a clean stop on
Ctrl-C or SIGTERM (a stop event their loops watch, instead of an exception that could
cut a call's bookkeeping in half)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterable

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(verbose: bool = False, noisy: Iterable[str] = ()) -> None:
    """INFO (DEBUG when verbose) on stderr; the `noisy` loggers at WARNING unless
    verbose."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT)
    if not verbose:
        for name in noisy:
            logging.getLogger(name).setLevel(logging.WARNING)


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM (installed in the main thread)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop
