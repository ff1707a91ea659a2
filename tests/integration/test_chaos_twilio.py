"""The short fault-injection run with the Twilio dialer (bench/chaos.py --dialer twilio):
a worker SIGKILL, a rebalance and a dialer SIGKILL, while the fake Twilio hangs
requests, lags its call list, answers 5xx to creates that made the call and queues calls
beyond its CPS. `make test-chaos` runs it, then the full run, as a CI step of its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import chaos
from streams.devtools.broker import Broker


@pytest.mark.chaos
def test_no_call_above_a_limit_nor_twice_with_twilio_as_unkind_as_it_is(
    kafka_broker: Broker, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    keep = tmp_path / "chaos"
    code = chaos.main(
        [
            "--dialer",
            "twilio",
            "--short",
            "--leads",
            "200",
            "--businesses",
            "20",
            "--seed",
            "5",
            "--bootstrap",
            kafka_broker.bootstrap,
            "--settle-seconds",
            "240",
            "--keep",
            str(keep),
        ]
    )
    output = capsys.readouterr()
    assert code == 0, f"logs in {keep}\n" + output.err + output.out
    # The report is the JSON object after the run's "fault:" progress lines.
    report = json.loads(
        output.out[output.out.index("\n{") + 1 : output.out.rindex("}") + 1]
    )
    assert report["violations"] == []
    assert "SIGKILL dialer and restart" in report["faults"]
    seen = report["twilio"]
    assert seen["create_answers"].get("500", 0) + seen["hung_requests"] > 0, seen
