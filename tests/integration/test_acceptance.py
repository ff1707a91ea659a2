"""Acceptance: the limiter on the real broker, checked against what the dialer really did.

Every check of the limit reads the simulated dialer's ledger (placed/ended calls), never
the worker's own counters.
"""

from __future__ import annotations

import base64
import collections
import json
import subprocess
import sys
import time

import pytest
from confluent_kafka.admin import NewTopic

from streams.dialers.simulated import concurrency_from_ledger
from streams.kafka import clients
from tests.support.deployment import Deployment
from tests.support.leads import LIMIT, assert_core_guarantees, make_leads
from tests.support.waiting import eventually


def peak(lines: list[dict], key=lambda line: "all") -> dict[str, int]:
    """Peak concurrent placed-but-not-ended calls per key(line), from ledger lines."""
    marks = sorted(
        (
            (line["at"], 0 if line["event"] == "ended" else 1, line)
            for line in lines
            if line["event"] in ("placed", "ended")
        ),
        key=lambda m: (m[0], m[1]),
    )
    live: collections.Counter[str] = collections.Counter()
    peaks: collections.Counter[str] = collections.Counter()
    for _, placed, line in marks:
        live[key(line)] += 1 if placed else -1
        peaks[key(line)] = max(peaks[key(line)], live[key(line)])
    return dict(peaks)


def test_seed_scenario_nine_calls_and_each_fourth_lead_waits(deployment):
    worker = deployment.start_worker()
    worker.wait_serving()
    deployment.start_dialer(talk_seconds=(2.0, 3.0))
    leads = make_leads(["A", "B", "C"], 4)
    deployment.produce_leads(leads)
    deployment.outcomes(leads)
    lines = assert_core_guarantees(deployment, leads)

    placed = [line for line in lines if line["event"] == "placed"]
    assert len(placed) == 12
    assert concurrency_from_ledger(deployment.ledger) == {"A": 3, "B": 3, "C": 3}
    assert peak(lines) == {"all": 9}, "9 calls at once overall: there is no global limit"
    for business in "ABC":
        fourth = next(line for line in placed if line["lead_id"] == f"{business}-r-3")
        first_end = min(
            line["at"]
            for line in lines
            if line["event"] == "ended" and line["business_id"] == business
        )
        assert fourth["at"] >= first_end, f"{business}'s 4th lead did not wait for a slot"


def test_thousand_leads_over_fifty_businesses(deployment):
    deployment.start_worker().wait_serving()
    deployment.start_dialer(talk_seconds=(0.5, 1.5), ring_seconds=(0.05, 0.2))
    leads = make_leads([f"biz{n}" for n in range(50)], 20)
    deployment.produce_leads(leads)
    outcomes = deployment.outcomes(leads, timeout=240)
    assert len(outcomes) == 1000
    lines = assert_core_guarantees(deployment, leads)
    assert sum(1 for line in lines if line["event"] == "placed") == 1000
    assert max(concurrency_from_ledger(deployment.ledger).values()) == LIMIT


def kill_worker_mid_run(deployment, businesses, leads_each, outcomes_before_kill):
    """Worker w1 and the simulated dialer under load, w1 SIGKILLed once that many leads
    have their outcome: what is left of the run is the restarted worker's to finish."""
    first = deployment.start_worker("w1")
    first.wait_serving()
    deployment.start_dialer(talk_seconds=(0.3, 1.0), ring_seconds=(0.05, 0.2))
    leads = make_leads([f"biz{n}" for n in range(businesses)], leads_each)
    deployment.produce_leads(leads)
    deployment.read(
        "leads.outcomes", until=lambda recs: len(recs) >= outcomes_before_kill, timeout=120
    )
    first.kill()
    return first, leads


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_worker_killed_mid_run_loses_nothing_and_leaks_no_slot(deployment, store):
    deployment.env["TABLE_STORE"] = store
    _, leads = kill_worker_mid_run(
        deployment, businesses=30, leads_each=15, outcomes_before_kill=100
    )
    second = deployment.start_worker("w1")  # same data dir, same group: a restart
    second.wait_serving()
    deployment.outcomes(leads, timeout=240)
    # A RocksDB store holds only what the changelog acknowledged (streams/shell/units.py),
    # so the restart keeps it and reads just the changelog since; the guarantees below
    # are what would break if it held a write the changelog lacked.
    assert_core_guarantees(deployment, leads)

    def nothing_held() -> bool:
        holding = [
            b
            for b in second.businesses() or [{"business_id": "?", "active": ["?"]}]
            if b["active"] or b["waiting"]
        ]
        assert holding == [], "a business still holds a slot or a waiting lead"
        return True

    eventually(nothing_held, timeout=30)


