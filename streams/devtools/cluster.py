"""A local Kafka cluster of several KRaft nodes, optionally requiring TLS and SCRAM, with
the fault controls that tests and chaos runs need.

Why: replication and broker failures can only be proven on several real brokers, and a
secured listener only against one that really requires TLS and SCRAM. Each node is a
`ClusterNode` JVM from the same Maven jars, broker and controller in one, in a static
quorum.
The data directory holds:

- ``cluster.json``: the nodes, their ports and the security (no secret), so that
  ``stop`` and ``status`` need no flags;
- ``credentials.json`` and ``client.properties``: the SCRAM passwords and the clients'
  settings, readable by their owner only;
- ``tls/``: the throwaway CA and the brokers' key store;
- ``node-N/``: one node's properties, log, partition data (``data``) and metadata log
  (``metadata``), kept apart so that losing the partition data is a lost disk.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

from streams.devtools.broker import (
    KAFKA_DEPLOY_DIR,
    READY_PROBE_TOPIC,
    REPO_ROOT,
    BrokerError,
    admin_client,
    say,
)
from streams.devtools.cluster_node import ClusterNode
from streams.devtools.kafka_properties import (
    SECURITY_CHOICES,
    ListenerSecurity,
    NodeAddress,
    ScramCredentials,
    Security,
    client_config,
    client_properties,
    replication,
)
from streams.devtools.private_files import write_private
from streams.devtools.tls import TlsFiles

#: Per node: three nodes and a worker fit on a developer's machine.
NODE_HEAP = ("512m", "512m")

#: How long nodes still stopping get once the quorum is gone; a clean shutdown of the
#: last nodes takes a few seconds when it can finish at all.
QUORUMLESS_GRACE = 10.0

#: The SCRAM user that clients of a secured local cluster log in as.
CLIENT_USER = "streams"

#: Kafka's topic of consumer group offsets, whose partition leaders coordinate groups.
OFFSETS_TOPIC = "__consumer_offsets"


def offsets_partition(group: str, partitions: int) -> int:
    """The offsets topic partition of ``group``: Kafka takes the absolute value of Java's
    String.hashCode (Utils.abs, so the minimum int maps to 0) modulo the partitions."""
    code = 0
    utf16 = group.encode("utf-16-be")
    for i in range(0, len(utf16), 2):
        code = (31 * code + int.from_bytes(utf16[i : i + 2], "big")) & 0xFFFFFFFF
    signed = code - (1 << 32) if code >= 1 << 31 else code
    return (0 if signed == -(1 << 31) else abs(signed)) % partitions


def _new_cluster_id() -> str:
    """A cluster id as Kafka makes one (org.apache.kafka.common.Uuid): 16 random bytes,
    URL-safe base64 without padding, never starting with '-' (tools would read that as a
    flag)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``port``; SO_REUSEADDR as Kafka sets it, so the
    connections of a node stopped a moment ago do not count."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class Cluster:
    """Several local KRaft nodes serving one cluster, at replication factor 3 (fewer
    nodes: as many as there are) with min.insync.replicas one below it."""

    def __init__(
        self,
        data_dir: Path,
        ports: Sequence[int],
        controller_ports: Sequence[int],
        security: Security = "plaintext",
        host: str = "localhost",
        lib_dir: Path = KAFKA_DEPLOY_DIR / "lib",
        heap: tuple[str, str] = NODE_HEAP,
    ) -> None:
        if not ports or len(ports) != len(controller_ports):
            raise BrokerError("a cluster needs one client and one controller port per node")
        if security not in SECURITY_CHOICES:
            raise BrokerError(f"security must be one of {', '.join(SECURITY_CHOICES)}")
        self.data_dir = Path(data_dir).resolve()
        self.security: Security = security
        self.host = host
        self.lib_dir = Path(lib_dir).resolve()
        self.heap = heap
        self.addresses = tuple(
            NodeAddress(node_id, host, port, controller_port)
            for node_id, (port, controller_port) in enumerate(
                zip(ports, controller_ports, strict=True), start=1
            )
        )
        self.nodes = tuple(
            ClusterNode(
                self,
                address,
                self.data_dir / f"node-{address.node_id}",
                lib_dir=self.lib_dir,
                heap=self.heap,
            )
            for address in self.addresses
        )
        self.tls = TlsFiles(self.data_dir / "tls")
        self._cluster_id: str | None = None

    @classmethod
    def on_ports(
        cls,
        port: int,
        nodes: int,
        security: Security = "plaintext",
        data_dir: Path | None = None,
    ) -> Cluster:
        """``nodes`` nodes with client ports from ``port`` up and controller ports right
        after them; the data dir defaults to .kafka/cluster-PORT in the repository."""
        return cls(
            data_dir or REPO_ROOT / ".kafka" / f"cluster-{port}",
            ports=[port + i for i in range(nodes)],
            controller_ports=[port + nodes + i for i in range(nodes)],
            security=security,
        )

    @classmethod
    def load(cls, data_dir: Path) -> Cluster | None:
        """The cluster recorded in ``data_dir`` by an earlier start, or None."""
        try:
            record = json.loads((Path(data_dir) / "cluster.json").read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise BrokerError(f"{data_dir}/cluster.json is not valid JSON: {exc}") from None
        nodes = record["nodes"]
        return cls(
            data_dir,
            ports=[node["port"] for node in nodes],
            controller_ports=[node["controller_port"] for node in nodes],
            security=record["security"],
            host=record["host"],
        )

    def __repr__(self) -> str:
        return f"Cluster({self.bootstrap}, {self.security}, data_dir={self.data_dir})"

    # -- what clients need -------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def replication_factor(self) -> int:
        return replication(len(self.nodes))[0]

    @property
    def client_properties_file(self) -> Path:
        """The clients' settings: hand it to every command as KAFKA_CLIENT_CONFIG."""
        return self.data_dir / "client.properties"

    @property
    def record_file(self) -> Path:
        return self.data_dir / "cluster.json"

    @property
    def credentials_file(self) -> Path:
        return self.data_dir / "credentials.json"

    @property
    def cluster_id(self) -> str:
        if self._cluster_id is None:
            self._cluster_id = str(json.loads(self.record_file.read_text())["cluster_id"])
        return self._cluster_id

    def client_config(self) -> dict[str, str]:
        """How a client reaches the cluster, by librdkafka's property names; the
        password, if any, is in it: never print it."""
        return client_config(self.bootstrap, self.listener_security())

    def credentials(self) -> ScramCredentials:
        try:
            stored = json.loads(self.credentials_file.read_text())
        except FileNotFoundError:
            raise BrokerError(
                f"{self.credentials_file} is missing; the SCRAM users of this cluster"
                " are unknown: stop it and delete its data dir to make a new one"
            ) from None
        return ScramCredentials(**stored)

    def listener_security(self) -> ListenerSecurity | None:
        if self.security == "plaintext":
            return None
        return ListenerSecurity(self.tls.keystore, self.tls.ca, self.credentials())

    def node(self, node_id: int) -> ClusterNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise BrokerError(f"no node {node_id} in {self}")

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 120) -> bool:
        """Start every node that is down and wait until the cluster takes writes at its
        replication factor; True if any node was started here.

        Nodes started here are stopped again when the cluster does not come up.
        """
        self._record()
        down = [node for node in self.nodes if node.pid is None]
        if not down:
            say(f"Kafka cluster already running at {self.bootstrap}")
            return False
        for node in down:
            for port in (node.port, node.controller_port):
                if not _port_is_free(node.host, port):
                    raise BrokerError(
                        f"port {port} of node {node.node_id} is taken by another process;"
                        " stop it, or choose other ports"
                    )
        self._prepare_security(all_down=len(down) == len(self.nodes))
        write_private(self.client_properties_file, client_properties(self.client_config()))
        say(f"starting {len(down)} of {len(self.nodes)} Kafka nodes in {self.data_dir}")
        launched: list[ClusterNode] = []
        deadline = time.monotonic() + timeout
        try:
            for node in down:
                node.launch()
                launched.append(node)
            for node in self.nodes:
                node.wait_ready(max(0.0, deadline - time.monotonic()))
            self._wait_writable(deadline)
        except BaseException:
            self._stop_nodes(launched, timeout=10)
            raise
        return True

    def stop(self, timeout: float = 30) -> bool:
        """Stop every node; False if none ran."""
        running = [node for node in self.nodes if node.pid is not None]
        if not running:
            say(f"no Kafka node running from {self.data_dir}")
            return False
        self._stop_nodes(running, timeout)
        return True

    def _stop_nodes(self, nodes: Sequence[ClusterNode], timeout: float) -> None:
        """SIGTERM to all at once, so that they hand over and leave while the quorum
        stands. Nodes left once a majority of the quorum is gone cannot finish a clean
        shutdown (it waits minutes for a controller), so they are killed after a grace;
        any node is killed after ``timeout``."""
        for node in nodes:
            if node.signal_stop():
                say(f"stopping Kafka node {node.node_id} (pid {node.pid})...")
        majority = len(self.nodes) // 2 + 1
        deadline = time.monotonic() + timeout
        quorum_lost_at: float | None = None
        while remaining := [node for node in nodes if node.pid is not None]:
            now = time.monotonic()
            if (
                quorum_lost_at is None
                and sum(n.pid is not None for n in self.nodes) < majority
            ):
                quorum_lost_at = now
            without_quorum = (
                quorum_lost_at is not None and now - quorum_lost_at > QUORUMLESS_GRACE
            )
            if now > deadline or without_quorum:
                for node in remaining:
                    node.kill()
                why = (
                    "without a controller quorum"
                    if without_quorum
                    else f"within {timeout:g}s"
                )
                ids = ", ".join(str(node.node_id) for node in remaining)
                say(f"Kafka node(s) {ids} did not stop {why}; killed")
                return
            time.sleep(0.2)

    def _record(self) -> None:
        """Write the layout on first start; later starts must ask for the same one."""
        wanted = {
            "host": self.host,
            "security": self.security,
            "nodes": [
                {"id": a.node_id, "port": a.port, "controller_port": a.controller_port}
                for a in self.addresses
            ],
        }
        try:
            recorded = json.loads(self.record_file.read_text())
        except FileNotFoundError:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.record_file.write_text(
                json.dumps({**wanted, "cluster_id": _new_cluster_id()}, indent=2) + "\n"
            )
            return
        recorded_layout = {key: recorded.get(key) for key in wanted}
        if recorded_layout != wanted:
            nodes = recorded.get("nodes") or []
            ports = ",".join(str(node.get("port")) for node in nodes)
            raise BrokerError(
                f"{self.data_dir} holds a cluster of {len(nodes)} nodes"
                f" ({recorded.get('security')}, client ports {ports}); start it as it is,"
                " or stop it and delete that directory to make another"
            )

    def _prepare_security(self, all_down: bool) -> None:
        """SCRAM passwords made once (the users live in the formatted storage); the
        certificates made anew only while no node uses them."""
        if self.security == "plaintext":
            return
        if not self.credentials_file.exists():
            credentials = {
                "admin_password": secrets.token_urlsafe(24),
                "username": CLIENT_USER,
                "password": secrets.token_urlsafe(24),
            }
            write_private(self.credentials_file, json.dumps(credentials) + "\n")
        if all_down and self.tls.needs_renewal():
            self.tls.write()

    def _wait_writable(self, deadline: float) -> None:
        """A topic at the cluster's replication factor is created and deleted: every
        node is a usable replica and the quorum takes writes."""
        say(f"waiting for the cluster to take writes at {self.bootstrap}", end="")
        began = time.monotonic()
        factor = self.replication_factor
        while True:
            admin = self._admin()
            try:
                if READY_PROBE_TOPIC not in admin.list_topics(timeout=5).topics:
                    created = admin.create_topics(
                        [NewTopic(READY_PROBE_TOPIC, 1, replication_factor=factor)]
                    )
                    created[READY_PROBE_TOPIC].result(timeout=10)
                deleted = admin.delete_topics([READY_PROBE_TOPIC])
                deleted[READY_PROBE_TOPIC].result(timeout=10)
                break
            except (KafkaException, TimeoutError):
                if time.monotonic() > deadline:
                    say("")
                    raise BrokerError(
                        f"the Kafka cluster at {self.bootstrap} took no writes at"
                        f" replication factor {factor} in time; see the nodes' broker.log"
                        f" under {self.data_dir}"
                    ) from None
                say(".", end="")
                time.sleep(1)
        say(f" ready after {time.monotonic() - began:.1f}s")

    # -- what runs ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Each node (id, pid, ports, alive, paused, its quorum role) and the cluster's
        bootstrap, security, client settings file and topic count. Never a secret."""
        leader = self.quorum_leader()
        nodes = []
        for node in self.nodes:
            pid = node.pid
            paused = node.is_paused()
            nodes.append(
                {
                    "id": node.node_id,
                    "pid": pid,
                    "port": node.port,
                    "controller_port": node.controller_port,
                    "alive": pid is not None and not paused,
                    "paused": paused,
                    "role": None
                    if pid is None
                    else ("leader" if node.node_id == leader else "follower"),
                }
            )
        metadata = self._metadata()
        return {
            "running": metadata is not None,
            "bootstrap": self.bootstrap,
            "security": self.security,
            "client_config": str(self.client_properties_file),
            "data_dir": str(self.data_dir),
            "quorum_leader": leader,
            "topics": None
            if metadata is None
            else sum(not t.startswith("__") for t in metadata.topics),
            "nodes": nodes,
        }

    def quorum_leader(self) -> int | None:
        """The KRaft quorum's leader (the active controller) in the newest view recorded
        by a running node, read from their files so it costs no request; None while
        there is none, or while that view still names a node whose process is gone."""
        views = [node.quorum_view() for node in self.nodes if node.pid is not None]
        known = [view for view in views if view is not None]
        if not known:
            return None
        leader = max(known)[1]
        return leader if self.node(leader).pid is not None else None

    # -- where things are, for tests and fault injection -------------------------------

    def partition(self, topic: str, partition: int, timeout: float = 10) -> dict[str, Any]:
        """A partition's leader (None while it has none), replicas and in-sync replicas."""
        metadata = self._admin().list_topics(topic, timeout=timeout)
        described = metadata.topics[topic]
        if described.error is not None:
            raise BrokerError(f"topic {topic}: {described.error.str()}")
        found = described.partitions[partition]
        return {
            "leader": None if found.leader < 0 else found.leader,
            "replicas": list(found.replicas),
            "isr": list(found.isrs),
        }

    def leader_of(self, topic: str, partition: int, timeout: float = 30) -> int:
        """The node leading ``partition`` of ``topic``."""
        return self._running_leader(topic, lambda _partitions: partition, timeout)

    def group_coordinator(self, group: str, timeout: float = 30) -> int:
        """The node coordinating consumer group ``group``: the leader of the offsets
        topic's partition for the group, as Kafka's group coordinator places it.

        Read from metadata rather than asked with a describe-group request: librdkafka
        aborts the whole process in that request when the coordinator dies (its issue
        4605), which is exactly when fault injection asks.
        """
        return self._running_leader(
            OFFSETS_TOPIC, lambda partitions: offsets_partition(group, partitions), timeout
        )

    def _running_leader(
        self, topic: str, partition_of: Callable[[int], int], timeout: float
    ) -> int:
        """The leader of a partition of ``topic`` (``partition_of`` its partition count),
        waiting while there is none or metadata still names a node whose process is
        gone: Kafka notices a crashed node only when its session times out."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(KafkaException):
                partitions = self._admin().list_topics(topic, timeout=10).topics[topic]
                if partitions.partitions:
                    number = partition_of(len(partitions.partitions))
                    leader = partitions.partitions[number].leader
                    if leader >= 0 and self.node(leader).pid is not None:
                        return int(leader)
            if time.monotonic() > deadline:
                raise BrokerError(f"no running leader for {topic} within {timeout:g}s")
            time.sleep(0.2)

    def under_replicated(self, timeout: float = 10) -> list[tuple[str, int]]:
        """Partitions, Kafka's internal ones included, with a replica out of sync in
        the metadata of any running node: each node answers from its own cache, and a
        node just resumed or restarted can still report the in-sync set it last knew."""
        lagging: set[tuple[str, int]] = set()
        for node in self.nodes:
            if node.pid is None or node.is_paused():
                continue
            metadata = admin_client(node.client_config()).list_topics(timeout=timeout)
            lagging.update(
                (name, number)
                for name, topic in metadata.topics.items()
                for number, partition in topic.partitions.items()
                if len(partition.isrs) < len(partition.replicas)
            )
        return sorted(lagging)

    def wait_fully_replicated(self, timeout: float = 90, settle: int = 3) -> None:
        """Wait until every replica of every partition is in sync, on ``settle``
        checks in a row, e.g. between the steps of a rolling restart or after a lost
        disk."""
        deadline = time.monotonic() + timeout
        lagging: list[tuple[str, int]] | str = []
        clean = 0
        while time.monotonic() < deadline:
            try:
                lagging = self.under_replicated()
            except KafkaException as exc:
                lagging = str(exc)
            clean = clean + 1 if lagging == [] else 0
            if clean >= settle:
                return
            time.sleep(0.5)
        raise BrokerError(f"replicas still out of sync after {timeout:g}s: {lagging}")

    def _admin(self) -> AdminClient:
        """A client of the nodes that run; one that is down would only add retries."""
        config = self.client_config()
        up = [node.bootstrap for node in self.nodes if node.pid is not None]
        return admin_client({**config, "bootstrap.servers": ",".join(up) or self.bootstrap})

    def _metadata(self) -> ClusterMetadata | None:
        for node in self.nodes:
            if node.pid is None or node.is_paused():
                continue
            with contextlib.suppress(KafkaException):
                return admin_client(node.client_config()).list_topics(timeout=3)
        return None
