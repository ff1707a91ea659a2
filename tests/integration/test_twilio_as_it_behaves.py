"""The Twilio dialer against a fake as unkind as Twilio documents (tests/support/
fake_twilio.py): hung connections, errors about the account, 5xx that did create the
call under a lagging list, CPS queueing, webhook retries only on connection failure,
SIP response codes, and signatures as Twilio really signs. The truth is the fake's; every
request the dialer sent is checked against Twilio's OpenAPI description afterwards."""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from confluent_kafka import KafkaError, KafkaException
from twilio.request_validator import RequestValidator

from streams.dialers.twilio.ledger import Ledger
from streams.dialers.twilio.producer import StatusProducer
from streams.topics import CallStatus
from tests.integration.test_twilio_dialer import (
    callback_url,
    dial_commands,
    post_callback,
    produce_commands,
    statuses_so_far,
    statuses_until,
    terminal_for,
)
from tests.support import twilio_contract
from tests.support.deployment import Dialer
from tests.support.fake_twilio import FakeTwilio
from tests.support.waiting import eventually


@pytest.fixture
def fake():
    with FakeTwilio(seed=17) as server:
        yield server
        assert twilio_contract.all_problems(server.requests()) == []


def calls_per_dial(fake: FakeTwilio) -> collections.Counter[str]:
    return collections.Counter(call["dial_id"] for call in fake.calls())