#: A killed dynamic member holds its partitions until its session expires: at least
#: the worker's broker_session_timeout (15 s, streams/app.py) after its last heartbeat,
#: which was at most Faust's heartbeat interval (3 s) before the kill.
DYNAMIC_RESUME_SECONDS = 15.0 - 3.0


def test_a_static_member_killed_and_restarted_resumes_before_its_session_expires(
    deployment,
):
    """WORKER_INSTANCE_ID (Kafka static membership): the restarted worker replaces its
    killed self in the group at once and takes its partitions back; a dynamic member
    would first wait for the killed one's session to expire. With RocksDB it also keeps
    its local tables (they only hold what the changelog acknowledged)."""
    instance = deployment.settings.topic_prefix + "w1"
    deployment.env.update(TABLE_STORE="rocksdb://", WORKER_INSTANCE_ID=instance)
    first, leads = kill_worker_mid_run(
        deployment, businesses=20, leads_each=8, outcomes_before_kill=40
    )
    killed = time.monotonic()
    # The same address: Faust's assignor asserts a static member keeps its URL.
    second = deployment.start_worker("w1", web_port=first.web_port)
    second.wait_serving()  # /businesses/ answers 200 only with the table restored
    resumed_after = time.monotonic() - killed
    print(f"resumed {resumed_after:.1f}s after the kill")
    assert resumed_after < DYNAMIC_RESUME_SECONDS, (
        f"resumed {resumed_after:.1f}s after the kill: it waited for the session timeout"
    )
    deployment.wait_group(members=1)
    group = deployment.settings.topic_prefix + deployment.settings.app_id
    client = clients.admin(deployment.settings)  # must outlive its futures
    members = client.describe_consumer_groups([group])[group].result(30).members
    assert [m.group_instance_id for m in members] == [instance]
    deployment.outcomes(leads, timeout=240)
    assert_core_guarantees(deployment, leads)


@pytest.mark.alone
def test_two_workers_share_the_partitions_and_one_leaving_loses_nothing(deployment):
    first, second = deployment.start_worker("w1"), deployment.start_worker("w2")
    first.wait_serving()
    second.wait_serving()
    deployment.wait_group(members=2)
    deployment.start_dialer(talk_seconds=(0.3, 1.0), ring_seconds=(0.05, 0.2))
    leads = make_leads([f"biz{n}" for n in range(40)], 10)
    deployment.produce_leads(leads)
    deployment.read("leads.outcomes", until=lambda recs: len(recs) >= 80, timeout=120)
    assert "granted dial" in first.log() and "granted dial" in second.log(), (
        "both workers should have owned partitions with leads"
    )
    second.stop()  # a clean leave: its partitions rebalance to the first worker
    deployment.outcomes(leads, timeout=240)
    assert_core_guarantees(deployment, leads)


