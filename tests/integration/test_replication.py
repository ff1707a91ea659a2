"""Replication on the real (single) broker: every topic, the changelog included, is
created by us with the cluster's replication, and what cannot be replicated as asked
stops `topics create` and the worker in one line."""

from __future__ import annotations

import subprocess
import sys
import time

from confluent_kafka.admin import ConfigResource, ResourceType

from streams.kafka import clients
from streams.topics import ALL_TOPICS, changelog_topic, topic_name
from tests.support.deployment import Deployment


def run(
    command: list[str], env: dict[str, str]
) -> tuple[subprocess.CompletedProcess, float]:
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "streams", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, time.monotonic() - began


def test_topics_create_makes_and_describes_every_topic_the_changelog_too(
    kafka_broker, tmp_path
):
    deployment = Deployment(kafka_broker.bootstrap, tmp_path)
    result, _ = run(["topics", "create"], deployment.env)
    assert result.returncode == 0, result.stderr
    prefix, app = deployment.settings.topic_prefix, deployment.settings.app_id
    changelog = changelog_topic(prefix, app)
    wanted = sorted([topic_name(base, prefix) for base in ALL_TOPICS] + [changelog])
    assert result.stdout.splitlines() == [
        f"{name}\t4 partitions\treplication 1\tmin.insync.replicas 1\tcreated"
        for name in wanted
    ]
    resource = ConfigResource(ResourceType.TOPIC, changelog)
    client = clients.admin(deployment.settings)
    config = client.describe_configs([resource])[resource].result(timeout=15)
    assert config["cleanup.policy"].value == "compact"
    again, _ = run(["topics", "create"], deployment.env)
    assert again.stdout.count("\texists") == len(wanted), again.stdout


def test_a_replication_factor_the_cluster_cannot_hold_stops_at_once(kafka_broker, tmp_path):
    env = Deployment(kafka_broker.bootstrap, tmp_path, TOPIC_REPLICATION_FACTOR="3").env
    for command in (["topics", "create"], ["worker"]):
        result, took = run(command, env)
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.splitlines() == [
            "streams: error: TOPIC_REPLICATION_FACTOR=3 needs 3 brokers, but Kafka at"
            f" {kafka_broker.bootstrap} has 1 up"
        ]
        assert took < 30


def test_the_worker_refuses_topics_with_fewer_replicas_than_the_setting(
    kafka_broker, tmp_path
):
    deployment = Deployment(kafka_broker.bootstrap, tmp_path)
    deployment.create_topics()  # one replica each, the single broker's default
    result, took = run(["worker"], {**deployment.env, "TOPIC_REPLICATION_FACTOR": "2"})
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(
        "streams: error: topic(s) with fewer replicas than TOPIC_REPLICATION_FACTOR=2: "
    )
    assert f"{deployment.topic('leads.requests')}=1" in line
    assert (
        f"{changelog_topic(deployment.settings.topic_prefix, deployment.settings.app_id)}=1"
        in line
    )
    assert took < 30
