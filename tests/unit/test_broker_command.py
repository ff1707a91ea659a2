"""`streams broker` without a JVM: flags, layouts recorded on disk, group placement."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streams.devtools.broker import Broker, BrokerError
from streams.devtools.broker_command import run_broker
from streams.devtools.cluster import Cluster, offsets_partition
from streams.devtools.kafka_properties import single_node_properties


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", "broker", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_node_count_out_of_range_is_one_line_and_exit_2() -> None:
    for nodes in ("0", "10"):
        run = _cli("start", "--nodes", nodes, "--port", "1")
        assert run.returncode == 2
        assert (
            run.stderr == f"streams: error: --nodes must be between 1 and 9, got {nodes}\n"
        )


def test_an_unknown_security_is_refused_by_the_parser() -> None:
    run = _cli("start", "--security", "ssl")
    assert run.returncode == 2
    assert "invalid choice: 'ssl'" in run.stderr


def test_a_cluster_takes_consecutive_client_then_controller_ports(tmp_path: Path) -> None:
    cluster = Cluster.on_ports(19092, 3, "sasl_ssl", tmp_path)
    assert cluster.bootstrap == "localhost:19092,localhost:19093,localhost:19094"
    assert [n.controller_port for n in cluster.nodes] == [19095, 19096, 19097]
    assert [n.data_dir for n in cluster.nodes] == [
        tmp_path / f"node-{i}" for i in (1, 2, 3)
    ]


def _record(data_dir: Path, security: str = "plaintext") -> None:
    """A cluster.json as `Cluster.start` writes it, for a cluster that is not running."""
    nodes = [{"id": i, "port": 29000 + i, "controller_port": 29100 + i} for i in (1, 2, 3)]
    record = {"host": "localhost", "security": security, "nodes": nodes, "cluster_id": "x"}
    (data_dir / "cluster.json").write_text(json.dumps(record))


def test_status_of_a_recorded_cluster_that_is_down(tmp_path: Path) -> None:
    _record(tmp_path, "sasl_ssl")
    run = _cli("status", "--data-dir", str(tmp_path))
    assert run.returncode == 0, run.stderr
    status = json.loads(run.stdout)
    assert (status["running"], status["security"], status["quorum_leader"]) == (
        False,
        "sasl_ssl",
        None,
    )
    assert status["client_config"] == str(tmp_path / "client.properties")
    assert [(n["id"], n["port"], n["alive"], n["role"]) for n in status["nodes"]] == [
        (1, 29001, False, None),
        (2, 29002, False, None),
        (3, 29003, False, None),
    ]


def test_stop_of_a_recorded_cluster_that_is_down(tmp_path: Path) -> None:
    _record(tmp_path)
    run = _cli("stop", "--data-dir", str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert run.stdout == (
        "cluster on localhost:29001,localhost:29002,localhost:29003 was not running\n"
    )


def test_a_single_node_found_by_its_data_dir_is_named_by_its_own_port(
    tmp_path: Path,
) -> None:
    node = Broker(port=29092, controller_port=29093, data_dir=tmp_path)
    node.properties_file.write_text(single_node_properties(node.address, node.log_dirs))
    run = _cli("stop", "--data-dir", str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert run.stdout == "broker on localhost:29092 was not running\n"
    status = json.loads(_cli("status", "--data-dir", str(tmp_path)).stdout)
    assert (status["running"], status["bootstrap"]) == (False, "localhost:29092")


def test_a_recorded_cluster_is_not_restarted_as_another(tmp_path: Path) -> None:
    _record(tmp_path)
    with pytest.raises(BrokerError, match=r"holds a cluster of 3 nodes \(plaintext"):
        run_broker("start", nodes=3, security="sasl_ssl", data_dir=tmp_path)
    with pytest.raises(BrokerError, match="holds a cluster of 3 nodes"):
        run_broker("start", port=29001, nodes=2, data_dir=tmp_path)


@pytest.mark.parametrize(
    ("group", "java_hash_code"),
    [
        ("hello", 99162322),
        ("Hello World", -862545276),
        ("", 0),
        ("polygenelubricants", -(2**31)),  # Integer.MIN_VALUE: Kafka's Utils.abs makes it 0
    ],
)
def test_groups_are_placed_as_kafka_places_them(group: str, java_hash_code: int) -> None:
    """Kafka: abs(String.hashCode) modulo the offsets topic's partitions."""
    expected = 0 if java_hash_code == -(2**31) else abs(java_hash_code)
    assert offsets_partition(group, 50) == expected % 50