def metric(dialer: Dialer, name: str) -> float:
    with urllib.request.urlopen(f"{dialer.base_url}/metrics", timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def test_a_hung_create_holds_no_cps_token_and_is_bounded(deployment, fake, sqlite_url):
    """One connection Twilio never answers: the other dials go on at the CPS rate, and
    the hung one is given up after the request timeout, looked for, and dialed again."""
    fake.hang_next(1)
    dialer = Dialer(deployment, fake, sqlite_url, TWILIO_CPS="1").start_thread()
    try:
        commands = dial_commands(5, businesses=5, dial_by_in=40)
        produce_commands(deployment, commands)
        eventually(lambda: len(fake.calls()) >= 4, timeout=12)
        assert fake.hung_requests() == 1
        ids = {c.dial_id for c in commands}
        statuses_until(
            deployment,
            lambda recs: {r["dial_id"] for r in recs if r["status"] == "queued"} == ids,
            timeout=40,
        )
        assert calls_per_dial(fake) == {dial_id: 1 for dial_id in ids}
    finally:
        dialer.stop()
        fake.release_hung()


def test_account_errors_pause_dialing_and_fail_no_lead(deployment, fake, sqlite_url):
    """A rotated auth token (401/20003) pauses dialing: no lead fails, /healthz is
    unhealthy and the pause metric is 1; once Twilio accepts the account, every dial
    goes through. A number Twilio refuses (21211) still ends only its own lead."""
    commands = dial_commands(6, businesses=3, dial_by_in=60, run="acct")
    bad = commands[5]
    fake.rejected_numbers = {bad.phone: 21211}
    fake.refuse_creates(401, 20003)
    dialer = Dialer(deployment, fake, sqlite_url).start_thread()
    try:
        produce_commands(deployment, commands)
        eventually(lambda: dialer.health()[0] == 503, timeout=15)
        code, body = dialer.health()
        assert "20003" in body["twilio"] and "paused" in body["twilio"]
        assert metric(dialer, "streams_dialer_account_paused") == 1
        time.sleep(3)  # probes keep being refused meanwhile
        assert [s for s in statuses_so_far(deployment) if s["status"] == "failed"] == []
        assert all(job.live for job in Ledger(sqlite_url).all())
        fake.accept_creates()
        ids = {c.dial_id for c in commands}
        records = statuses_until(
            deployment,
            lambda recs: {r["dial_id"] for r in recs} == ids,
            timeout=40,
        )
        failed = {r["dial_id"] for r in records if r["status"] == "failed"}
        assert failed == {bad.dial_id}
        assert len(fake.calls()) == 5
        eventually(lambda: dialer.health()[0] == 200, timeout=10)
        assert metric(dialer, "streams_dialer_account_paused") == 0
        refused = [r for r in fake.create_requests() if r["http_status"] == 401]
        assert 1 <= len(refused) <= 12, "paused: probes, not the backlog at CPS speed"
    finally:
        dialer.stop()


def test_a_5xx_that_made_the_call_is_found_despite_a_lagging_list(
    deployment, fake, sqlite_url
):
    """Every create makes its call and answers 500; the list shows a call 2 s late and
    no callback arrives: the dialer waits for the list to settle, finds each call and
    never dials a second time."""
    fake.server_error_after_create_ratio = 1.0
    fake.consistency_lag = (2.0, 2.0)
    fake.drop_callbacks(True)
    dialer = Dialer(
        deployment, fake, sqlite_url, TWILIO_LIST_SETTLE_SECONDS="3"
    ).start_thread()
    try:
        commands = dial_commands(4, businesses=4, dial_by_in=40, run="lag")
        produce_commands(deployment, commands)
        ids = {c.dial_id for c in commands}
        statuses_until(
            deployment,
            lambda recs: {r["dial_id"] for r in recs if r["status"] == "queued"} == ids,
            timeout=40,
        )
        assert calls_per_dial(fake) == {dial_id: 1 for dial_id in ids}
        truth = {c["dial_id"]: c["sid"] for c in fake.calls()}
        assert {j.dial_id: j.call_sid for j in Ledger(sqlite_url).all()} == truth
    finally:
        dialer.stop()


def test_a_call_no_row_owns_is_hung_up(deployment, fake, sqlite_url):
    """The list lags longer than the dialer waits, so a 5xx's call is dialed again; the
    first call, once it shows up with no row owning it, is hung up and counted."""
    fake.server_error_after_create_ratio = 1.0
    fake.consistency_lag = (3.0, 3.0)
    fake.ring_seconds, fake.talk_seconds, fake.answer_ratio = (2.5, 2.9), (4.0, 4.0), 1.0
    fake.drop_callbacks(True)
    dialer = Dialer(
        deployment, fake, sqlite_url, TWILIO_LIST_SETTLE_SECONDS="0.2"
    ).start_thread()
    try:
        command = dial_commands(1, run="dup")[0]
        fake.server_error_after_create_ratio = 1.0
        produce_commands(deployment, [command])
        eventually(lambda: len(fake.calls()) >= 2, timeout=20)
        fake.server_error_after_create_ratio = 0.0
        eventually(lambda: dialer.dialer.counters["unowned-hung-up"] >= 1, timeout=20)
        owned = Ledger(sqlite_url).get(command.dial_id).call_sid
        hung_up = [
            r
            for r in fake.requests()
            if r["method"] == "POST" and ("Status", "completed") in r["form"]
        ]
        assert hung_up and all(owned not in r["path"] for r in hung_up)
        assert metric(dialer, "streams_dialer_unowned_calls_hung_up_total") >= 1
    finally:
        dialer.stop()


def test_calls_queued_past_dial_by_are_canceled_and_reported_once_confirmed(
    deployment, fake, sqlite_url
):
    """The account's CPS is 1 but the dialer is told 5: Twilio queues the extra calls.
    Those still queued at their dial_by are canceled, so none starts after it, and the
    lead hears `canceled` only once Twilio confirms."""
    fake.cps = 1.0
    dialer = Dialer(deployment, fake, sqlite_url, TWILIO_CPS="5").start_thread()
    try:
        commands = dial_commands(8, businesses=8, dial_by_in=3, run="cps")
        dial_by = {c.dial_id: time.time() + 3 for c in commands}
        produce_commands(deployment, commands)
        ids = {c.dial_id for c in commands}
        records = statuses_until(
            deployment, lambda recs: len(terminal_for(recs, ids)) == 8, timeout=60
        )
        calls = fake.calls()
        late = [
            c
            for c in calls
            if c["started_at"] is not None and c["started_at"] > dial_by[c["dial_id"]] + 2
        ]
        assert late == [], late
        assert len(calls) == 8
        canceled = {c["dial_id"] for c in calls if c["status"] == "canceled"}
        assert canceled, "some calls were still queued at their dial_by"
        final = terminal_for(records, ids)
        assert {d for d, r in final.items() if r["status"] == "canceled"} == canceled
        jobs = {j.dial_id: j for j in Ledger(sqlite_url).all()}
        assert max(j.queue_seconds or 0 for j in jobs.values()) >= 3
        assert dialer.dialer.counters["canceled-queued"] == len(canceled)
    finally:
        dialer.stop()


def test_dialers_share_the_accounts_cps(deployment, fake, sqlite_url):
    dialer = Dialer(
        deployment, fake, sqlite_url, TWILIO_CPS="2", TWILIO_DIALER_INSTANCES="2"
    ).start_thread()
    try:
        commands = dial_commands(5, businesses=5, run="share")
        produce_commands(deployment, commands)
        eventually(lambda: len(fake.create_requests()) == 5, timeout=30)
        assert fake.max_creates_in_any_second() <= 1
    finally:
        dialer.stop()


def test_a_callback_is_answered_at_once_and_its_live_status_delivered_later(
    deployment, fake, sqlite_url, monkeypatch
):
    """Kafka refuses the first `initiated` status: the callback is still answered 204 at
    once (Twilio would not retry a 5xx), and the status reaches calls.status from the
    ledger's outbox while the call is still live."""
    # Calls long enough that the status is seen while the call is still live.
    fake.ring_seconds, fake.talk_seconds, fake.answer_ratio = (0.3, 0.3), (20.0, 20.0), 1.0
    real_produce = StatusProducer.produce
    refused: list[str] = []

    def produce(self: StatusProducer, status: CallStatus) -> asyncio.Future[None]:
        if status.status == "initiated" and not refused:
            refused.append(status.dial_id)
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_exception(KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT)))
            return future
        return real_produce(self, status)

    monkeypatch.setattr(StatusProducer, "produce", produce)
    # No fetch by the reconciler: the outbox alone delivers the status.
    dialer = Dialer(
        deployment, fake, sqlite_url, RECONCILE_AFTER_SECONDS="600"
    ).start_thread()
    try:
        command = dial_commands(1, run="slow")[0]
        produce_commands(deployment, [command])
        records = statuses_until(
            deployment,
            lambda recs: any(r["status"] == "initiated" for r in recs),
            timeout=20,
        )
        assert refused == [command.dial_id]
        initiated = next(r for r in records if r["status"] == "initiated")
        assert not terminal_for(records, {command.dial_id}), "delivered while live"
        callbacks = [cb for cb in fake.callbacks() if cb["status"] == "initiated"]
        assert [cb["http_status"] for cb in callbacks] == [204]
        assert initiated["call_sid"] == fake.calls()[0]["sid"]
    finally:
        dialer.stop()


