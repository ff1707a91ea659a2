"""Input events the worker handles per grant with the Twilio dialer, for a set of status
callback events: every `calls.status` record is one more Faust event for the worker,
besides the lead itself.

The limiter acts on `initiated` (the call left Twilio's CPS queue: its lease then covers
the whole ring and call) and `completed` (the slot frees); `ringing` and `answered` only
move a lease to an end no later than that. So the dialer subscribes to those two. This
runs the same leads through the worker, the Twilio dialer and the fake Twilio twice, with
the four events the dialer used to ask for and with the two it asks for now, and counts
(leads + statuses) / dials granted.

    python -m bench.twilio_events --leads 300 --businesses 30
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench.common import high_watermark
from streams.devtools.broker import Broker
from streams.dialers.twilio import create
from tests.support.deployment import Deployment, Dialer
from tests.support.fake_twilio import FakeTwilio

BEFORE = ["initiated", "ringing", "answered", "completed"]


def one_run(
    bootstrap: str, workdir: Path, events: list[str], leads: int, businesses: int
) -> dict:
    create.CALLBACK_EVENTS[:] = events
    deployment = Deployment(bootstrap, workdir)
    deployment.create_topics()
    fake = FakeTwilio(seed=3, ring_seconds=(0.1, 0.4), talk_seconds=(0.3, 1.0)).start()
    dialer = Dialer(deployment, fake, f"sqlite:///{workdir / 'ledger.db'}")
    try:
        worker = deployment.start_worker()
        worker.wait_serving()
        dialer.start_thread()
        batch = [
            {
                "lead_id": f"L{n}",
                "business_id": f"b{n % businesses}",
                "phone": f"+1555{n:07d}",
            }
            for n in range(leads)
        ]
        deployment.produce_leads(batch)
        deployment.outcomes(batch, timeout=600)
        fake.wait_idle(30)
        # Each topic holds only this run's records: its high watermarks count them.
        statuses = high_watermark(bootstrap, deployment.topic("calls.status"))
        granted = high_watermark(bootstrap, deployment.topic("calls.dial"))
        return {
            "events": events,
            "leads": leads,
            "grants": granted,
            "statuses": statuses,
            "input_events_per_grant": round((leads + statuses) / granted, 2),
        }
    finally:
        dialer.stop()
        fake.stop()
        deployment.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.twilio_events",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--leads", type=int, default=300)
    parser.add_argument("--businesses", type=int, default=30)
    parser.add_argument("--broker-port", type=int, default=24192)
    args = parser.parse_args(argv)
    now = list(create.CALLBACK_EVENTS)
    with tempfile.TemporaryDirectory(prefix="twilio-events-") as scratch:
        broker = Broker(
            port=args.broker_port,
            controller_port=args.broker_port + 1,
            data_dir=Path(scratch) / "kafka",
        )
        broker.start()
        try:
            results = []
            for name, events in (("before", BEFORE), ("after", now)):
                workdir = Path(scratch) / name
                workdir.mkdir()
                print(f"# {name}: {events}", file=sys.stderr, flush=True)
                results.append(
                    {"run": name}
                    | one_run(
                        broker.bootstrap, workdir, events, args.leads, args.businesses
                    )
                )
        finally:
            broker.stop()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
