"""Fixtures of local 3-node Kafka clusters, plaintext and SASL_SSL (a pytest plugin).

Each starts on first use, on free ports and in a fresh directory, and stops when the
session ends: most runs never pay for three more JVMs. Tests that inject faults take
`faulty_cluster`, which puts every node back (resumed, started, in sync) afterwards, so
the next test finds the cluster whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.devtools.cluster import Cluster
from streams.devtools.kafka_properties import Security
from tests.support.deployment import free_port


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (the kernel may hand the same one out twice)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _cluster(
    tmp_path_factory: pytest.TempPathFactory, security: Security
) -> Iterator[Cluster]:
    ports = free_ports(6)
    cluster = Cluster(
        Path(tmp_path_factory.mktemp(f"kafka-cluster-{security}")),
        ports=ports[:3],
        controller_ports=ports[3:],
        security=security,
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three plaintext KRaft nodes: replication factor 3, min.insync.replicas 2."""
    yield from _cluster(tmp_path_factory, "plaintext")


@pytest.fixture(scope="session")
def kafka_cluster_sasl_ssl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three KRaft nodes whose listener requires TLS and SCRAM; clients take
    ``cluster.client_properties_file`` (or ``cluster.client_config()``)."""
    yield from _cluster(tmp_path_factory, "sasl_ssl")


def restore(cluster: Cluster) -> None:
    """Every node running, none paused, every replica in sync."""
    for node in cluster.nodes:
        node.resume()
    cluster.start()
    cluster.wait_fully_replicated()


@pytest.fixture
def faulty_cluster(kafka_cluster: Cluster) -> Iterator[Cluster]:
    """The plaintext cluster, for a test that kills, pauses or stops its nodes."""
    restore(kafka_cluster)
    try:
        yield kafka_cluster
    finally:
        restore(kafka_cluster)
