"""Running the real pieces in tests: worker processes, the simulated dialer, topic reads.

Each test gets its own topic prefix, app id, web port and data dir, so tests share the
session's broker without seeing each other's records.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import TopicPartition

from streams.dialers.simulated import SimulatedDialer
from streams.dialers.twilio.dialer import TwilioDialer
from streams.kafka import admin, clients
from streams.settings import Settings
from streams.topics import record_key, topic_name
from tests.support.fake_twilio import FakeTwilio
from tests.support.ports import free_port
from tests.support.waiting import NeverHolds, eventually

#: The caller id the Twilio dialer uses against the fake Twilio server.
FROM_NUMBER = "+14155550199"

#: Short timings so that resends, leases and held statuses happen within a test.
FAST_TIMINGS = {
    "TOPIC_PARTITIONS": "4",
    "DIAL_DEADLINE_SECONDS": "10",
    "DIAL_ACK_TIMEOUT_SECONDS": "2",
    "RING_TIMEOUT_SECONDS": "3",
    "CALL_TIME_LIMIT_SECONDS": "5",
    "LEASE_GRACE_SECONDS": "40",
    "ORPHAN_STATUS_HOLD_SECONDS": "5",
    "TICK_INTERVAL_SECONDS": "0.3",
}


class Deployment:
    """One isolated limiter deployment on the shared broker."""

    def __init__(self, bootstrap: str, workdir: Path, **overrides: str):
        tag = uuid.uuid4().hex[:8]
        self.workdir = workdir
        self.env = {
            **os.environ,
            **FAST_TIMINGS,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TOPIC_PREFIX": f"t{tag}.",
            "STREAMS_APP_ID": f"limiter-{tag}",
            **overrides,
        }
        self.settings = Settings.from_env(self.env)
        self.workers: list[WorkerProcess] = []
        self.ledger = workdir / "dialer.jsonl"
        self.dialer: SimulatedDialer | None = None
        self._dialer_stop = threading.Event()
        self._dialer_thread: threading.Thread | None = None

    def topic(self, base: str) -> str:
        return topic_name(base, self.settings.topic_prefix)

    def create_topics(self) -> None:
        admin.create_topics(self.settings)  # returns once the broker lists them

    def wait_topics(self, *base_topics: str) -> None:
        """Wait until the topics are listed with their partitions' leaders: a loaded broker
        acknowledges a creation before it lists the topic as usable, and a worker started
        in between refuses to run because its input topics "do not exist"."""
        wanted = set(base_topics)
        eventually(
            lambda: wanted <= set(admin.partition_counts(self.settings)),
            timeout=30,
            what=f"topics {sorted(wanted)} listed by the broker",
        )

    def start_worker(
        self, name: str = "w1", *args: str, web_port: int | None = None
    ) -> WorkerProcess:
        worker = WorkerProcess(self, name, *args, web_port=web_port)
        self.workers.append(worker)
        return worker

    def start_dialer(self, talk_seconds=(0.3, 1.0), ring_seconds=(0.05, 0.3)) -> None:
        self.dialer = SimulatedDialer(
            self.settings,
            seed=7,
            talk_seconds=talk_seconds,
            ring_seconds=ring_seconds,
            ledger_path=self.ledger,
        )
        self._dialer_thread = threading.Thread(
            target=self.dialer.run, args=(self._dialer_stop,), daemon=True
        )
        self._dialer_thread.start()

    def produce(self, base_topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
        producer = clients.producer(self.settings)
        for key, value in records:
            producer.produce(self.topic(base_topic), key=key, value=value)
        assert producer.flush(30) == 0

    def produce_to(self, topic: str, partition: int, values: list[bytes]) -> None:
        """Records straight to one partition of a topic (full name), in order."""
        producer = clients.producer(self.settings)
        for value in values:
            producer.produce(topic, value=value, partition=partition)
        assert producer.flush(30) == 0

    def produce_leads(self, leads: list[dict]) -> None:
        self.produce(
            "leads.requests",
            [
                (record_key(lead["business_id"]), json.dumps(lead).encode())
                for lead in leads
            ],
        )

    def read(
        self,
        base_topic: str,
        until: Callable[[list], bool],
        timeout: float = 90,
        decode=json.loads,
    ) -> list:
        """All records of a topic from the start, polled until `until(records)` holds."""
        consumer = clients.consumer(
            self.settings,
            f"reader-{uuid.uuid4().hex}",
            {"enable.auto.commit": False, "auto.offset.reset": "earliest"},
        )
        name = self.topic(base_topic)
        partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
        consumer.assign([TopicPartition(name, p, 0) for p in partitions])
        records: list = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                for message in consumer.consume(500, timeout=0.5):
                    if message.error() is None:
                        records.append(decode(message.value()))
                if until(records):
                    return records
            return records
        finally:
            consumer.close()

    def outcomes(self, leads: list[dict], timeout: float = 120) -> dict[str, dict]:
        """Wait for every lead's outcome; each lead must have one (repeats are verbatim)."""
        wanted = {lead["lead_id"] for lead in leads}
        records = self.read(
            "leads.outcomes",
            timeout=timeout,
            until=lambda recs: wanted <= {r["lead_id"] for r in recs},
        )
        by_lead = collections.defaultdict(list)
        for record in records:
            by_lead[record["lead_id"]].append(record)
        missing = wanted - set(by_lead)
        assert not missing, (
            f"{len(missing)} leads have no outcome, e.g. {sorted(missing)[:5]}"
        )
        twice = {
            lead: {r["outcome"] for r in recs}
            for lead, recs in by_lead.items()
            if len({r["outcome"] for r in recs}) > 1
        }
        assert not twice, f"leads with two different outcomes: {twice}"
        return {lead: recs[0] for lead, recs in by_lead.items()}

    def wait_group(self, members: int, timeout: float = 90) -> None:
        """Wait until the workers' consumer group is stable with `members` members that
        all own input partitions."""
        client = clients.admin(self.settings)
        group = self.settings.topic_prefix + self.settings.app_id
        leads = self.topic("leads.requests")

        def stable() -> bool:
            description = client.describe_consumer_groups([group])[group].result(10)
            owners = [
                m
                for m in description.members
                if any(tp.topic == leads for tp in m.assignment.topic_partitions)
            ]
            assert str(description.state).endswith("STABLE") and len(owners) == members, (
                f"group {group} never had {members} members owning partitions"
                f" (last: {description.state}, {len(owners)} owning)"
            )
            return True

        eventually(stable, timeout=timeout, interval=0.5)

    def ledger_lines(self) -> list[dict]:
        if not self.ledger.exists():
            return []
        return [
            json.loads(line)
            for line in self.ledger.read_text().splitlines()
            if line.strip()
        ]

    def close(self) -> None:
        self._dialer_stop.set()
        if self._dialer_thread is not None:
            self._dialer_thread.join(30)
        for worker in self.workers:
            worker.stop()


