"""Broker faults on a local 3-node cluster, for `bench/chaos.py --cluster`.

Each fault is injected through the cluster's own controls (streams/devtools/cluster.py)
and lasts until the cluster is whole again: every node running and every replica back
in sync. Its window, in wall-clock time, lets the verifier read from the dialer's
ledger how dialing fared while it lasted.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import random
import time

from confluent_kafka import KafkaException

from streams.devtools.broker import BrokerError, admin_client
from streams.devtools.cluster import Cluster
from streams.devtools.cluster_node import ClusterNode
from streams.settings import Settings
from streams.topics import changelog_topic, topic_name

#: Every broker fault, in the order a full run injects them.
FAULTS = (
    "kill_changelog_leader",
    "kill_coordinator",
    "pause_broker",
    "rolling_restart",
    "lose_disk",
)

#: How long a stalled broker stays stopped (SIGSTOP) before SIGCONT.
PAUSE_SECONDS = 30.0

#: How long a killed broker stays down: past Kafka's broker session timeout (9 s), so the
#: controller has fenced it and moved its leaderships before it returns.
DOWN_SECONDS = (10.0, 14.0)


@dataclasses.dataclass(frozen=True)
class FaultWindow:
    """One fault, from its injection until the cluster was whole again (time.time()),
    or until only partitions lost for good were left out of sync."""

    fault: str
    detail: str
    started: float
    ended: float
    lost_partitions: tuple[str, ...] = ()


class ClusterFaults:
    """Injects broker faults into ``cluster`` while a deployment runs on it."""

    def __init__(self, cluster: Cluster, settings: Settings, rng: random.Random) -> None:
        self.cluster = cluster
        self.settings = settings
        self.rng = rng

    def inject(self, fault: str) -> FaultWindow:
        if fault not in FAULTS:
            raise ValueError(f"unknown broker fault {fault!r}; one of {', '.join(FAULTS)}")
        started = time.time()
        detail = getattr(self, fault)()
        self.cluster.start()  # no-op unless a node is still down
        lost = self.wait_in_sync()
        return FaultWindow(fault, detail, started, time.time(), lost)

    def wait_in_sync(self, timeout: float = 180) -> tuple[str, ...]:
        """Wait until every partition has all its replicas in sync, except those lost
        for good: no leader and none in sync while all their nodes run, as a lost disk
        leaves a partition whose only replica it held (unclean election is off). Those
        are returned, as topic/partition."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(KafkaException):
                lagging, lost = self._replication_state()
                if not lagging:
                    return lost
            if time.monotonic() > deadline:
                raise BrokerError(f"replicas still out of sync after {timeout:g}s")
            time.sleep(0.5)

    def _replication_state(self) -> tuple[list[str], tuple[str, ...]]:
        """(partitions still catching up, partitions lost for good)."""
        running = {node.node_id for node in self.cluster.nodes if node.pid is not None}
        metadata = admin_client(self.cluster.client_config()).list_topics(timeout=10)
        lagging: list[str] = []
        lost: list[str] = []
        for name, topic in metadata.topics.items():
            for number, partition in topic.partitions.items():
                if len(partition.isrs) == len(partition.replicas):
                    continue
                gone = (
                    partition.leader < 0
                    and not partition.isrs
                    and set(partition.replicas) <= running
                )
                (lost if gone else lagging).append(f"{name}/{number}")
        return lagging, tuple(sorted(lost))

    # -- the faults --------------------------------------------------------------------

    def kill_changelog_leader(self) -> str:
        """SIGKILL the node leading most of the limiter table's changelog partitions."""
        changelog = changelog_topic(self.settings.topic_prefix, self.settings.app_id)
        node = self._leading_most(changelog)
        node.kill()
        self._stay_down()
        self.cluster.start()
        return f"SIGKILL node {node.node_id}, leader of most {changelog} partitions"

    def kill_coordinator(self) -> str:
        """SIGKILL the coordinator of the workers' consumer group."""
        group = self.settings.topic_prefix + self.settings.app_id
        node = self.cluster.node(self.cluster.group_coordinator(group))
        node.kill()
        self._stay_down()
        self.cluster.start()
        return f"SIGKILL node {node.node_id}, coordinator of group {group}"

    def pause_broker(self) -> str:
        """SIGSTOP the node leading most input partitions, then SIGCONT: a stalled
        leader that keeps its connections open until timeouts fire."""
        node = self._leading_most(topic_name("leads.requests", self.settings.topic_prefix))
        node.pause()
        time.sleep(PAUSE_SECONDS)
        node.resume()
        return f"SIGSTOP node {node.node_id} for {PAUSE_SECONDS:g}s, then SIGCONT"

    def rolling_restart(self) -> str:
        """Each node in turn stopped cleanly (SIGTERM) and started, the next one only
        once every replica is back in sync, as an operator upgrades a cluster."""
        for node in self.cluster.nodes:
            node.stop()
            self.cluster.start()
            self.wait_in_sync()
        return f"rolling restart of nodes {[n.node_id for n in self.cluster.nodes]}"

    def lose_disk(self) -> str:
        """SIGKILL the node leading most changelog partitions, delete its partition data
        while it is down, and start it empty: it must copy its replicas back."""
        changelog = changelog_topic(self.settings.topic_prefix, self.settings.app_id)
        node = self._leading_most(changelog)
        node.kill()
        node.lose_disk()
        self._stay_down()
        self.cluster.start()
        return f"node {node.node_id} killed, its partition data deleted, restarted"

    # -- helpers -----------------------------------------------------------------------

    def _leading_most(self, topic: str) -> ClusterNode:
        """The running node that leads most partitions of ``topic`` (one of the
        project's, so it has `TOPIC_PARTITIONS` partitions)."""
        leaders = collections.Counter(
            self.cluster.leader_of(topic, partition)
            for partition in range(self.settings.topic_partitions)
        )
        most = max(leaders.values())
        return self.cluster.node(
            self.rng.choice(sorted(n for n, count in leaders.items() if count == most))
        )

    def _stay_down(self) -> None:
        time.sleep(self.rng.uniform(*DOWN_SECONDS))
