"""The local 3-node cluster (streams/devtools/cluster.py) and its fault controls, against
real KRaft nodes: replication as configured, faults that do what they say, and a
cluster that is whole again afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import ConfigResource, NewTopic

from streams.devtools.broker import BrokerError, admin_client
from streams.devtools.cluster import Cluster
from tests.support.waiting import eventually

# Alone: a fault injected here would break any test sharing the cluster, and under
# pytest-xdist each worker process would start clusters of its own.
pytestmark = [pytest.mark.integration, pytest.mark.alone]


def _new_topic(cluster: Cluster, partitions: int = 3) -> str:
    """A topic at the cluster's defaults (no replication factor given)."""
    topic = f"cluster-test-{uuid.uuid4().hex[:8]}"
    admin = admin_client(cluster.client_config())
    admin.create_topics([NewTopic(topic, partitions)])[topic].result(timeout=30)

    def led() -> bool:
        try:
            return cluster.partition(topic, 0)["leader"] is not None
        except BrokerError:  # "unknown topic": the brokers learn of it one by one
            return False

    eventually(led, what="a leader")
    return topic


def _produce(cluster: Cluster, topic: str, partition: int, values: list[bytes]) -> None:
    """Every value acknowledged by all in-sync replicas, or the test fails."""
    producer = Producer({**cluster.client_config(), "acks": "all", "log_level": 0})
    failures: list[object] = []
    for value in values:
        producer.produce(
            topic,
            value=value,
            partition=partition,
            on_delivery=lambda err, _msg: failures.append(err) if err else None,
        )
    assert producer.flush(60) == 0, "records still unacknowledged after 60s"
    assert failures == []


