"""What the local Kafka's nodes and clients are told (devtools/kafka_properties.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.devtools.kafka_properties import (
    ListenerSecurity,
    NodeAddress,
    ScramCredentials,
    client_config,
    client_properties,
    cluster_node_properties,
    replication,
    scram_user_arguments,
    single_node_properties,
)

CREDENTIALS = ScramCredentials("admin-secret", "streams", "user-secret")
SECURITY = ListenerSecurity(Path("/tls/keystore.pem"), Path("/tls/ca.pem"), CREDENTIALS)
NODES = [NodeAddress(i, "localhost", 9000 + i, 9100 + i) for i in (1, 2, 3)]


def _parse(text: str) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in text.splitlines() if line and line[0] != "#"]
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), f"a key set twice: {keys}"
    return dict(pairs)


def _node(security: ListenerSecurity | None, nodes: list[NodeAddress] = NODES) -> dict:
    text = cluster_node_properties(
        nodes[1], nodes, Path("/n2/data"), Path("/n2/metadata"), security
    )
    return _parse(text)


def test_a_cluster_node_is_one_voter_of_a_static_quorum() -> None:
    node = _node(None)
    assert node["process.roles"] == "broker,controller"
    assert node["node.id"] == "2"
    assert node["controller.quorum.voters"] == (
        "1@localhost:9101,2@localhost:9102,3@localhost:9103"
    )
    assert node["listeners"] == "PLAINTEXT://localhost:9002,CONTROLLER://localhost:9102"
    assert node["advertised.listeners"] == "PLAINTEXT://localhost:9002"
    # Partition data apart from the metadata log: losing it is a lost disk, not a lost node.
    assert (node["log.dirs"], node["metadata.log.dir"]) == ("/n2/data", "/n2/metadata")


def test_three_nodes_replicate_everything_three_times_and_write_with_two() -> None:
    node = _node(None)
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "share.coordinator.state.topic.replication.factor",
    ):
        assert node[key] == "3", key
    for key in (
        "min.insync.replicas",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.min.isr",
    ):
        assert node[key] == "2", key
    assert node["unclean.leader.election.enable"] == "false"


@pytest.mark.parametrize(
    ("nodes", "expected"), [(1, (1, 1)), (2, (2, 1)), (3, (3, 2)), (5, (3, 2))]
)
def test_replication_tolerates_one_replica_down(nodes: int, expected: tuple) -> None:
    assert replication(nodes) == expected


def test_a_secured_node_requires_tls_and_scram_from_everyone() -> None:
    node = _node(SECURITY)
    assert node["listeners"] == "SASL_SSL://localhost:9002,CONTROLLER://localhost:9102"
    assert node["inter.broker.listener.name"] == "SASL_SSL"
    assert (
        node["listener.security.protocol.map"] == "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL"
    )
    assert node["sasl.enabled.mechanisms"] == "SCRAM-SHA-512,SCRAM-SHA-256"
    assert node["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert (
        'username="admin" password="admin-secret"'
        in (node["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"])
    )
    assert (node["ssl.keystore.type"], node["ssl.truststore.type"]) == ("PEM", "PEM")
    assert node["ssl.keystore.location"] == "/tls/keystore.pem"
    assert node["ssl.truststore.location"] == "/tls/ca.pem"
    assert "user-secret" not in str(node)  # the clients' password is not the brokers'


def test_a_plaintext_node_has_no_security_settings() -> None:
    assert not [
        key for key in _node(None) if key.startswith(("sasl", "ssl", "listener.name"))
    ]


def test_the_single_node_keeps_every_internal_topic_at_one_replica() -> None:
    node = _parse(single_node_properties(NODES[0], Path("/data")))
    assert node["controller.quorum.bootstrap.servers"] == "localhost:9101"
    assert "controller.quorum.voters" not in node
    assert node["offsets.topic.replication.factor"] == "1"
    assert node["min.insync.replicas"] == "1"


def test_scram_users_are_made_for_the_brokers_and_for_clients_with_both_mechanisms() -> (
    None
):
    arguments = scram_user_arguments(CREDENTIALS)
    assert arguments[0::2] == ["--add-scram"] * 3
    assert arguments[1::2] == [
        "SCRAM-SHA-512=[name=admin,password=admin-secret]",
        "SCRAM-SHA-512=[name=streams,password=user-secret]",
        "SCRAM-SHA-256=[name=streams,password=user-secret]",
    ]


def test_clients_get_the_agreed_librdkafka_names() -> None:
    assert client_config("a:1,b:2", None) == {
        "bootstrap.servers": "a:1,b:2",
        "security.protocol": "PLAINTEXT",
    }
    assert client_config("a:1", SECURITY) == {
        "bootstrap.servers": "a:1",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "streams",
        "sasl.password": "user-secret",
        "ssl.ca.location": "/tls/ca.pem",
    }


def test_the_client_properties_file_reads_back_as_the_settings() -> None:
    config = client_config("a:1", SECURITY)
    assert _parse(client_properties(config)) == config
    with pytest.raises(ValueError, match="sasl.password"):
        client_properties({"sasl.password": "two\nlines"})


def test_credentials_never_show_their_passwords() -> None:
    for shown in (repr(CREDENTIALS), str(CREDENTIALS), repr(SECURITY)):
        assert "secret" not in shown
