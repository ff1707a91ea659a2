"""The Twilio dialer (streams/dialers/twilio/) on the real broker, with the real `twilio`
library talking to a fake Twilio server (tests/support/fake_twilio.py) on 127.0.0.1.

Every check of what was really dialed reads the fake's records (create requests, calls,
true concurrency per business), never the dialer's own view; the design note's query
runs against the ledger (SQLite and PostgreSQL) every ~100 ms while calls are placed.
The dialer's pure parts (rate limiter, error classification, lookup window) have unit
tests of their own in tests/unit/test_twilio_*.py.
"""

from __future__ import annotations

import bisect
import collections
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from twilio.request_validator import RequestValidator

from streams.dialers.twilio.create import DEFAULT_TWIML, STATUS_PATH
from streams.dialers.twilio.ledger import Ledger, from_epoch
from streams.topics import (
    DIAL_DEADLINE_PASSED,
    TERMINAL_STATUSES,
    BusinessControl,
    DialCommand,
    record_key,
    to_iso,
)
from tests.support import twilio_contract
from tests.support.deployment import FROM_NUMBER, Deployment, Dialer
from tests.support.fake_twilio import FakeTwilio

integration = pytest.mark.integration

LIMIT = 3


# -- pieces ----------------------------------------------------------------------------


@pytest.fixture
def fake():
    with FakeTwilio(seed=11) as server:
        yield server
        # Every request the dialer sent is one Twilio's OpenAPI description allows.
        assert twilio_contract.all_problems(server.requests()) == []


class SeedQuerySampler:
    """Runs the design note's verification query every ~100 ms; keeps the peaks and
    when each sample was taken."""

    def __init__(self, url: str):
        self.ledger = Ledger(url)
        self.peak: dict[str, int] = {}
        self.sampled_at: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for business, count in self.ledger.active_calls():
                    self.peak[business] = max(self.peak.get(business, 0), count)
                self.sampled_at.append(time.time())
            except Exception:  # the dialer creates the table a moment after we start
                pass
            self._stop.wait(0.1)

    def __enter__(self) -> SeedQuerySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)
        self.ledger.close()

    def calls_sampled_live(self, calls: list[dict]) -> int:
        """How many of the fake's calls were live while some sample was taken."""
        times = sorted(self.sampled_at)
        covered = 0
        for call in calls:
            first = bisect.bisect_left(times, call["created_at"])
            covered += first < len(times) and times[first] <= call["ended_at"]
        return covered


def make_leads(businesses: int, per_business: int, run: str = "r") -> list[dict]:
    """Unique phone per lead, so "no phone called twice" is checkable at the fake."""
    return [
        {
            "lead_id": f"{run}-b{b}-{n}",
            "business_id": f"b{b}",
            "phone": f"+1415{b:03d}{n:04d}",
        }
        for b in range(businesses)
        for n in range(per_business)
    ]


def dial_commands(
    count: int, businesses: int = 4, dial_by_in: float = 30.0, run: str = "d"
) -> list[DialCommand]:
    now = time.time()
    return [
        DialCommand(
            dial_id=f"b{n % businesses}:{run}{n}:1",
            lead_id=f"{run}{n}",
            business_id=f"b{n % businesses}",
            phone=f"+1650555{n:04d}",
            attempt=1,
            granted_at=to_iso(now),
            dial_by=to_iso(now + dial_by_in),
        )
        for n in range(count)
    ]


def produce_commands(deployment: Deployment, commands: list[DialCommand]) -> None:
    deployment.produce(
        "calls.dial", [(record_key(c.business_id), c.encode()) for c in commands]
    )


def statuses_until(deployment: Deployment, done, timeout: float = 60) -> list[dict]:
    return deployment.read("calls.status", until=done, timeout=timeout)


def statuses_so_far(deployment: Deployment, timeout: float = 30) -> list[dict]:
    """Every status on the topic now: each partition read up to its end. The dialer
    answers a webhook only once the broker has what it produced, so after the answer
    this is all the callback caused."""
    name = deployment.topic("calls.status")
    consumer = Consumer(
        {
            "bootstrap.servers": deployment.settings.kafka_bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
            for p in partitions
        }
        unread = {p: end for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(name, p, 0) for p in unread])
        records: list[dict] = []
        deadline = time.monotonic() + timeout
        while unread and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.5):
                if message.error() is not None:
                    continue
                records.append(json.loads(message.value()))
                if message.offset() + 1 >= unread.get(message.partition(), 0):
                    unread.pop(message.partition(), None)
        assert not unread, f"partitions not read to their end: {unread}"
        return records
    finally:
        consumer.close()