def _consume(cluster: Cluster, topic: str, partition: int, count: int) -> list[bytes]:
    consumer = Consumer(
        {
            **cluster.client_config(),
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    consumer.assign([TopicPartition(topic, partition, 0)])
    values: list[bytes] = []
    try:

        def read_all() -> bool:
            message = consumer.poll(1)
            if message is not None and message.error() is None:
                value = message.value()
                assert value is not None
                values.append(value)
            return len(values) >= count

        eventually(read_all, timeout=60, interval=0, what=f"{count} records read")
    finally:
        consumer.close()
    return values


def _join_group(cluster: Cluster, group: str) -> Consumer:
    """A consumer that has joined ``group`` (so the group has a coordinator)."""
    consumer = Consumer({**cluster.client_config(), "group.id": group, "log_level": 0})
    assigned: list[bool] = []
    topic = _new_topic(cluster, partitions=1)
    consumer.subscribe([topic], on_assign=lambda *_: assigned.append(True))
    eventually(lambda: consumer.poll(0.5) is None and assigned, what="group joined")
    return consumer


# -- the cluster as configured -------------------------------------------------------


def test_three_nodes_each_with_its_quorum_role(kafka_cluster: Cluster) -> None:
    status = kafka_cluster.status()
    assert status["running"] is True
    assert status["security"] == "plaintext"
    nodes = status["nodes"]
    assert [node["id"] for node in nodes] == [1, 2, 3]
    assert all(node["alive"] and not node["paused"] for node in nodes)
    assert all(isinstance(node["pid"], int) for node in nodes)
    assert [node["port"] for node in nodes] == [n.port for n in kafka_cluster.nodes]
    roles = sorted(node["role"] for node in nodes)
    assert roles == ["follower", "follower", "leader"]
    leader = next(node["id"] for node in nodes if node["role"] == "leader")
    assert status["quorum_leader"] == leader


def test_topics_get_three_replicas_two_in_sync_and_no_unclean_election(
    kafka_cluster: Cluster,
) -> None:
    topic = _new_topic(kafka_cluster)
    partition = kafka_cluster.partition(topic, 0)
    assert sorted(partition["replicas"]) == [1, 2, 3]
    assert sorted(partition["isr"]) == [1, 2, 3]

    admin = admin_client(kafka_cluster.client_config())
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=30)
    assert configs["min.insync.replicas"].value == "2"
    assert configs["unclean.leader.election.enable"].value == "false"
    # Kafka's internal topics too: the offsets of every consumer group.
    _join_group(kafka_cluster, f"group-{uuid.uuid4().hex[:8]}").close()
    offsets = kafka_cluster.partition("__consumer_offsets", 0)
    assert sorted(offsets["replicas"]) == [1, 2, 3]


def test_the_client_properties_file_holds_the_settings_clients_need(
    kafka_cluster: Cluster,
) -> None:
    text = kafka_cluster.client_properties_file.read_text()
    settings = dict(
        line.split("=", 1) for line in text.splitlines() if line and line[0] != "#"
    )
    assert settings == {
        "bootstrap.servers": kafka_cluster.bootstrap,
        "security.protocol": "PLAINTEXT",
    }


# -- faults --------------------------------------------------------------------------


def test_a_killed_leader_loses_no_acknowledged_record(faulty_cluster: Cluster) -> None:
    topic = _new_topic(faulty_cluster)
    _produce(faulty_cluster, topic, 0, [b"before-%d" % i for i in range(50)])
    leader = faulty_cluster.leader_of(topic, 0)

    assert faulty_cluster.node(leader).kill() is True
    assert faulty_cluster.node(leader).pid is None
    new_leader = faulty_cluster.leader_of(topic, 0)  # once Kafka notices the crash
    assert new_leader != leader
    # Two replicas of three are min.insync.replicas: writes go on while one is down.
    _produce(faulty_cluster, topic, 0, [b"during-%d" % i for i in range(50)])

    assert faulty_cluster.node(leader).start() is True
    faulty_cluster.wait_fully_replicated()
    assert leader in faulty_cluster.partition(topic, 0)["isr"]
    expected = [b"before-%d" % i for i in range(50)] + [b"during-%d" % i for i in range(50)]
    assert _consume(faulty_cluster, topic, 0, 100) == expected


def test_a_lost_disk_is_rebuilt_from_the_other_replicas(faulty_cluster: Cluster) -> None:
    topic = _new_topic(faulty_cluster)
    values = [b"record-%d" % i for i in range(200)]
    _produce(faulty_cluster, topic, 0, values)
    victim = faulty_cluster.node(faulty_cluster.partition(topic, 0)["replicas"][-1])
    segment = Path(f"{topic}-0") / "00000000000000000000.log"
    assert (victim.log_dirs / segment).exists()

    assert victim.stop() is True
    victim.lose_disk()
    assert list(victim.log_dirs.iterdir()) == []
    assert victim.start() is True
    faulty_cluster.wait_fully_replicated()

    # The rebuilt replica holds the very batches the others hold.
    other = next(n for n in faulty_cluster.nodes if n.node_id != victim.node_id)
    assert (victim.log_dirs / segment).read_bytes() == (
        other.log_dirs / segment
    ).read_bytes()
    assert _consume(faulty_cluster, topic, 0, 200) == values


def test_a_lost_disk_needs_the_node_down(kafka_cluster: Cluster) -> None:
    with pytest.raises(BrokerError, match="stop or kill it"):
        kafka_cluster.nodes[0].lose_disk()


def test_a_paused_node_stalls_until_resumed(faulty_cluster: Cluster) -> None:
    topic = _new_topic(faulty_cluster)
    paused = faulty_cluster.node(faulty_cluster.leader_of(topic, 0))

    assert paused.pause() is True
    entry = next(n for n in faulty_cluster.status()["nodes"] if n["id"] == paused.node_id)
    assert (entry["paused"], entry["alive"]) == (True, False)
    # It still holds its sessions: the others move leadership only once they time out.
    eventually(
        lambda: faulty_cluster.partition(topic, 0)["leader"] != paused.node_id,
        timeout=60,
        what="leadership moved off the paused node",
    )
    _produce(faulty_cluster, topic, 0, [b"while-paused"])

    assert paused.resume() is True
    entry = next(n for n in faulty_cluster.status()["nodes"] if n["id"] == paused.node_id)
    assert (entry["paused"], entry["alive"]) == (False, True)
    faulty_cluster.wait_fully_replicated()
    assert paused.node_id in faulty_cluster.partition(topic, 0)["isr"]


def test_the_group_coordinator_is_found_and_moves_when_killed(
    faulty_cluster: Cluster,
) -> None:
    group = f"group-{uuid.uuid4().hex[:8]}"
    consumer = _join_group(faulty_cluster, group)
    try:
        coordinator = faulty_cluster.group_coordinator(group)
        # The coordinator Kafka itself names, asked while the cluster is steady.
        admin = admin_client(faulty_cluster.client_config())
        described = admin.describe_consumer_groups([group])[group].result(timeout=30)
        assert described.coordinator.id == coordinator
    finally:
        consumer.close()

    faulty_cluster.node(coordinator).kill()
    moved = faulty_cluster.group_coordinator(group, timeout=60)
    assert moved != coordinator
    assert faulty_cluster.node(moved).pid is not None


def test_the_quorum_elects_a_new_leader_when_its_leader_dies(
    faulty_cluster: Cluster,
) -> None:
    leader = faulty_cluster.quorum_leader()
    assert leader is not None
    faulty_cluster.node(leader).kill()
    assert faulty_cluster.quorum_leader() != leader  # it knows a dead node leads nothing
    new_leader = eventually(
        faulty_cluster.quorum_leader, timeout=60, what="a new quorum leader"
    )
    assert new_leader != leader
    roles = {n["id"]: n["role"] for n in faulty_cluster.status()["nodes"]}
    assert roles[leader] is None
    assert roles[new_leader] == "leader"


# -- the command line on a running cluster ---------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", "broker", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_status_and_start_from_the_command_line(kafka_cluster: Cluster) -> None:
    data_dir = str(kafka_cluster.data_dir)
    status = _cli("status", "--data-dir", data_dir)
    assert status.returncode == 0, status.stderr
    nodes = json.loads(status.stdout)["nodes"]
    assert [(n["id"], n["alive"]) for n in nodes] == [(1, True), (2, True), (3, True)]

    start = _cli("start", "--nodes", "3", "--data-dir", data_dir)
    assert start.returncode == 0, start.stderr
    assert "already running" in start.stdout
    assert f"KAFKA_CLIENT_CONFIG={kafka_cluster.client_properties_file}" in start.stdout


def test_a_cluster_is_restarted_only_as_it_was_made(kafka_cluster: Cluster) -> None:
    data_dir = str(kafka_cluster.data_dir)
    for flags in (["--security", "sasl_ssl"], ["--nodes", "5"]):
        start = _cli("start", "--nodes", "3", *flags, "--data-dir", data_dir)
        assert start.returncode == 2
        assert start.stderr.count("\n") == 1, start.stderr
        assert "holds a cluster of 3 nodes (plaintext" in start.stderr


# -- the SASL_SSL cluster ------------------------------------------------------------


def _refusal(config: dict[str, str]) -> str:
    """What librdkafka reports when ``config`` cannot reach the cluster: the cause
    arrives through its error callback (served by poll); the call itself only fails."""
    errors: list[str] = []
    admin = admin_client({**config, "error_cb": lambda err: errors.append(err.str())})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=2)

    def reported() -> list[str]:
        admin.poll(0.1)
        return errors

    return " | ".join(eventually(reported, what="an error reported"))


