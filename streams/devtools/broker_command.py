"""`streams broker start|stop|status`: the local single node, or a local cluster.

One plaintext node stays the default (what `make demo` and the tests' shared broker
use); ``--nodes`` above one or ``--security sasl_ssl`` make a `Cluster`, whose layout is
recorded in its data dir so that ``stop`` and ``status`` find it without flags.
"""

from __future__ import annotations

import json
from pathlib import Path

from streams.devtools.broker import REPO_ROOT, Broker, BrokerError
from streams.devtools.cluster import Cluster
from streams.devtools.kafka_properties import Security
from streams.kafka.properties import parse_properties

DEFAULT_PORT = 9092
MAX_NODES = 9


def _single(port: int | None, data_dir: Path | None) -> Broker:
    port = port or (data_dir and _recorded_port(data_dir)) or DEFAULT_PORT
    return Broker(port=port, controller_port=port + 1, data_dir=data_dir)


def _recorded_port(data_dir: Path) -> int | None:
    """The client port a single node started in ``data_dir`` listens on, so that
    ``stop`` and ``status`` with only ``--data-dir`` name the right address."""
    try:
        text = (data_dir / "server.properties").read_text()
    except OSError:
        return None
    listeners = parse_properties(text).get("listeners", "").split(",")
    plaintext = [url for url in listeners if url.startswith("PLAINTEXT://")]
    return int(plaintext[0].rsplit(":", 1)[1]) if plaintext else None


def _cluster_dir(port: int | None, data_dir: Path | None) -> Path:
    return data_dir or REPO_ROOT / ".kafka" / f"cluster-{port or DEFAULT_PORT}"


def _recorded_cluster(port: int | None, data_dir: Path | None) -> Cluster | None:
    return Cluster.load(_cluster_dir(port, data_dir))


def run_broker(
    action: str,
    port: int | None = None,
    nodes: int = 1,
    security: Security = "plaintext",
    data_dir: Path | None = None,
) -> int:
    """``port`` is the first node's client port; None means the recorded cluster's, or
    9092. ``data_dir`` defaults to .kafka/data-PORT (one node) or .kafka/cluster-PORT."""
    if not 1 <= nodes <= MAX_NODES:
        raise BrokerError(f"--nodes must be between 1 and {MAX_NODES}, got {nodes}")
    if action == "start":
        if nodes == 1 and security == "plaintext":
            _start_single(_single(port, data_dir))
        else:
            _start_cluster(port, nodes, security, data_dir)
    elif action == "stop":
        _stop(port, data_dir)
    else:
        print(json.dumps(_status(port, data_dir), indent=2))
    return 0


def _start_single(broker: Broker) -> None:
    started = broker.start()
    print(f"broker {'started' if started else 'already running'} on {broker.bootstrap}")


def _start_cluster(
    port: int | None, nodes: int, security: Security, data_dir: Path | None
) -> None:
    cluster = _cluster_to_start(port, nodes, security, data_dir)
    started = cluster.start()
    state = "started" if started else "already running"
    print(f"cluster of {nodes} Kafka nodes ({security}) {state} on {cluster.bootstrap}")
    print(f"client settings: KAFKA_CLIENT_CONFIG={cluster.client_properties_file}")


def _cluster_to_start(
    port: int | None, nodes: int, security: Security, data_dir: Path | None
) -> Cluster:
    """The recorded cluster when no port is asked for and it has the node count and
    security asked for, whatever its ports; else the layout asked for, which start
    refuses, saying why, when it differs from a recorded one."""
    recorded = _recorded_cluster(port, data_dir)
    if port is None and recorded is not None:
        if (len(recorded.nodes), recorded.security) == (nodes, security):
            return recorded
        port = recorded.nodes[0].port
    return Cluster.on_ports(
        port or DEFAULT_PORT, nodes, security, _cluster_dir(port, data_dir)
    )


def _stop(port: int | None, data_dir: Path | None) -> None:
    """The recorded cluster's nodes, and the single node of the same port unless
    ``data_dir`` named the cluster."""
    cluster = _recorded_cluster(port, data_dir)
    if cluster is not None:
        stopped = cluster.stop()
        print(
            f"cluster on {cluster.bootstrap} {'stopped' if stopped else 'was not running'}"
        )
        if data_dir is not None:
            return
    broker = _single(port, data_dir)
    stopped = broker.stop()
    print(f"broker on {broker.bootstrap} {'stopped' if stopped else 'was not running'}")


def _status(port: int | None, data_dir: Path | None) -> dict[str, object]:
    """The recorded cluster's while any of its nodes runs (or when ``data_dir`` names
    it), else the single node's."""
    cluster = _recorded_cluster(port, data_dir)
    if cluster is not None and (
        data_dir is not None or any(node.pid is not None for node in cluster.nodes)
    ):
        return cluster.status()
    return _single(port, data_dir).status()
