"""Creating the topics, and refusing to run on topics that would split a business or
lose the limiter's state with one broker.

A business is limited correctly only if all of its records meet in one partition of
one worker; that holds only when every input topic, and the table's changelog, has the
same partition count. Faust itself notices a mismatch late (at the first table write,
losing that event), so the worker checks here before it starts. The changelog is the
limiter's whole state: it is created here, co-partitioned and compacted, with as many
replicas as every other topic (`TOPIC_REPLICATION_FACTOR`, else the cluster's
`default.replication.factor`), rather than by Faust with its default of one.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import ConfigResource, NewTopic, ResourceType

from streams.errors import StreamsError
from streams.kafka import clients
from streams.settings import Settings
from streams.topics import (
    ALL_TOPICS,
    BUSINESS_CONTROL,
    INPUT_TOPICS,
    LIMITER_TICKS,
    changelog_topic,
    leader_topic,
    topic_name,
)

log = logging.getLogger(__name__)

#: Ticks are worthless once processed; keep them an hour. Control records are the
#: current configuration of each business: keep the latest per business forever, as
#: the table's changelog keeps the latest value of each key.
TOPIC_CONFIGS = {
    LIMITER_TICKS: {"retention.ms": str(3_600_000)},
    BUSINESS_CONTROL: {"cleanup.policy": "compact"},
}
CHANGELOG_CONFIG = {"cleanup.policy": "compact"}
#: How long a creation may take to show in the metadata with all its partitions.
LISTED_SECONDS = 30.0


class TopicsError(StreamsError):
    """The topics cannot be used as they are; the message is one line saying why."""


@dataclasses.dataclass(frozen=True)
class TopicState:
    """A topic as the broker lists it: partitions, and the fewest replicas any has."""

    partitions: int
    replicas: int


@dataclasses.dataclass(frozen=True)
class TopicReport:
    """One line of `streams topics create`."""

    name: str
    partitions: int
    replicas: int
    min_insync_replicas: str
    created: bool


def project_topics(settings: Settings) -> dict[str, str]:
    """Full name -> what it is called in messages: the contract's topics by base name,
    the table's changelog by its full name."""
    names = {topic_name(base, settings.topic_prefix): base for base in ALL_TOPICS}
    changelog = changelog_topic(settings.topic_prefix, settings.app_id)
    return {**names, changelog: changelog}


def topic_states(settings: Settings, timeout: float = 15.0) -> dict[str, TopicState]:
    """Every topic of this deployment that exists, by full name (Faust's leader topic
    too, once it does)."""
    try:
        metadata = clients.admin(settings).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise TopicsError(
            f"cannot reach Kafka at {settings.kafka_bootstrap_servers}:"
            f" {clients.kafka_reason(exc)}"
        ) from None
    wanted = {
        *project_topics(settings),
        leader_topic(settings.topic_prefix, settings.app_id),
    }
    states = {}
    for name in wanted:
        topic = metadata.topics.get(name)
        if topic is not None and topic.error is None and topic.partitions:
            replicas = min(len(p.replicas) for p in topic.partitions.values())
            states[name] = TopicState(len(topic.partitions), replicas)
    return states


def partition_counts(settings: Settings, timeout: float = 15.0) -> dict[str, int]:
    """Partition count of each contract topic that exists, by base name; the limiter
    table's changelog appears under its full name when it exists."""
    names = project_topics(settings)
    return {
        names[name]: state.partitions
        for name, state in topic_states(settings, timeout).items()
        if name in names
    }


def replication_factor(settings: Settings) -> int:
    """`TOPIC_REPLICATION_FACTOR`, else the cluster's own `default.replication.factor`
    (read from a broker: Faust needs a number, not Kafka's -1)."""
    if settings.topic_replication_factor is not None:
        return settings.topic_replication_factor
    client = clients.admin(settings)
    try:
        broker = next(iter(client.list_topics(timeout=15).brokers))
        resource = ConfigResource(ResourceType.BROKER, str(broker))
        configs = client.describe_configs([resource])[resource].result(timeout=15)
        return int(configs["default.replication.factor"].value)
    except (KafkaException, StopIteration, KeyError, ValueError) as exc:
        raise TopicsError(
            "cannot read the cluster's default.replication.factor at"
            f" {settings.kafka_bootstrap_servers} ({clients.kafka_reason(exc)}); set"
            " TOPIC_REPLICATION_FACTOR"
        ) from None


def _replication_source(settings: Settings, factor: int) -> str:
    if settings.topic_replication_factor is not None:
        return f"TOPIC_REPLICATION_FACTOR={factor}"
    return f"the cluster's default.replication.factor={factor}"


