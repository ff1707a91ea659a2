"""`streams produce-leads` lands every business where Faust will look for it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import Consumer, TopicPartition

from tests.support.deployment import Deployment

pytestmark = pytest.mark.integration


def test_leads_from_a_file_are_keyed_and_partitioned_like_faust(kafka_broker, tmp_path):
    deployment = Deployment(kafka_broker.bootstrap, tmp_path, TOPIC_PARTITIONS="8")
    deployment.create_topics()
    leads = [
        {"lead_id": f"L{n}", "business_id": f"business-{n}", "phone": "+14155550100"}
        for n in range(200)
    ]
    path = tmp_path / "leads.jsonl"
    path.write_text("\n".join(json.dumps(lead) for lead in leads) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "streams", "produce-leads", "--file", str(path)],
        env=deployment.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "sent 200 leads" in result.stdout

    topic = deployment.topic("leads.requests")
    consumer = Consumer(
        {
            "bootstrap.servers": deployment.settings.kafka_bootstrap_servers,
            "group.id": "check",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(8)])
    seen = {}
    while len(seen) < 200:
        for message in consumer.consume(200, timeout=5):
            seen[message.key()] = message.partition()
    consumer.close()
    murmur2 = DefaultPartitioner()
    for key, partition in seen.items():
        assert partition == murmur2(key, list(range(8)), list(range(8))), key
    assert len(set(seen.values())) == 8
