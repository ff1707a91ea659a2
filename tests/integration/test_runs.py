"""Bulk runs on the real broker: a run withdrawn midway, leads scheduled, calling
windows closed then open and judged in the leads' zones, retries with their delays and
`final` flags, and every record of a real run valid under the published schemas."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import threading
import time
import urllib.request

import jsonschema
import pytest
from confluent_kafka import TopicPartition

from streams import schemas
from streams.kafka import clients
from streams.topics import (
    ALL_TOPICS,
    CALLS_DIAL,
    CALLS_STATUS,
    LEADS_REQUESTS,
    CallStatus,
    DialCommand,
    Withdrawal,
    from_iso,
    record_key,
    to_iso,
)
from tests.support.deployment import Deployment, WorkerProcess
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

TICK = 0.3  # FAST_TIMINGS' TICK_INTERVAL_SECONDS


def streams(deployment: Deployment, worker: WorkerProcess, *args: str) -> str:
    """Run the `streams` command line against the deployment; its output."""
    env = {**deployment.env, "WORKER_WEB_PORT": str(worker.web_port)}
    result = subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def view(worker: WorkerProcess, business_id: str, query: str = "") -> dict:
    url = f"http://127.0.0.1:{worker.web_port}/businesses/{business_id}/{query}"
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return json.load(reply)
    except urllib.error.HTTPError as exc:
        return json.load(exc)


def dials(deployment: Deployment, until, timeout: float = 60) -> list[dict]:
    return deployment.read(CALLS_DIAL, until=until, timeout=timeout)


def finals(deployment: Deployment, lead_ids: set[str], timeout: float = 120) -> dict:
    """Every lead's outcome records, once each lead has its final one."""
    records = deployment.read(
        "leads.outcomes",
        timeout=timeout,
        until=lambda recs: lead_ids <= {r["lead_id"] for r in recs if r.get("final")},
    )
    by_lead: dict[str, list[dict]] = {}
    for record in records:
        by_lead.setdefault(record["lead_id"], []).append(record)
    for lead_id in lead_ids:
        final = {json.dumps(r, sort_keys=True) for r in by_lead[lead_id] if r["final"]}
        assert len(final) == 1, (lead_id, by_lead[lead_id])
    return by_lead


def lead(lead_id: str, business_id: str, **fields) -> dict:
    return {
        "lead_id": lead_id,
        "business_id": business_id,
        "phone": "+14155550100",
        **fields,
    }


def midday_zone(now: float) -> tuple[str, float]:
    """A fixed-offset zone where it is about noon, and the offset in hours: windows set
    around its wall clock never cross midnight."""
    hour = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).hour
    offset = 12 - hour  # Etc/GMT-N is N hours ahead of UTC
    return f"Etc/GMT{-offset:+d}" if offset else "Etc/GMT", offset


def midnight_zone(midday_offset: float) -> str:
    """A fixed-offset zone where it is about midnight, twelve hours from the midday one,
    east or west so that it exists (Etc/GMT-14 to Etc/GMT+12)."""
    offset = midday_offset - 12 if midday_offset >= 0 else midday_offset + 12
    return f"Etc/GMT{-offset:+d}" if offset else "Etc/GMT"


def wall(now: float, offset: float) -> str:
    moment = datetime.datetime.fromtimestamp(now + offset * 3600, datetime.timezone.utc)
    return moment.strftime("%H:%M:%S")


def test_a_run_withdrawn_midway_has_nothing_dialed_after_the_withdrawal(deployment):
    worker = deployment.start_worker()
    worker.wait_serving()
    deployment.start_dialer(talk_seconds=(2.0, 3.0))
    leads = [lead(f"W{n}", "W", run_id="bulk") for n in range(12)]
    deployment.produce_leads(leads)
    dials(deployment, until=lambda recs: len(recs) >= 3)
    assert "withdrawal sent" in streams(deployment, worker, "run", "withdraw", "W", "bulk")
    seen = eventually(
        lambda: (
            (r := view(worker, "W", "?run=bulk").get("run"))
            and r["withdrawn"]
            and time.time()
        ),
        timeout=30,
    )
    deployment.produce_leads([lead("W-late", "W", run_id="bulk")])
    outcomes = finals(deployment, {x["lead_id"] for x in leads} | {"W-late"})
    time.sleep(2 * TICK)  # a grant decided just before `seen` is on the topic by now
    granted = dials(deployment, until=lambda recs: False, timeout=2)
    assert granted and all(from_iso(d["granted_at"]) <= seen for d in granted), granted
    dialed = {d["lead_id"] for d in granted}
    for lead_id, records in outcomes.items():
        (final,) = {r["outcome"] for r in records if r["final"]}
        assert (final == "withdrawn") is (lead_id not in dialed), (lead_id, records)
    assert 3 <= len(dialed) < 12
    shown = streams(deployment, worker, "run", "show", "W", "bulk")
    assert shown.startswith("run bulk of business W: withdrawn, 13 leads") and (
        f"withdrawn {13 - len(dialed)}" in shown
    )