def test_the_secured_cluster_serves_clients_of_its_properties_file(
    kafka_cluster_sasl_ssl: Cluster,
) -> None:
    cluster = kafka_cluster_sasl_ssl
    path = cluster.client_properties_file
    assert path.stat().st_mode & 0o777 == 0o600
    settings = dict(
        line.split("=", 1) for line in path.read_text().splitlines() if line[0] != "#"
    )
    assert settings == cluster.client_config()
    assert set(settings) == {
        "bootstrap.servers",
        "security.protocol",
        "sasl.mechanism",
        "sasl.username",
        "sasl.password",
        "ssl.ca.location",
    }
    assert settings["security.protocol"] == "SASL_SSL"

    topic = _new_topic(cluster)
    assert sorted(cluster.partition(topic, 0)["replicas"]) == [1, 2, 3]
    _produce(cluster, topic, 0, [b"secured"])
    assert _consume(cluster, topic, 0, 1) == [b"secured"]
    # The user exists for SCRAM-SHA-256 as well.
    sha256 = {**settings, "sasl.mechanism": "SCRAM-SHA-256"}
    assert topic in admin_client(sha256).list_topics(timeout=30).topics


def test_the_secured_cluster_refuses_what_it_should(
    kafka_cluster_sasl_ssl: Cluster, tmp_path: Path
) -> None:
    from streams.devtools.tls import Authority

    good = kafka_cluster_sasl_ssl.client_config()
    wrong_password = _refusal({**good, "sasl.password": "not-the-password"})
    assert "Authentication failed" in wrong_password

    untrusted = tmp_path / "other-ca.pem"
    untrusted.write_bytes(Authority.create("someone else's CA").certificate_pem)
    assert "certificate verify failed" in _refusal(
        {**good, "ssl.ca.location": str(untrusted)}
    )

    # The certificate names localhost only: reached as 127.0.0.1 it does not match.
    by_address = good["bootstrap.servers"].replace("localhost", "127.0.0.1")
    mismatch = _refusal({**good, "bootstrap.servers": by_address})
    assert "certificate verify failed" in mismatch
    unchecked = {**good, "bootstrap.servers": by_address}
    unchecked["ssl.endpoint.identification.algorithm"] = "none"
    assert admin_client(unchecked).list_topics(timeout=30).brokers

    plaintext = {"bootstrap.servers": good["bootstrap.servers"]}
    with pytest.raises(KafkaException):
        admin_client(plaintext).list_topics(timeout=2)


def test_no_command_shows_the_password(kafka_cluster_sasl_ssl: Cluster) -> None:
    password = kafka_cluster_sasl_ssl.credentials().password
    admin_password = kafka_cluster_sasl_ssl.credentials().admin_password
    data_dir = str(kafka_cluster_sasl_ssl.data_dir)
    runs = [
        _cli("status", "--data-dir", data_dir),
        _cli("start", "--nodes", "3", "--security", "sasl_ssl", "--data-dir", data_dir),
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr
        for secret in (password, admin_password):
            assert secret not in run.stdout + run.stderr
    assert json.loads(runs[0].stdout)["security"] == "sasl_ssl"
    assert password not in repr(kafka_cluster_sasl_ssl.credentials())
    for node in kafka_cluster_sasl_ssl.nodes:
        assert node.properties_file.stat().st_mode & 0o777 == 0o600