def create_topics(settings: Settings, factor: int | None = None) -> list[str]:
    """Create the contract topics and the table's changelog where they do not exist
    yet, with `factor` replicas (default: `replication_factor`); return the names
    created, once the broker lists each with all its partitions."""
    existing = partition_counts(settings)
    changelog = changelog_topic(settings.topic_prefix, settings.app_id)
    missing = [base for base in (*ALL_TOPICS, changelog) if base not in existing]
    if not missing:
        return []
    factor = replication_factor(settings) if factor is None else factor
    client = clients.admin(settings)  # must outlive the futures
    brokers = len(client.list_topics(timeout=15).brokers)
    if brokers < factor:
        raise TopicsError(
            f"{_replication_source(settings, factor)} needs {factor} brokers, but Kafka"
            f" at {settings.kafka_bootstrap_servers} has {brokers} up"
        )
    # A topic added to existing ones (a new input, say) must match them, not the default.
    present = [existing[b] for b in (*INPUT_TOPICS, changelog) if b in existing]
    partitions = max(present) if present else settings.topic_partitions
    new = {
        (changelog if base == changelog else topic_name(base, settings.topic_prefix)): (
            CHANGELOG_CONFIG if base == changelog else TOPIC_CONFIGS.get(base, {})
        )
        for base in missing
    }
    futures = client.create_topics(
        [
            NewTopic(
                name, num_partitions=partitions, replication_factor=factor, config=config
            )
            for name, config in new.items()
        ]
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=30)
            created.append(name)
        except KafkaException as exc:
            if exc.args and exc.args[0].name() == "TOPIC_ALREADY_EXISTS":
                continue
            raise TopicsError(
                f"cannot create topic {name}: {clients.kafka_reason(exc)}"
            ) from None
    _wait_listed(settings, created)
    return created


def _wait_listed(settings: Settings, names: list[str]) -> None:
    """Return once the broker lists every topic in `names` with all its partitions led:
    it acknowledges a creation before that, and a worker started in between would
    refuse to run because its input topics "do not exist"."""
    deadline = time.monotonic() + LISTED_SECONDS
    client = clients.admin(settings)
    waiting = set(names)
    while waiting:
        try:
            metadata = client.list_topics(timeout=5)
        except KafkaException:
            metadata = None
        if metadata is not None:
            for name in list(waiting):
                topic = metadata.topics.get(name)
                if (
                    topic is not None
                    and topic.error is None
                    and topic.partitions
                    and all(p.leader >= 0 for p in topic.partitions.values())
                ):
                    waiting.discard(name)
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise TopicsError(
                f"Kafka at {settings.kafka_bootstrap_servers} created but did not list"
                f" {', '.join(sorted(waiting))} within {LISTED_SECONDS:g} s"
            )
        time.sleep(0.2)


def check_copartitioned(settings: Settings) -> int:
    """The common partition count of the input topics; TopicsError says which differ."""
    counts = partition_counts(settings)
    missing = [
        topic_name(b, settings.topic_prefix) for b in INPUT_TOPICS if b not in counts
    ]
    if missing:
        raise TopicsError(
            f"input topic(s) {', '.join(missing)} do not exist; run `streams topics create`"
        )
    inputs = {topic_name(b, settings.topic_prefix): counts[b] for b in INPUT_TOPICS}
    changelog = changelog_topic(settings.topic_prefix, settings.app_id)
    if changelog in counts:
        inputs[changelog] = counts[changelog]
    if len(set(inputs.values())) != 1:
        listing = ", ".join(f"{name}={n}" for name, n in inputs.items())
        raise TopicsError(
            f"input topics are not co-partitioned ({listing}): a business would be split"
            " across workers and could exceed its limit; give them equal partition counts"
        )
    return next(iter(inputs.values()))


def check_replication(settings: Settings, factor: int, brokers: int) -> list[str]:
    """TopicsError when a topic of this deployment has fewer replicas than `factor`;
    else the warnings to print (one line each): a changelog with a single replica on a
    cluster of several brokers loses every business's state with one disk."""
    states = topic_states(settings)
    short = sorted(
        f"{name}={state.replicas}"
        for name, state in states.items()
        if state.replicas < factor
    )
    if short:
        raise TopicsError(
            f"topic(s) with fewer replicas than {_replication_source(settings, factor)}:"
            f" {', '.join(short)}; raise their replication (kafka-reassign-partitions)"
            " or lower the setting"
        )
    changelog = states.get(changelog_topic(settings.topic_prefix, settings.app_id))
    if changelog is not None and changelog.replicas == 1 and brokers > 1:
        return [
            f"the changelog {changelog_topic(settings.topic_prefix, settings.app_id)} has a"
            f" single replica on a cluster of {brokers} brokers: losing that broker's"
            " disk loses every business's state (set TOPIC_REPLICATION_FACTOR=3)"
        ]
    return []


def min_insync_replicas(settings: Settings, names: list[str]) -> dict[str, str]:
    """Each topic's `min.insync.replicas` ('?' where the broker would not say)."""
    client = clients.admin(settings)
    resources = {name: ConfigResource(ResourceType.TOPIC, name) for name in names}
    futures = client.describe_configs(list(resources.values()))
    found = {}
    for name, resource in resources.items():
        try:
            found[name] = futures[resource].result(timeout=15)["min.insync.replicas"].value
        except (KafkaException, KeyError):
            found[name] = "?"
    return found


def ensure_topics(settings: Settings) -> list[TopicReport]:
    """`streams topics create`: create what is missing, check co-partitioning and
    replication, and describe every topic of this deployment."""
    factor = replication_factor(settings)
    created = create_topics(settings, factor)
    check_copartitioned(settings)
    brokers = len(clients.admin(settings).list_topics(timeout=15).brokers)
    for warning in check_replication(settings, factor, brokers):
        log.warning("%s", warning)
    states = topic_states(settings)
    names = sorted(states)
    insync = min_insync_replicas(settings, names)
    return [
        TopicReport(
            name,
            states[name].partitions,
            states[name].replicas,
            insync[name],
            name in created,
        )
        for name in names
    ]
