"""The local broker launcher (streams/devtools/broker.py) against a real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams.devtools.broker import Broker
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


def test_produce_and_consume(kafka_broker: Broker) -> None:
    topic = f"test-broker-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1)])[topic].result(timeout=30)
    try:
        producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
        delivery_errors = []
        producer.produce(
            topic,
            key=b"business-42",
            value=b"hello",
            on_delivery=lambda err, _: delivery_errors.append(err),
        )
        assert producer.flush(10) == 0
        assert delivery_errors == [None]

        # A consumer group, not assign(): joining a group exercises the group coordinator
        # and the offsets topic, which the stream processor relies on.
        consumer = Consumer(
            {
                "bootstrap.servers": kafka_broker.bootstrap,
                "group.id": f"{topic}-group",
                "auto.offset.reset": "earliest",
            }
        )
        try:
            consumer.subscribe([topic])
            message = None
            deadline = time.monotonic() + 30
            while message is None and time.monotonic() < deadline:
                message = consumer.poll(1)
        finally:
            consumer.close()
        assert message is not None, "no message consumed within 30s"
        assert message.error() is None
        assert (message.key(), message.value()) == (b"business-42", b"hello")
    finally:
        admin.delete_topics([topic])[topic].result(timeout=30)


def test_start_on_running_broker_returns_false(kafka_broker: Broker) -> None:
    assert kafka_broker.start() is False
    assert kafka_broker.status()["running"] is True


def test_status_of_running_broker(kafka_broker: Broker) -> None:
    status = kafka_broker.status()
    assert status["running"] is True
    assert status["bootstrap"] == kafka_broker.bootstrap
    assert isinstance(status["topics"], int)
    if not os.environ.get("STREAMS_TEST_BOOTSTRAP"):
        assert isinstance(status["pid"], int)
        assert status["data_dir"] == str(kafka_broker.data_dir)


def test_stale_pid_file_is_removed(tmp_path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    broker = Broker(port=free_port(), data_dir=tmp_path)
    broker.pid_file.write_text(f"{gone.pid}\n")

    assert broker.status() == {
        "running": False,
        "pid": None,
        "bootstrap": broker.bootstrap,
        "data_dir": str(tmp_path),
        "topics": None,
    }
    assert not broker.pid_file.exists()
    assert broker.stop() is False


def test_reused_pid_is_never_signalled(tmp_path) -> None:
    """After a reboot the pid in the file may belong to an unrelated process."""
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        broker = Broker(port=free_port(), data_dir=tmp_path)
        broker.pid_file.write_text(f"{stranger.pid}\n")
        assert broker.stop() is False
        assert broker.kill() is False
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