def test_leads_scheduled_ahead_are_dialed_within_a_tick_of_their_time(deployment):
    worker = deployment.start_worker()
    worker.wait_serving()
    due = time.time() + 5
    deployment.produce_leads([lead("S1", "S", not_before=to_iso(due)), lead("S0", "S")])
    first = dials(deployment, until=lambda recs: len(recs) >= 1)
    assert [d["lead_id"] for d in first] == ["S0"], "the scheduled lead blocks no other"
    assert view(worker, "S")["scheduled"] == 1
    scheduled = next(
        d
        for d in dials(deployment, until=lambda r: any(d["lead_id"] == "S1" for d in r))
        if d["lead_id"] == "S1"
    )
    late = from_iso(scheduled["granted_at"]) - due
    assert 0 <= late <= TICK + 0.25, late


def test_a_closed_window_dials_nothing_then_fills_to_the_limit_when_it_opens(deployment):
    worker = deployment.start_worker()
    worker.wait_serving()
    now = time.time()
    zone, offset = midday_zone(now)
    opens = float(int(now) + 12)  # windows are set to the second
    streams(
        deployment,
        worker,
        "business",
        "set-window",
        "H",
        "--hours",
        f"{wall(opens, offset)}-{wall(opens + 3600, offset)}",
        "--tz",
        zone,
    )
    deployment.produce_leads([lead(f"H{n}", "H") for n in range(5)])
    eventually(lambda: view(worker, "H")["waiting"] == 5, timeout=20)
    assert (
        dials(
            deployment, until=lambda recs: False, timeout=max(0.5, opens - time.time() - 2)
        )
        == []
    )
    waits = view(worker, "H", "?lead=H0")["lead"]["waits_for"]
    assert "calling window" in waits, waits
    granted = dials(deployment, until=lambda recs: len(recs) >= 3, timeout=30)
    assert len(granted) == 3, "it fills to its limit at once"
    times = [from_iso(d["granted_at"]) - opens for d in granted]
    assert all(0 <= t <= TICK + 0.25 for t in times), times
    assert "calling window:" in streams(deployment, worker, "business", "show", "H")


def test_leads_are_judged_in_their_own_zones(deployment):
    worker = deployment.start_worker()
    worker.wait_serving()
    now = time.time()
    zone_in, offset = midday_zone(now)
    zone_out = midnight_zone(offset)
    streams(
        deployment,
        worker,
        "business",
        "set-window",
        "Z",
        "--hours",
        f"{wall(now - 3600, offset)}-{wall(now + 3600, offset)}",
        "--tz",
        zone_in,
    )
    deployment.produce_leads(
        [
            lead("Z-out", "Z", timezone=zone_out, priority=9),
            lead("Z-in", "Z", timezone=zone_in),
        ]
    )
    granted = dials(deployment, until=lambda recs: len(recs) >= 1)
    time.sleep(3 * TICK)
    granted = dials(deployment, until=lambda recs: False, timeout=1)
    assert {d["lead_id"] for d in granted} == {"Z-in"}, (
        "the higher priority waits its window"
    )
    out = view(worker, "Z", "?lead=Z-out")["lead"]
    assert out["state"] == "waiting" and "judged in " + zone_out in out["waits_for"]


