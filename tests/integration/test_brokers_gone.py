"""A worker and both dialers whose brokers have all gone away, mid-load, still stop on
SIGTERM within 30 s: an orchestrator's stop (Kubernetes' grace period is 30 s) must not
turn into a SIGKILL because a client waits for a broker that will not come back."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.devtools.broker import Broker
from tests.support.deployment import Deployment, Dialer
from tests.support.fake_twilio import FakeTwilio
from tests.support.leads import make_leads
from tests.support.ports import free_port
from tests.support.waiting import eventually

#: What every process has to stop in, once told.
STOP_SECONDS = 30.0

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of this test alone: it is killed halfway."""
    broker = Broker(
        port=free_port(),
        controller_port=free_port(),
        data_dir=tmp_path / "kafka",
        heap=("256m", "512m"),
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


def test_sigterm_stops_everything_within_30_s_after_the_brokers_died(
    own_broker: Broker, tmp_path: Path
) -> None:
    deployment = Deployment(own_broker.bootstrap, tmp_path, TABLE_STORE="rocksdb://")
    deployment.create_topics()
    worker = deployment.start_worker()
    worker.wait_serving()
    with FakeTwilio(seed=3, talk_seconds=(5.0, 10.0)) as fake:
        twilio = Dialer(
            deployment, fake, f"sqlite:///{tmp_path / 'ledger.db'}"
        ).start_process()
        with open(tmp_path / "sim-dialer.log", "wb") as log:
            simulated = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "streams",
                    "dialer",
                    "--simulate",
                    "--talk-seconds",
                    "5,10",
                ],
                env=deployment.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        processes = {"worker": worker.process, "simulated dialer": simulated}
        assert twilio.process is not None
        processes["twilio dialer"] = twilio.process
        try:
            deployment.produce_leads(
                make_leads([f"B{n}" for n in range(20)], 10, run="gone")
            )

            def dialing() -> bool:
                businesses = worker.businesses() or []
                assert sum(len(b["active"]) for b in businesses) > 0, "nothing dialed yet"
                return True

            eventually(dialing, timeout=60, interval=0.3)
            own_broker.kill()
            time.sleep(3)  # every client has noticed by now
            began = time.monotonic()
            for process in processes.values():
                process.send_signal(signal.SIGTERM)
            took: dict[str, float | None] = dict.fromkeys(processes)
            while time.monotonic() - began < STOP_SECONDS and None in took.values():
                for name, process in processes.items():
                    if took[name] is None and process.poll() is not None:
                        took[name] = round(time.monotonic() - began, 1)
                time.sleep(0.1)
            late = [name for name, seconds in took.items() if seconds is None]
            assert not late, (
                f"{', '.join(late)} did not stop within {STOP_SECONDS:g} s of SIGTERM"
                f" (stopped: {took}); worker log:\n{worker.log()}\ntwilio dialer"
                f" log:\n{twilio.log()}\nsimulated dialer log:\n"
                + (tmp_path / "sim-dialer.log").read_text(errors="replace")[-3000:]
            )
            print(f"seconds from SIGTERM to exit: {took}")
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait(10)
            deployment.close()