def test_bad_input_is_dead_lettered_and_the_worker_goes_on(deployment):
    worker = deployment.start_worker()
    worker.wait_serving()
    deployment.start_dialer(talk_seconds=(0.1, 0.3))
    good = make_leads(["G"], 4)
    bad_leads = [
        (b"G", b"{not json"),
        (b"G", json.dumps({"business_id": "G", "phone": "+14155550100"}).encode()),
        (
            b"G",
            json.dumps(
                {"lead_id": "bad-phone", "business_id": "G", "phone": "555-0100"}
            ).encode(),
        ),
    ]
    bad_statuses = [
        (
            b"G",
            json.dumps(
                {
                    "dial_id": "G:x:1",
                    "lead_id": "x",
                    "business_id": "G",
                    "status": "exploded",
                    "at": "2026-01-01T00:00:00Z",
                }
            ).encode(),
        ),
        (
            b"G",
            json.dumps(
                {
                    "dial_id": "G:ghost:1",
                    "lead_id": "ghost",
                    "business_id": "G",
                    "status": "ringing",
                    "at": "2026-01-01T00:00:00Z",
                }
            ).encode(),
        ),
    ]
    deployment.produce_leads(good[:2])
    deployment.produce("leads.requests", bad_leads)
    deployment.produce("calls.status", bad_statuses)
    deployment.produce_leads(good[2:])

    letters = deployment.read("leads.deadletter", until=lambda recs: len(recs) >= 5)
    reasons = sorted(letter["reason"] for letter in letters)
    assert len(letters) == 5, reasons
    originals = {base64.b64decode(letter["value"]) for letter in letters}
    assert originals == {value for _, value in bad_leads + bad_statuses}
    for letter in letters:
        assert letter["topic"].startswith(deployment.settings.topic_prefix)
        assert letter["partition"] >= 0 and letter["offset"] >= 0 and letter["reason"]
    assert any("not JSON" in r for r in reasons)
    assert any("lead_id is missing" in r for r in reasons)
    assert any("E.164" in r for r in reasons)
    assert any("unknown call status 'exploded'" in r for r in reasons)
    assert any("unknown dial G:ghost:1" in r for r in reasons)

    outcomes = deployment.outcomes(good + [{"lead_id": "bad-phone"}])
    assert outcomes["bad-phone"]["outcome"] == "rejected"
    assert all(outcomes[lead["lead_id"]]["outcome"] != "rejected" for lead in good)
    assert worker.process.poll() is None, "the worker died of bad input"


def test_an_exception_in_our_code_dead_letters_the_event_and_the_worker_goes_on(
    kafka_broker, tmp_path
):
    """Faust acks an event whose agent raised, and it is gone: the worker catches per
    event. Here handling the second lead and the first status raise (STREAMS_WORKER_
    FAULTS "raise"): both are dead-lettered, the lead is told `rejected`, the call
    whose status was lost still ends and frees its slot, and the other leads go on."""
    leads = make_leads(["E"], 5, run="raise")  # offsets 0..4 of one partition
    deployment = Deployment(
        kafka_broker.bootstrap,
        tmp_path,
        TOPIC_PARTITIONS="1",
        STREAMS_WORKER_FAULTS="leads.requests:1:raise,calls.status:0:raise",
    )
    try:
        deployment.create_topics()
        worker = deployment.start_worker()
        worker.wait_serving()
        deployment.start_dialer(talk_seconds=(0.1, 0.3))
        deployment.produce_leads(leads)
        outcomes = deployment.outcomes(leads)
        failed = leads[1]["lead_id"]
        assert outcomes[failed]["outcome"] == "rejected", outcomes[failed]
        assert "internal error" in outcomes[failed]["reason"]
        assert all(
            outcome["outcome"] != "rejected"
            for lead_id, outcome in outcomes.items()
            if lead_id != failed
        ), outcomes
        lines = assert_core_guarantees(deployment, leads)
        assert failed not in {line["lead_id"] for line in lines}

        letters = deployment.read("leads.deadletter", until=lambda recs: len(recs) >= 2)
        assert sorted((letter["topic"], letter["offset"]) for letter in letters) == [
            (deployment.topic("calls.status"), 0),
            (deployment.topic("leads.requests"), 1),
        ]
        assert all("internal error" in letter["reason"] for letter in letters)
        lead_letter = next(
            letter
            for letter in letters
            if letter["topic"] == deployment.topic("leads.requests")
        )
        assert json.loads(base64.b64decode(lead_letter["value"]))["lead_id"] == failed

        def idle() -> bool:
            state = worker.businesses()
            assert state is not None and not any(
                b["active"] or b["waiting"] for b in state
            ), state
            return True

        eventually(idle, timeout=30)
        assert worker.process.poll() is None
    finally:
        deployment.close()


