"""`streams lag` against the real broker: groups that commit part of what was produced.

No worker runs: a confluent Consumer commits offsets for a group, which is all the lag
command looks at (plus the records' timestamps).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.support.deployment import Deployment

pytestmark = pytest.mark.integration


def _produce(
    deployment: Deployment, topic: str, counts: dict[int, int], age: float = 0.0
) -> None:
    """`counts` records to each partition, stamped `age` seconds ago."""
    producer = Producer({"bootstrap.servers": deployment.settings.kafka_bootstrap_servers})
    stamp = int((time.time() - age) * 1000)
    for partition, count in counts.items():
        for n in range(count):
            producer.produce(
                topic,
                key=b"biz",
                value=json.dumps({"n": n}).encode(),
                partition=partition,
                timestamp=stamp,
            )
    assert producer.flush(30) == 0


def _commit(
    deployment: Deployment, group: str, offsets: dict[tuple[str, int], int]
) -> None:
    """Commit offsets for `group` the way a consumer that processed that far would."""
    consumer = Consumer(
        {
            "bootstrap.servers": deployment.settings.kafka_bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
            asynchronous=False,
        )
    finally:
        consumer.close()


def _lag(deployment: Deployment, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streams", "lag", *args],
        env=deployment.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_lag_reports_offsets_time_lag_and_fails_over(deployment):
    leads = deployment.topic("leads.requests")
    _produce(deployment, leads, {0: 10, 1: 6}, age=60.0)
    behind = f"{deployment.settings.topic_prefix}behind"
    caught_up = f"{deployment.settings.topic_prefix}caught-up"
    _commit(deployment, behind, {(leads, 0): 4, (leads, 1): 6})
    _commit(deployment, caught_up, {(leads, 0): 10, (leads, 1): 6})

    run = _lag(deployment, "--json", "--group", behind)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    [group] = report["groups"]
    assert group["group"] == behind
    partitions = {p["partition"]: p for p in group["partitions"] if p["topic"] == leads}
    assert set(partitions) == {0, 1}
    assert (partitions[0]["committed"], partitions[0]["end"], partitions[0]["lag"]) == (
        4,
        10,
        6,
    )
    assert (partitions[1]["committed"], partitions[1]["end"], partitions[1]["lag"]) == (
        6,
        6,
        0,
    )
    assert partitions[0]["time_lag_seconds"] >= 60  # the record at offset 4 is that old
    assert partitions[1]["time_lag_seconds"] == 0
    assert group["total_lag"] == 6
    # Nobody is in the group and it has lag: its commits stopped.
    assert (group["status"], group["members"]) == ("STOP", 0)
    assert group["window"]["samples"] == 3
    assert report["ok"] is True  # no --fail-over given

    over = _lag(deployment, "--group", behind, "--fail-over", "0.001", "--samples", "1")
    assert over.returncode == 1, over.stderr
    table = " ".join(over.stdout.split())
    assert behind in table and "STOP" in table and f"{leads}/0 time lag" in table

    over = _lag(
        deployment, "--json", "--group", behind, "--fail-over", "0.001", "--samples", "1"
    )
    assert over.returncode == 1, over.stderr
    assert json.loads(over.stdout)["ok"] is False
    assert f"{leads}/0 time lag" in over.stderr

    fine = _lag(
        deployment, "--json", "--group", caught_up, "--fail-over", "3600", "--samples", "1"
    )
    assert fine.returncode == 0, fine.stderr
    [group] = json.loads(fine.stdout)["groups"]
    assert group["status"] == "OK" and group["total_lag"] == 0
    assert {p["time_lag_seconds"] for p in group["partitions"]} == {0}


def test_lag_shows_only_the_project_groups_that_exist(deployment):
    dial = deployment.topic("calls.dial")
    _produce(deployment, dial, {2: 3})
    _commit(deployment, f"{deployment.settings.topic_prefix}sim-dialer", {(dial, 2): 1})

    run = _lag(deployment, "--json", "--samples", "1")
    assert run.returncode == 0, run.stderr
    groups = {g["group"]: g for g in json.loads(run.stdout)["groups"]}
    # The worker's group and the Twilio dialer's do not exist: they are left out.
    assert list(groups) == [f"{deployment.settings.topic_prefix}sim-dialer"]
    [partition] = groups[f"{deployment.settings.topic_prefix}sim-dialer"]["partitions"]
    assert (partition["committed"], partition["end"], partition["lag"]) == (1, 3, 2)
    assert partition["time_lag_seconds"] > 0

    missing = _lag(
        deployment,
        "--json",
        "--samples",
        "1",
        "--group",
        f"{deployment.settings.topic_prefix}nobody",
    )
    assert missing.returncode == 0, missing.stderr
    [group] = json.loads(missing.stdout)["groups"]
    assert group["status"] == "ERR" and "no such consumer group" in group["reason"]


def test_lag_watch_refreshes_until_interrupted(deployment):
    leads = deployment.topic("leads.requests")
    _produce(deployment, leads, {3: 2})
    group = f"{deployment.settings.topic_prefix}watched"
    _commit(deployment, group, {(leads, 3): 2})
    watch = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streams",
            "lag",
            "--watch",
            "--json",
            "--interval",
            "0.5",
            "--group",
            group,
        ],
        env=deployment.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        reports = [json.loads(watch.stdout.readline()) for _ in range(3)]
        watch.send_signal(signal.SIGINT)
        assert watch.wait(15) == 0, watch.stderr.read()
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait(10)
    assert [r["groups"][0]["window"]["samples"] for r in reports] == [1, 2, 3]
    assert {r["groups"][0]["status"] for r in reports} == {"OK"}
    assert watch.stderr.read() == ""
