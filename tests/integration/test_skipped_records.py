"""Records the Kafka consumer skips are still handled (streams/shell/progress.py).

faust-streaming can drop records around a rebalance and ack them. The worker is told
(STREAMS_WORKER_FAULTS) to drop some first deliveries the same way: two in
the middle of the stream, revealed by the next record, and the very last lead, which no
later record reveals and only the capped commit and the next tick catch. Faust's
consumer can also drop the rest of a fetch without acking it ("drop-unacked"): at the tail
nothing reveals that, and only the partition standing still with records beyond it does.
Every lead must still get its outcome, within the limit, and never be dialed twice.
"""

from __future__ import annotations

import pytest

from tests.support.deployment import Deployment
from tests.support.leads import assert_core_guarantees, make_leads


def run_with_faults(bootstrap: str, tmp_path, leads: list[dict], faults: str) -> str:
    """The leads through one worker (one partition) told to inject `faults`; every
    lead must still end once, within the limit, never dialed twice. Its log."""
    deployment = Deployment(
        bootstrap, tmp_path, TOPIC_PARTITIONS="1", STREAMS_WORKER_FAULTS=faults
    )
    try:
        deployment.create_topics()
        worker = deployment.start_worker()
        worker.wait_serving()
        deployment.start_dialer()
        deployment.produce_leads(leads)
        outcomes = deployment.outcomes(leads)
        assert set(outcomes) == {lead["lead_id"] for lead in leads}
        assert_core_guarantees(deployment, leads)
        return worker.log()
    finally:
        deployment.close()


def test_records_the_consumer_skipped_are_read_again_and_handled(kafka_broker, tmp_path):
    leads = make_leads(["A", "B", "C"], 4, run="skip")  # offsets 0..11 of one partition
    log = run_with_faults(
        kafka_broker.bootstrap,
        tmp_path,
        leads,
        "leads.requests:2:drop,leads.requests:3:drop,leads.requests:11:drop",
    )
    assert log.count("injected fault 'drop'") == 3, log[-3000:]
    assert "the consumer skipped" in log and "offsets 2-3;" in log, log[-3000:]
    assert "offsets 11-11;" in log, log[-3000:]


@pytest.mark.parametrize(
    "businesses, each, dropped",
    [
        (["A", "B"], 3, 5),  # the last of six: the partition had deliveries before
        (["A"], 1, 0),  # the only record: nothing of the partition was ever delivered
    ],
    ids=["last-of-six", "only-record"],
)
def test_records_the_consumer_dropped_unacked_at_the_tail_are_found(
    kafka_broker, tmp_path, businesses, each, dropped
):
    leads = make_leads(businesses, each, run=f"stall{dropped}")  # one partition
    log = run_with_faults(
        kafka_broker.bootstrap, tmp_path, leads, f"leads.requests:{dropped}:drop-unacked"
    )
    assert log.count("injected fault 'drop-unacked'") == 1, log[-3000:]
    assert f"stood still at offset {dropped} with records up to {dropped}" in log, log[
        -3000:
    ]
    assert f"offsets {dropped}-{dropped};" in log, log[-3000:]
