"""One node of a local cluster: a `Broker` JVM told the quorum's settings.

Why apart from the cluster: a node is a process with its own ports and directories and
the faults that only concern it (a lost disk, its view of the quorum), while the cluster
decides what they all share. The node asks for those shared settings through
`QuorumSettings`, which `Cluster` provides, when it formats and starts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Protocol

from streams.devtools.broker import Broker, BrokerError
from streams.devtools.kafka_properties import (
    ListenerSecurity,
    NodeAddress,
    client_config,
    cluster_node_properties,
    scram_user_arguments,
)

#: Where a node keeps the KRaft quorum's view: the leader and its epoch.
QUORUM_STATE = Path("__cluster_metadata-0") / "quorum-state"


class QuorumSettings(Protocol):
    """What every node of one cluster shares."""

    @property
    def addresses(self) -> tuple[NodeAddress, ...]:
        """Every voter of the static quorum."""

    @property
    def cluster_id(self) -> str: ...

    def listener_security(self) -> ListenerSecurity | None:
        """TLS files and SCRAM users when the listener is secured."""


class ClusterNode(Broker):
    """One node of a cluster: its own ports and directory, the cluster's settings."""

    def __init__(
        self,
        quorum: QuorumSettings,
        address: NodeAddress,
        data_dir: Path,
        lib_dir: Path,
        heap: tuple[str, str],
    ) -> None:
        super().__init__(
            port=address.port,
            controller_port=address.controller_port,
            data_dir=data_dir,
            lib_dir=lib_dir,
            heap=heap,
            host=address.host,
        )
        self.node_id = address.node_id
        self._quorum = quorum

    def __repr__(self) -> str:
        return f"ClusterNode({self.node_id}, {self.bootstrap})"

    @property
    def log_dirs(self) -> Path:
        """The node's partition data: what a lost disk loses."""
        return self.data_dir / "data"

    @property
    def metadata_dir(self) -> Path:
        return self.data_dir / "metadata"

    def client_config(self) -> dict[str, str]:
        return client_config(self.bootstrap, self._quorum.listener_security())

    def is_ready(self) -> bool:
        """Whether the node is registered and unfenced: metadata lists it as a broker."""
        metadata = self._metadata()
        return metadata is not None and self.node_id in metadata.brokers

    def quorum_view(self) -> tuple[int, int] | None:
        """(leader epoch, leader id) as this node last recorded them, if it did."""
        try:
            state = json.loads((self.metadata_dir / QUORUM_STATE).read_text())
        except (OSError, ValueError):
            return None
        leader = state.get("leaderId", -1)
        return None if leader < 0 else (state.get("leaderEpoch", -1), leader)

    def lose_disk(self) -> None:
        """Delete the node's partition data, as if its disk were replaced; its metadata
        log stays, so on restart it rejoins and copies its replicas from the others.
        Only while the node is down: a running broker would fail on its open files."""
        if self.pid is not None:
            raise BrokerError(f"node {self.node_id} runs; stop or kill it before its disk")
        shutil.rmtree(self.log_dirs, ignore_errors=True)
        self.log_dirs.mkdir(parents=True)

    def _server_properties(self) -> str:
        return cluster_node_properties(
            self.address,
            self._quorum.addresses,
            self.log_dirs,
            self.metadata_dir,
            self._quorum.listener_security(),
        )

    def _format_arguments(self, java: str) -> list[str]:
        """The cluster's id, and its SCRAM users: a cluster that requires SCRAM could
        not take the request that would add them later."""
        arguments = ["-t", self._quorum.cluster_id]
        security = self._quorum.listener_security()
        if security is not None:
            arguments += scram_user_arguments(security.credentials)
        return arguments
