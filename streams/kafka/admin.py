"""Creating the contract's topics and refusing to run on a split business.

A business is limited correctly only if all of its records meet in one partition of
one worker; that holds only when every input topic has the same partition count.
Faust itself notices a mismatch late (at the first table write, losing that event),
so the worker checks here before it starts.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams.errors import StreamsError
from streams.settings import Settings
from streams.topics import (
    ALL_TOPICS,
    BUSINESS_CONTROL,
    INPUT_TOPICS,
    LIMITER_TICKS,
    changelog_topic,
    topic_name,
)

#: Ticks are worthless once processed; keep them an hour. Control records are the
#: current configuration of each business: keep the latest per business forever.
TOPIC_CONFIGS = {
    LIMITER_TICKS: {"retention.ms": str(3_600_000)},
    BUSINESS_CONTROL: {"cleanup.policy": "compact"},
}


class TopicsError(StreamsError):
    """The topics cannot be used as they are; the message is one line saying why."""


def kafka_reason(exc: object) -> str:
    """The one-line reason of a KafkaException (or of the KafkaError it carries)."""
    err = exc.args[0] if isinstance(exc, Exception) and exc.args else exc
    return err.str() if hasattr(err, "str") else str(exc)


def quiet_client_config(bootstrap: str) -> dict[str, Any]:
    """confluent-kafka settings for a client whose failures reach the caller as
    exceptions: librdkafka's own log lines (a refused connection, once a second)
    would bury the one line the command prints."""
    logger = logging.getLogger(f"{__name__}.librdkafka")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return {"bootstrap.servers": bootstrap, "logger": logger, "error_cb": lambda _err: None}


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "log_level": 3}
    )


def partition_counts(settings: Settings, timeout: float = 15.0) -> dict[str, int]:
    """Partition count of each contract topic that exists, by base name.

    The limiter table's changelog appears under its full name when it exists.
    """
    try:
        metadata = admin_client(settings).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise TopicsError(
            f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {kafka_reason(exc)}"
        ) from None
    counts = {}
    changelog = changelog_topic(settings.topic_prefix, settings.app_id)
    for base in ALL_TOPICS + (changelog,):
        name = changelog if base == changelog else topic_name(base, settings.topic_prefix)
        topic = metadata.topics.get(name)
        if topic is not None and topic.error is None:
            counts[base] = len(topic.partitions)
    return counts


def create_topics(settings: Settings, replication_factor: int = 1) -> list[str]:
    """Create the contract topics that do not exist yet; return the names created."""
    existing = partition_counts(settings)
    missing = [base for base in ALL_TOPICS if base not in existing]
    if not missing:
        return []
    # A topic added to existing ones (a new input, say) must match them, not the default.
    present = [existing[b] for b in INPUT_TOPICS if b in existing]
    partitions = max(present) if present else settings.topic_partitions
    admin = admin_client(settings)  # must outlive the futures
    futures = admin.create_topics(
        [
            NewTopic(
                topic_name(base, settings.topic_prefix),
                num_partitions=partitions,
                replication_factor=replication_factor,
                config=TOPIC_CONFIGS.get(base, {}),
            )
            for base in missing
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
            raise TopicsError(f"cannot create topic {name}: {kafka_reason(exc)}") from None
    return created


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


def ensure_topics(settings: Settings) -> list[tuple[str, int, bool]]:
    """Create the missing contract topics and check co-partitioning (`streams topics
    create`): every topic that exists, by full name, with its partition count and
    whether it was created now."""
    created = create_topics(settings)
    check_copartitioned(settings)
    report = []
    for base, count in partition_counts(settings).items():
        name = topic_name(base, settings.topic_prefix) if base in ALL_TOPICS else base
        report.append((name, count, name in created))
    return report
