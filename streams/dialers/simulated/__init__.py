"""A simulated dialer: consumes `calls.dial`, "places" calls, reports Twilio-like statuses.

Why: the limiter must be exercised end to end without Twilio. It plays the dialer's
part of the contract (`streams.topics`): dedupe on `dial_id`, never place a call after
its `dial_by`, and report each call's statuses in order on `calls.status`.

It also keeps the truth the limiter cannot see: when each call really was live, in
memory (`SimulatedDialer.snapshot()`) and, optionally, in a JSON-lines call ledger that
`concurrency_from_ledger` reads back.

Modules: `dialer` (the Kafka side), `calls` (each call's life on a clock), `ledger` (the
call ledger and the peak-concurrency sweep).
"""

from streams.dialers.simulated.dialer import SimulatedDialer
from streams.dialers.simulated.ledger import (
    concurrency_from_ledger,
    peak_concurrency,
    read_lines,
)

__all__ = [
    "SimulatedDialer",
    "concurrency_from_ledger",
    "peak_concurrency",
    "read_lines",
]