class ScriptedDialer:
    """A dialer answering each attempt of a lead as scripted: queued, then its final
    status; it dedupes on dial_id like any dialer must."""

    def __init__(self, deployment: Deployment, finals: dict[int, str]):
        self.deployment, self.finals = deployment, finals
        self.placed: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        settings = self.deployment.settings
        consumer = clients.consumer(
            settings,
            f"{settings.topic_prefix}scripted-dialer",
            {"auto.offset.reset": "earliest"},
        )
        producer = clients.producer(settings)
        consumer.subscribe([self.deployment.topic(CALLS_DIAL)])
        try:
            while not self.stop.is_set():
                message = consumer.poll(0.2)
                if message is None or message.error() is not None:
                    continue
                command = DialCommand.decode(message.value())
                if command.dial_id in self.placed:
                    continue
                self.placed[command.dial_id] = time.time()
                for status in ("queued", self.finals[command.attempt]):
                    record = CallStatus(
                        command.dial_id,
                        command.lead_id,
                        command.business_id,
                        status,
                        to_iso(time.time()),
                    )
                    producer.produce(
                        self.deployment.topic(CALLS_STATUS),
                        key=record_key(command.business_id),
                        value=record.encode(),
                    )
                producer.flush(10)
        finally:
            consumer.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def test_busy_and_no_answer_are_retried_after_their_delays_with_final_flags(deployment):
    worker = deployment.start_worker()
    worker.wait_serving()
    streams(
        deployment,
        worker,
        "business",
        "set-retry",
        "R",
        "--on",
        "busy,no-answer",
        "--delays",
        "1s,2s",
        "--max-attempts",
        "3",
    )
    dialer = ScriptedDialer(deployment, {1: "busy", 2: "no-answer", 3: "completed"})
    try:
        deployment.produce_leads([lead("R1", "R")])
        records = finals(deployment, {"R1"}, timeout=60)["R1"]
    finally:
        dialer.close()
    unique = {json.dumps(r, sort_keys=True): r for r in records}.values()
    assert sorted((r["attempt"], r["outcome"], r["final"]) for r in unique) == [
        (1, "busy", False),
        (2, "no-answer", False),
        (3, "completed", True),
    ]
    placed = dialer.placed
    assert sorted(placed) == ["R:R1:1", "R:R1:2", "R:R1:3"]
    assert placed["R:R1:2"] - placed["R:R1:1"] >= 1.0
    assert placed["R:R1:3"] - placed["R:R1:2"] >= 2.0


def test_every_record_of_a_real_run_matches_the_published_schemas(deployment):
    """Leads of runs with schedules and zones, a withdrawal, a bad record, a control
    with a window and retries, the simulated dialer's statuses, the worker's ticks,
    dials, outcomes and dead letters: each valid under its topic's schema."""
    worker = deployment.start_worker()
    worker.wait_serving()
    streams(deployment, worker, "business", "set-window", "V", "--hours", "00:00-24:00")
    streams(
        deployment, worker, "business", "set-retry", "V", "--on", "busy", "--delays", "1s"
    )
    deployment.start_dialer(talk_seconds=(0.3, 0.8))
    leads = [
        lead("V1", "V", run_id="r1", timezone="Europe/Paris", priority=2),
        lead("V2", "V", run_id="r1", not_before=to_iso(time.time() + 1)),
        lead("V3", "V", run_id="r2", expires_at=time.time() + 600),
        lead("V4", "V", run_id="r2"),
    ]
    deployment.produce_leads(leads)
    deployment.produce(
        LEADS_REQUESTS,
        [
            (record_key("V"), Withdrawal("V", run_id="r2").encode()),
            (record_key("V"), b'{"lead_id": "V5", "business_id": "V"}'),
        ],
    )
    finals(deployment, {"V1", "V2", "V3", "V4", "V5"}, timeout=90)
    letters = {
        (letter["topic"], letter["partition"], letter["offset"])
        for letter in deployment.read("leads.deadletter", until=lambda r: False, timeout=2)
    }
    for topic in ALL_TOPICS:
        schema = schemas.topic_schema(topic)
        cls = jsonschema.validators.validator_for(schema)
        check = cls(schema, format_checker=cls.FORMAT_CHECKER)
        records = read_with_offsets(deployment, topic)
        assert records, f"the run wrote nothing to {topic}"
        for partition, offset, value in records:
            where = (deployment.topic(topic), partition, offset)
            if where in letters:  # an input the worker refused: the schema refuses it too
                assert not check.is_valid(json.loads(value)), where
            else:
                check.validate(json.loads(value))
    assert len(letters) == 1, "only the bad record was dead-lettered"


def read_with_offsets(deployment: Deployment, topic: str) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of every record of a topic, read to its end."""
    consumer = clients.consumer(
        deployment.settings,
        f"schema-check-{time.monotonic_ns()}",
        {
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        },
    )
    name = deployment.topic(topic)
    partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
    consumer.assign([TopicPartition(name, p, 0) for p in partitions])
    found, ended = [], set()
    deadline = time.monotonic() + 30
    try:
        while len(ended) < len(partitions) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                ended.add(message.partition())
                continue
            found.append((message.partition(), message.offset(), message.value()))
    finally:
        consumer.close()
    return found