class WorkerProcess:
    """`streams worker` as a real process, with its own web port and data dir."""

    def __init__(
        self, deployment: Deployment, name: str, *args: str, web_port: int | None = None
    ):
        self.web_port = web_port or free_port()
        self.log_path = deployment.workdir / f"worker-{name}.log"
        env = {
            **deployment.env,
            "WORKER_WEB_PORT": str(self.web_port),
            "STREAMS_DATA_DIR": str(deployment.workdir / f"data-{name}"),
        }
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker", *args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def businesses(self) -> list[dict] | None:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.web_port}/businesses/", timeout=2
            ) as reply:
                return json.load(reply)["businesses"]
        except OSError:
            return None

    def wait_serving(self, timeout: float = 90) -> None:
        def serving() -> bool:
            if self.process.poll() is not None:
                raise NeverHolds(f"worker exited {self.process.returncode}:\n{self.log()}")
            assert self.businesses() is not None, (
                f"worker did not serve within {timeout}s:\n{self.log()}"
            )
            return True

        eventually(serving, timeout=timeout, interval=0.3)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


class Dialer:
    """The Twilio dialer under test: in this process (a thread) or as `streams dialer`."""

    def __init__(
        self, deployment: Deployment, fake: FakeTwilio, ledger_url: str, **env: str
    ):
        self.deployment = deployment
        self.port = free_port()
        self.env = {
            **deployment.env,
            "TWILIO_ACCOUNT_SID": fake.account_sid,
            "TWILIO_AUTH_TOKEN": fake.auth_token,
            "TWILIO_FROM_NUMBER": FROM_NUMBER,
            "TWILIO_API_BASE_URL": fake.base_url,
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{self.port}",
            "DIALER_WEB_PORT": str(self.port),
            "DATABASE_URL": ledger_url,
            "TWILIO_CPS": "50",
            "RECONCILE_AFTER_SECONDS": "2",
            # The fake's list is consistent unless a test says otherwise.
            "TWILIO_LIST_SETTLE_SECONDS": "1",
            "TWILIO_REQUEST_TIMEOUT_SECONDS": "3",
            **env,
        }
        for name in ("TWILIO_EDGE", "TWILIO_REGION", "STREAMS_DIALER_CRASH_AFTER_CREATE"):
            self.env.pop(name, None)
        self.settings = Settings.from_env(self.env)
        self.dialer: TwilioDialer | None = None
        self.process: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.logs: list[Path] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_thread(self) -> Dialer:
        self.dialer = TwilioDialer(self.settings, seed=5)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.dialer.run, args=(self._stop,), daemon=True
        )
        self._thread.start()
        assert self.dialer.started.wait(30), "dialer did not start"
        return self

    def start_process(self, **extra_env: str) -> Dialer:
        log = self.deployment.workdir / f"dialer-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "ab") as out:
            self.process = process = subprocess.Popen(
                [sys.executable, "-m", "streams", "dialer"],
                env={**self.env, **extra_env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        def serving_or_exited() -> bool:
            # An exit is no failure here: a test may have told it to crash at once.
            assert process.poll() is not None or self.health()[0] == 200, (
                f"dialer did not serve:\n{self.log()}"
            )
            return True

        eventually(serving_or_exited, timeout=30)
        return self

    def health(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=5) as reply:
                return reply.status, json.load(reply)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)
        except OSError:
            return 0, {}

    def log(self, tail: int | None = 3000) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-(tail or 0) :] for p in self.logs if p.exists()
        )

    def kill(self) -> None:
        assert self.process is not None, "the dialer runs as a thread, not a process"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(60)
            assert not self._thread.is_alive(), "dialer did not stop"
            self._thread = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)