def terminal_for(records: list[dict], dial_ids: set[str]) -> dict[str, dict]:
    found = {}
    for record in records:
        if record["status"] in TERMINAL_STATUSES and record["dial_id"] in dial_ids:
            found.setdefault(record["dial_id"], record)
    return found


def assert_no_double_dial(fake: FakeTwilio) -> None:
    """At the fake: one call per dial_id, one call per phone, and never more than the
    limit live per business."""
    calls = fake.calls()
    per_dial = collections.Counter(c["dial_id"] for c in calls)
    assert all(n == 1 for n in per_dial.values()), [d for d, n in per_dial.items() if n > 1]
    per_phone = collections.Counter(c["to"] for c in calls)
    assert all(n == 1 for n in per_phone.values()), [
        p for p, n in per_phone.items() if n > 1
    ]
    peak = fake.peak_live_by_business()
    assert peak and max(peak.values()) <= LIMIT, peak


def callback_url(dialer: Dialer, dial_id: str, business_id: str, lead_id: str) -> str:
    query = urllib.parse.urlencode(
        {"dial_id": dial_id, "business_id": business_id, "lead_id": lead_id}
    )
    return f"{dialer.settings.public_base_url}{STATUS_PATH}?{query}"


def post_callback(url: str, params: dict, signature: str | None) -> int:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    request = urllib.request.Request(
        url, data=urllib.parse.urlencode(params).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code


# -- end to end ------------------------------------------------------------------------


@integration
def test_two_hundred_leads_end_to_end(deployment, fake, ledger_url):
    """Worker + Twilio dialer + fake Twilio (with duplicated and reordered callbacks):
    every lead one outcome, no phone called twice, at most 3 live calls per business at
    Twilio and in every sample of the design note's query."""
    fake.duplicate_ratio, fake.reorder_ratio = 0.2, 0.2
    worker = deployment.start_worker()
    dialer = Dialer(deployment, fake, ledger_url)
    leads = make_leads(20, 10)
    with SeedQuerySampler(ledger_url) as sampler:
        worker.wait_serving()
        dialer.start_thread()
        deployment.produce_leads(leads)
        outcomes = deployment.outcomes(leads, timeout=150)
        assert fake.wait_idle(20)
    try:
        assert len(outcomes) == 200
        assert {o["outcome"] for o in outcomes.values()} <= set(TERMINAL_STATUSES)
        assert_no_double_dial(fake)
        assert len(fake.calls()) == 200
        assert all(call["voice"] == {"Twiml": DEFAULT_TWIML} for call in fake.calls())
        # Sampled all along: aiming at 10 samples a second (a loaded machine manages
        # fewer), at 2 a second every answered call (80%) would be live during one.
        covered = sampler.calls_sampled_live(fake.calls())
        assert covered >= len(fake.calls()) // 2, (covered, len(sampler.sampled_at))
        assert sampler.peak and max(sampler.peak.values()) <= LIMIT, sampler.peak
        assert max(sampler.peak.values()) == LIMIT, "the businesses never saturated"
        assert dialer.dialer.counters["callback-duplicate"] > 0, "duplicates were exercised"
        # The ledger agrees with Twilio about every call's end.
        truth = {c["sid"]: c["status"] for c in fake.calls()}
        jobs = Ledger(ledger_url).all()
        assert len(jobs) == 200 and all(j.status == truth[j.call_sid] for j in jobs)
        assert Ledger(ledger_url).active_calls() == []
        # Every create was made as the contract says.
        params = fake.create_requests()[0]["params"]
        assert params["StatusCallbackEvent"] == ["initiated", "completed"]
        assert params["TimeLimit"] == "5" and params["Timeout"] == "3"
        assert params["From"] == FROM_NUMBER and params["StatusCallbackMethod"] == "POST"
        assert dialer.health()[0] == 200
    finally:
        dialer.stop()


@integration
def test_sigkilled_dialer_never_calls_twice_and_loses_no_lead(deployment, fake, sqlite_url):
    """Killed right after a create (before the ledger knew the CallSid), then SIGKILLed
    at an arbitrary moment: each restart finds its calls at Twilio instead of dialing
    again."""
    worker = deployment.start_worker()
    dialer = Dialer(deployment, fake, sqlite_url, TWILIO_CPS="20")
    leads = make_leads(12, 6, run="k")
    worker.wait_serving()
    try:
        dialer.start_process(STREAMS_DIALER_CRASH_AFTER_CREATE="15")
        deployment.produce_leads(leads)
        assert dialer.process.wait(60) == 137, dialer.log()
        assert "exiting after create #15" in dialer.log()
        orphans = [
            j
            for j in Ledger(sqlite_url).all()
            if j.live and j.call_sid is None and j.create_requests > 0
        ]
        assert orphans, "the crash left no create without its CallSid"
        dialer.start_process()
        deployment.read("leads.outcomes", until=lambda recs: len(recs) >= 30, timeout=90)
        dialer.kill()
        dialer.start_process()
        deployment.outcomes(leads, timeout=150)
        assert "recovered dial" in dialer.log(tail=None)
        assert fake.wait_idle(20)
        assert_no_double_dial(fake)
        # Every call Twilio has is in the ledger under its dial_id, with its SID: the
        # crash window's calls were found, not dialed again.
        at_twilio = {c["dial_id"]: c["sid"] for c in fake.calls()}
        ledger = {job.dial_id: job for job in Ledger(sqlite_url).all()}
        assert all(ledger[d].call_sid == sid for d, sid in at_twilio.items())
        assert any(o.dial_id in at_twilio for o in orphans)
        for orphan in orphans:  # sent, but the crash came before Twilio got it
            if orphan.dial_id not in at_twilio:
                assert ledger[orphan.dial_id].status == "canceled", ledger[orphan.dial_id]
        dialer.stop()  # SIGTERM: a clean stop
        assert dialer.process.returncode == 0, dialer.log()
        assert "twilio dialer stopped" in dialer.log()
    finally:
        dialer.stop()


@integration
# Its CPS is counted where the fake receives the creates, hence the serial phase.
@pytest.mark.alone
def test_backlog_longer_than_dial_by_is_refused_never_dialed(deployment, fake, sqlite_url):
    """CPS 1 and 30 businesses each granted 3 dials at once: most commands cannot be
    placed before their dial_by; they are reported stale and never reach Twilio."""
    deployment.env.update(
        DIAL_DEADLINE_SECONDS="3", DIAL_ACK_TIMEOUT_SECONDS="1", MAX_DIAL_ATTEMPTS="2"
    )
    worker = deployment.start_worker()
    dialer = Dialer(deployment, fake, sqlite_url, TWILIO_CPS="1")
    leads = make_leads(30, 3, run="s")
    worker.wait_serving()
    dialer.start_thread()
    try:
        deployment.produce_leads(leads)
        outcomes = deployment.outcomes(leads, timeout=120)
        statuses = deployment.read("calls.status", until=lambda recs: True, timeout=5)
        refused = {
            s["dial_id"]
            for s in statuses
            if s["status"] == "canceled" and s.get("reason") == DIAL_DEADLINE_PASSED
        }
        assert len(refused) > 30, len(refused)
        dialed = {c["dial_id"] for c in fake.calls()}
        assert dialed and not refused & dialed, refused & dialed
        assert max(fake.peak_live_by_business().values()) <= LIMIT
        assert fake.max_creates_in_any_second() <= 1
        assert any(
            o["outcome"] == "canceled" and DIAL_DEADLINE_PASSED in (o.get("reason") or "")
            for o in outcomes.values()
        )
        for job in Ledger(sqlite_url).all():
            if job.dial_id in refused:
                assert job.status == "canceled" and job.create_requests == 0, job
    finally:
        dialer.stop()


@integration
def test_rate_storm_server_errors_and_a_rejected_number(deployment, fake, sqlite_url):
    """429s and 5xx are ridden out; a number Twilio rejects ends its lead failed with
    Twilio's reason; nobody is called twice."""
    leads = make_leads(4, 4, run="e")
    rejected = leads[5]
    fake.rejected_numbers = frozenset({rejected["phone"]})
    worker = deployment.start_worker()
    dialer = Dialer(deployment, fake, sqlite_url, TWILIO_CPS="20")
    worker.wait_serving()
    dialer.start_thread()
    try:
        fake.fail_next(14, 429, 20429)
        fake.fail_next(3, 503, 20503)
        fake.fail_next(2, 429, 20429)
        deployment.produce_leads(leads)
        outcomes = deployment.outcomes(leads, timeout=120)
        answers = collections.Counter(r["http_status"] for r in fake.create_requests())
        assert answers[429] == 16 and answers[503] == 3, answers
        assert outcomes[rejected["lead_id"]]["outcome"] == "failed"
        assert "is not a valid phone number" in outcomes[rejected["lead_id"]]["reason"]
        others = [o for lead, o in outcomes.items() if lead != rejected["lead_id"]]
        assert all(o["outcome"] != "canceled" for o in others), others
        assert_no_double_dial(fake)
        job = next(j for j in Ledger(sqlite_url).all() if j.lead_id == rejected["lead_id"])
        assert (job.status, job.error_code) == ("failed", 21211)
        assert dialer.dialer.counters["create-retried"] >= 19
        # The dialer's Prometheus endpoint counts the same story (the registry is this
        # process's, so earlier tests may have added to it: at least, never less).
        with urllib.request.urlopen(f"{dialer.base_url}/metrics", timeout=5) as reply:
            exposed = {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(reply.read().decode())
                for sample in family.samples
            }
        assert exposed[("streams_twilio_errors_total", (("code", "21211"),))] >= 1
        assert exposed[("streams_twilio_errors_total", (("code", "20429"),))] >= 16
        assert exposed[("streams_dialer_calls_created_total", ())] >= 15
    finally:
        dialer.stop()


@integration
def test_forged_or_missing_signature_is_refused_and_changes_nothing(
    deployment, fake, sqlite_url
):
    dialer = Dialer(
        deployment, fake, sqlite_url, RECONCILE_AFTER_SECONDS="600"
    ).start_thread()
    try:
        fake.drop_callbacks(True)  # only our own callbacks reach the webhook
        command = dial_commands(1)[0]
        produce_commands(deployment, [command])
        statuses_until(deployment, lambda recs: any(r["status"] == "queued" for r in recs))
        ledger = Ledger(sqlite_url)
        before = ledger.get(command.dial_id)
        assert before.call_sid and before.twilio_status == "queued"
        url = callback_url(dialer, command.dial_id, command.business_id, command.lead_id)
        params = {
            "CallSid": before.call_sid,
            "CallStatus": "completed",
            "SequenceNumber": "3",
            "AccountSid": fake.account_sid,
            "Timestamp": "Tue, 31 Aug 2010 20:36:28 +0000",
        }
        validator = RequestValidator(fake.auth_token)
        forged = RequestValidator("not-the-token").compute_signature(url, params)
        other_url = url.replace("127.0.0.1", "evil.example")
        assert post_callback(url, params, None) == 403
        assert post_callback(url, params, "") == 403
        assert post_callback(url, params, forged) == 403
        assert (
            post_callback(url, params, validator.compute_signature(other_url, params))
            == 403
        )
        tampered = dict(params, CallStatus="busy")
        assert post_callback(url, tampered, validator.compute_signature(url, params)) == 403
        assert ledger.get(command.dial_id) == before
        statuses = statuses_so_far(deployment)
        assert [s["status"] for s in statuses] == ["queued"]

        # A genuine one goes through once; its duplicate and a late live status do not.
        signature = validator.compute_signature(url, params)
        assert post_callback(url, params, signature) in (200, 204)
        assert post_callback(url, params, signature) in (200, 204)
        late = dict(params, CallStatus="ringing", SequenceNumber="1")
        assert post_callback(url, late, validator.compute_signature(url, late)) in (
            200,
            204,
        )
        after = ledger.get(command.dial_id)
        assert (after.status, after.twilio_status, after.sequence) == (
            "completed",
            "completed",
            3,
        )
        statuses = statuses_so_far(deployment)
        assert [s["status"] for s in statuses] == ["queued", "completed"]
        assert dialer.health() == (
            200,
            {"status": "ok", "ledger": "ok", "kafka": "ok", "twilio": "ok"},
        )
        assert dialer.dialer.counters["callback-forbidden"] == 5
        ledger.close()
    finally:
        dialer.stop()


@integration
def test_lost_webhooks_are_recovered_by_the_reconciler(deployment, fake, ledger_url):
    fake.drop_callbacks(True)
    dialer = Dialer(
        deployment, fake, ledger_url, RECONCILE_AFTER_SECONDS="1"
    ).start_thread()
    try:
        commands = dial_commands(8)
        produce_commands(deployment, commands)
        ids = {c.dial_id for c in commands}
        records = statuses_until(
            deployment, lambda recs: len(terminal_for(recs, ids)) == 8, timeout=60
        )
        final = terminal_for(records, ids)
        assert len(final) == 8
        truth = {c["dial_id"]: c["status"] for c in fake.calls()}
        assert {d: r["status"] for d, r in final.items()} == truth
        assert all(cb["outcome"] == "dropped" for cb in fake.callbacks())
        assert dialer.dialer.counters["reconciled"] >= 8
        assert Ledger(ledger_url).active_calls() == []
    finally:
        dialer.stop()


@integration
# Counted where the fake receives them: a loaded machine bunches arrivals that left the
# dialer spaced, so this runs in the serial phase.
@pytest.mark.alone
def test_twilio_cps_two_means_two_creates_in_any_second(deployment, fake, sqlite_url):
    voice_url = "https://voice.example.com/flows/outbound/"
    dialer = Dialer(
        deployment, fake, sqlite_url, TWILIO_CPS="2", TWILIO_VOICE_URL=voice_url
    ).start_thread()
    try:
        commands = dial_commands(12, businesses=12)
        produce_commands(deployment, commands)
        statuses_until(
            deployment,
            lambda recs: sum(r["status"] == "queued" for r in recs) == 12,
            timeout=30,
        )
        assert len(fake.create_requests()) == 12
        assert [call["voice"] for call in fake.calls()] == [{"Url": voice_url}] * 12
        assert fake.max_creates_in_any_second() <= 2
        times = sorted(r["at"] for r in fake.create_requests())
        assert times[-1] - times[0] >= 4.9, "12 creates at 2 per second take 5 s at least"
    finally:
        dialer.stop()


@integration
def test_resent_command_is_not_dialed_again_and_gets_the_last_status(
    deployment, fake, sqlite_url
):
    dialer = Dialer(deployment, fake, sqlite_url).start_thread()
    try:
        command = dial_commands(1, run="dup")[0]
        produce_commands(deployment, [command])
        records = statuses_until(
            deployment, lambda recs: bool(terminal_for(recs, {command.dial_id}))
        )
        produce_commands(deployment, [command, command])
        again = statuses_until(deployment, lambda recs: len(recs) >= len(records) + 2)
        assert len(fake.calls()) == 1
        final = terminal_for(records, {command.dial_id})[command.dial_id]["status"]
        assert [r["status"] for r in again[len(records) :]] == [final, final]
        assert dialer.dialer.counters["duplicate"] == 2
    finally:
        dialer.stop()


def test_missing_twilio_settings_stop_the_dialer_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'ledger.db'}",
        PUBLIC_BASE_URL="https://dialer.example.com",
    )
    result = subprocess.run(
        [sys.executable, "-m", "streams", "dialer"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "streams: error: TWILIO_ACCOUNT_SID is required by the Twilio dialer"
        " (or run `streams dialer --simulate`)"
    ]
    assert not (tmp_path / "ledger.db").exists()
    env.update(
        TWILIO_ACCOUNT_SID="AC" + "0" * 32,
        TWILIO_AUTH_TOKEN="t",
        TWILIO_FROM_NUMBER="555-0100",
    )
    result = subprocess.run(
        [sys.executable, "-m", "streams", "dialer"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "TWILIO_FROM_NUMBER must be an E.164 number" in result.stderr


@integration
def test_ledger_active_prints_the_design_note_query(kafka_broker, tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url)
    ledger.migrate()
    for n, business in enumerate(["1", "1", "2", "1"]):
        ledger.claim(
            dial_id=f"{business}:{n}:1",
            lead_id=str(n),
            business_id=business,
            phone="+14155550100",
            attempt=1,
            dial_by=from_epoch(time.time() + 30),
        )
    ledger.close()
    deployment = Deployment(kafka_broker.bootstrap, tmp_path)
    deployment.create_topics()
    env = {**deployment.env, "DATABASE_URL": url}

    def active(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "streams", "ledger", "active", *args],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )

    result = active()
    assert result.returncode == 0, result.stderr
    assert "SELECT business_id, COUNT(*)" in result.stdout
    lines = result.stdout.splitlines()
    assert any(line.startswith("1 ") and " 3 " in line and "<= 3" in line for line in lines)
    assert any(line.startswith("2 ") and " 1 " in line for line in lines)
    # Business 1 gets its own limit of 2 (business.control): now it is over.
    deployment.produce(
        "business.control", [(record_key("1"), BusinessControl("1", 2, False).encode())]
    )
    result = active("--json")
    assert result.returncode == 1
    assert json.loads(result.stdout) == {
        "limit": 3,
        "limits": {"1": 2},
        "active_calls": {"1": 3, "2": 1},
        "within_limit": False,
    }
    # --default-limit judges by MAX_OUTBOUND_CALLS_PER_BUSINESS and needs no broker.
    result = active("--json", "--default-limit", KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["limits"] == {}
    result = active(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--default-limit" in result.stderr
