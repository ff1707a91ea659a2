"""The properties files of the local Kafka: each node's server.properties and the clients'.

Pure rendering, no I/O, so that what a broker is told can be read and tested apart from
starting it. Client settings use the librdkafka / Java client property names, the ones
``KAFKA_CLIENT_CONFIG`` files carry, so the same mapping configures the devtools' own
admin clients and the file handed to every command.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

#: The security of a local cluster's client listener.
Security = Literal["plaintext", "sasl_ssl"]
SECURITY_CHOICES: tuple[str, ...] = get_args(Security)

#: The mechanism clients are told to use; the user exists for SCRAM-SHA-256 too.
CLIENT_SASL_MECHANISM = "SCRAM-SHA-512"
INTER_BROKER_SASL_MECHANISM = "SCRAM-SHA-512"
SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")

#: The user the brokers authenticate as to each other.
INTER_BROKER_USER = "admin"

_HEADER = "# Written by streams/devtools on every start; edit the code, not this file.\n"

# Internal topics get few partitions: startup and a first group join are quicker.
_INTERNAL_TOPICS = """\
num.partitions=8
auto.create.topics.enable=false
offsets.topic.num.partitions=4
transaction.state.log.num.partitions=4
share.coordinator.state.topic.num.partitions=4
group.initial.rebalance.delay.ms=0
"""


@dataclass(frozen=True)
class NodeAddress:
    """Where one node of a local cluster listens."""

    node_id: int
    host: str
    port: int
    controller_port: int

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def controller(self) -> str:
        return f"{self.host}:{self.controller_port}"


@dataclass(frozen=True, repr=False)
class ScramCredentials:
    """The SCRAM users of a secured cluster: the brokers' own and the clients' one."""

    admin_password: str
    username: str
    password: str

    def __repr__(self) -> str:
        return f"ScramCredentials(username={self.username!r}, passwords hidden)"


@dataclass(frozen=True)
class ListenerSecurity:
    """What a SASL_SSL listener needs: its key store, trust store and users."""

    keystore: Path
    ca: Path
    credentials: ScramCredentials


def replication(nodes: int) -> tuple[int, int]:
    """Replication factor and min.insync.replicas for a cluster of ``nodes``: three
    copies at most, and writes go on with one replica down."""
    factor = min(nodes, 3)
    return factor, max(1, factor - 1)


def single_node_properties(node: NodeAddress, log_dirs: Path) -> str:
    """A standalone KRaft node: every internal topic at replication factor 1, since the
    defaults of 3 would stall. The offsets topic has no min ISR setting of its own; it
    uses min.insync.replicas."""
    return f"""\
{_HEADER}process.roles=broker,controller
node.id={node.node_id}
controller.quorum.bootstrap.servers={node.controller}
listeners=PLAINTEXT://{node.bootstrap},CONTROLLER://{node.controller}
advertised.listeners=PLAINTEXT://{node.bootstrap}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={log_dirs}
{_INTERNAL_TOPICS}min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
"""


def cluster_node_properties(
    node: NodeAddress,
    voters: Sequence[NodeAddress],
    log_dirs: Path,
    metadata_dir: Path,
    security: ListenerSecurity | None,
) -> str:
    """One node of a static KRaft quorum, broker and controller in one JVM.

    The metadata log has a directory of its own, so a node whose partition data is
    deleted (a lost disk) still knows the cluster and re-replicates on restart.
    """
    factor, min_isr = replication(len(voters))
    quorum = ",".join(f"{v.node_id}@{v.controller}" for v in voters)
    listener = "PLAINTEXT" if security is None else "SASL_SSL"
    return f"""\
{_HEADER}process.roles=broker,controller
node.id={node.node_id}
controller.quorum.voters={quorum}
listeners={listener}://{node.bootstrap},CONTROLLER://{node.controller}
advertised.listeners={listener}://{node.bootstrap}
controller.listener.names=CONTROLLER
inter.broker.listener.name={listener}
listener.security.protocol.map=CONTROLLER:PLAINTEXT,{listener}:{listener}
{_listener_security(security)}log.dirs={log_dirs}
metadata.log.dir={metadata_dir}
{_INTERNAL_TOPICS}default.replication.factor={factor}
min.insync.replicas={min_isr}
unclean.leader.election.enable=false
offsets.topic.replication.factor={factor}
transaction.state.log.replication.factor={factor}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={factor}
share.coordinator.state.topic.min.isr={min_isr}
"""


def _listener_security(security: ListenerSecurity | None) -> str:
    if security is None:
        return ""
    admin = security.credentials.admin_password
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required"
    return f"""\
sasl.enabled.mechanisms={",".join(SCRAM_MECHANISMS)}
sasl.mechanism.inter.broker.protocol={INTER_BROKER_SASL_MECHANISM}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram} \
username="{INTER_BROKER_USER}" password="{admin}";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={scram};
ssl.keystore.type=PEM
ssl.keystore.location={security.keystore}
ssl.truststore.type=PEM
ssl.truststore.location={security.ca}
ssl.endpoint.identification.algorithm=https
"""


def scram_user_arguments(credentials: ScramCredentials) -> list[str]:
    """StorageTool format arguments creating the SCRAM users with the cluster's storage
    (a cluster that requires SCRAM cannot accept the request that would add them)."""
    users = [(INTER_BROKER_SASL_MECHANISM, INTER_BROKER_USER, credentials.admin_password)]
    users += [(m, credentials.username, credentials.password) for m in SCRAM_MECHANISMS]
    arguments: list[str] = []
    for mechanism, name, password in users:
        arguments += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
    return arguments


def client_config(bootstrap: str, security: ListenerSecurity | None) -> dict[str, str]:
    """The settings a client needs to reach the cluster, by librdkafka's names."""
    if security is None:
        return {"bootstrap.servers": bootstrap, "security.protocol": "PLAINTEXT"}
    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": CLIENT_SASL_MECHANISM,
        "sasl.username": security.credentials.username,
        "sasl.password": security.credentials.password,
        "ssl.ca.location": str(security.ca),
    }


def client_properties(config: Mapping[str, str]) -> str:
    """``config`` as a client properties file, as Kafka's tools take with
    --command-config and every streams command with KAFKA_CLIENT_CONFIG."""
    lines = [
        "# Settings for clients of the local cluster: KAFKA_CLIENT_CONFIG=<this file>.",
        _HEADER.rstrip("\n"),
    ]
    for key, value in config.items():
        if "\n" in value or "\\" in value:
            raise ValueError(f"{key} cannot be written to a properties file as it is")
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"