def test_a_finished_lead_is_forgotten_after_the_retention(kafka_broker, tmp_path):
    """The table does not keep every lead forever: LEAD_RETENTION_SECONDS after its
    outcome a lead's record goes, and the same lead id sent again is a new lead to the
    limiter. Its dial_id is the same, so the dialer (deduping on dial_id) does not call
    it again: still one call per lead (the simulated dialer stays silent, the lease
    ends it)."""
    deployment = Deployment(
        kafka_broker.bootstrap,
        tmp_path,
        TOPIC_PARTITIONS="1",
        LEAD_RETENTION_SECONDS="3",
        LEASE_GRACE_SECONDS="1",
    )
    try:
        deployment.create_topics()
        worker = deployment.start_worker()
        worker.wait_serving()
        deployment.start_dialer(talk_seconds=(0.1, 0.2))
        leads = make_leads(["R"], 2, run="retain")
        deployment.produce_leads(leads)
        deployment.outcomes(leads)

        def both_forgotten() -> bool:
            log = worker.log()
            assert log.count("forgotten 3s after its outcome") >= 2, log[-3000:]
            return True

        eventually(both_forgotten, timeout=30)
        deployment.produce_leads(leads[:1])  # the CRM sends the first one again
        outcomes = deployment.read("leads.outcomes", until=lambda recs: len(recs) >= 3)
        assert [o["lead_id"] for o in outcomes].count(leads[0]["lead_id"]) == 2
        dials = deployment.read("calls.dial", until=lambda recs: len(recs) >= 3)
        first = f"R:{leads[0]['lead_id']}:1"
        assert [d["dial_id"] for d in dials].count(first) >= 2, "granted again (and resent)"
        placed = [
            line["lead_id"]
            for line in deployment.ledger_lines()
            if line["event"] == "placed"
        ]
        assert sorted(placed) == sorted(lead["lead_id"] for lead in leads)
    finally:
        deployment.close()


def test_worker_refuses_mismatched_partition_counts(kafka_broker, tmp_path):
    deployment = Deployment(kafka_broker.bootstrap, tmp_path)
    client = clients.admin(deployment.settings)
    futures = client.create_topics(
        [
            NewTopic(
                deployment.topic("leads.requests"), num_partitions=4, replication_factor=1
            ),
            NewTopic(
                deployment.topic("calls.status"), num_partitions=2, replication_factor=1
            ),
        ]
    )
    for future in futures.values():
        future.result(30)
    deployment.wait_topics("leads.requests", "calls.status")
    result = subprocess.run(
        [sys.executable, "-m", "streams", "worker"],
        env=deployment.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "not co-partitioned" in lines[0] and "calls.status=2" in lines[0]


def test_a_cleanly_stopped_rocksdb_worker_keeps_its_local_tables(deployment):
    """Only a crash costs a full recovery from the changelog; a clean stop does not."""
    deployment.env["TABLE_STORE"] = "rocksdb://"
    first = deployment.start_worker("w1")
    first.wait_serving()
    deployment.start_dialer()
    leads = make_leads(["A", "B"], 2, run="clean")
    deployment.produce_leads(leads)
    deployment.outcomes(leads)
    first.stop()
    assert first.process.returncode == 0, first.log()
    second = deployment.start_worker("w1")
    second.wait_serving()
    assert "did not stop cleanly" not in second.log_path.read_text(errors="replace")