def test_failed_calls_carry_the_sip_response_code(deployment, fake, sqlite_url):
    fake.answer_ratio = 0.0
    dialer = Dialer(deployment, fake, sqlite_url).start_thread()
    try:
        commands = dial_commands(12, businesses=4, run="sip")
        produce_commands(deployment, commands)
        ids = {c.dial_id for c in commands}
        records = statuses_until(
            deployment, lambda recs: len(terminal_for(recs, ids)) == 12, timeout=60
        )
        final = terminal_for(records, ids)
        assert {r["status"] for r in final.values()} >= {"busy", "no-answer"}
        for record in final.values():
            assert record["reason"].startswith("SIP "), record
        busy = [r for r in final.values() if r["status"] == "busy"]
        assert all(r["reason"] == "SIP 486 Busy Here" for r in busy)
        jobs = Ledger(sqlite_url).all()
        assert all(j.sip_response_code and j.sip_response_code >= 400 for j in jobs)
    finally:
        dialer.stop()


def test_signatures_as_twilio_really_sends_them(deployment, fake, sqlite_url):
    """A junk request with repeated keys is refused 403 (not a crash); a query a proxy
    re-encoded, a callback signed with the token being rotated out, and one signed by a
    webhook rule's SharedKey with HMAC-SHA256 are accepted."""
    dialer = Dialer(
        deployment,
        fake,
        sqlite_url,
        RECONCILE_AFTER_SECONDS="600",
        TWILIO_AUTH_TOKEN_PREVIOUS="old-token",
        TWILIO_WEBHOOK_SHARED_KEYS="webhooks_key_1:shared-secret",
    ).start_thread()
    try:
        fake.drop_callbacks(True)
        command = dial_commands(1, run="sig")[0]
        produce_commands(deployment, [command])
        statuses_until(deployment, lambda recs: any(r["status"] == "queued" for r in recs))
        sid = Ledger(sqlite_url).get(command.dial_id).call_sid
        url = callback_url(dialer, command.dial_id, command.business_id, command.lead_id)
        junk = urllib.request.Request(
            url,
            data=b"CallSid=x&CallSid=y&CallStatus=completed",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": "junk",
            },
            method="POST",
        )
        try:
            urllib.request.urlopen(junk, timeout=10)
            status = 200
        except urllib.error.HTTPError as exc:
            status = exc.code
        assert status == 403

        ringing = {"CallSid": sid, "CallStatus": "initiated", "SequenceNumber": "0"}
        signature = RequestValidator("old-token").compute_signature(url, ringing)
        re_encoded = url.replace(
            urllib.parse.quote(command.dial_id, safe=""), command.dial_id
        )
        assert re_encoded != url
        assert post_callback(re_encoded, ringing, signature) in (200, 204)

        done = {"CallSid": sid, "CallStatus": "completed", "SequenceNumber": "1"}
        shared = RequestValidator("shared-secret").compute_signature(
            url, done, "HMAC_SHA256"
        )
        request = urllib.request.Request(
            url,
            data=urllib.parse.urlencode(done).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": shared,
                "X-Twilio-Webhooks-Signature-Settings": (
                    "key=webhooks_key_1,algorithm=HMAC_SHA256"
                ),
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 204
        assert Ledger(sqlite_url).get(command.dial_id).twilio_status == "completed"
    finally:
        dialer.stop()


def test_public_base_url_must_be_one_twilio_can_reach(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'ledger.db'}",
        TWILIO_ACCOUNT_SID="AC" + "0" * 32,
        TWILIO_AUTH_TOKEN="t",
        TWILIO_FROM_NUMBER="+14155550100",
    )
    for url, says in (
        ("http://dialer.example.com", "must be an https URL"),
        ("https://127.0.0.1:8080", "public DNS host"),
        ("https://localhost", "public DNS host"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "streams", "dialer"],
            env={**env, "PUBLIC_BASE_URL": url},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "PUBLIC_BASE_URL" in lines[0] and says in lines[0]
