"""Asking the workers for a run's figures; sending a run's withdrawal."""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence

from confluent_kafka import KafkaException

from streams.errors import StreamsError
from streams.kafka import clients
from streams.kafka.clients import kafka_reason
from streams.ops.status.model import Reply, business_path
from streams.ops.status.reader import Get, ask, fetch
from streams.settings import Settings
from streams.topics import (
    LEADS_REQUESTS,
    Withdrawal,
    record_key,
    topic_name,
)

#: Seconds the withdrawal's delivery may take.
WRITE_TIMEOUT = 30.0


class RunError(StreamsError):
    """A run could not be shown or withdrawn; the message says why in one line."""


def run_path(business_id: str, run_id: str) -> str:
    """The worker's path of one business, with one of its runs."""
    return business_path(business_id) + "?" + urllib.parse.urlencode({"run": run_id})


def ask_run(
    workers: Sequence[str], business_id: str, run_id: str, timeout: float, get: Get = fetch
) -> list[Reply]:
    return ask(workers, run_path(business_id, run_id), timeout, get)


def send_withdrawal(settings: Settings, business_id: str, run_id: str) -> None:
    """Send `{business_id, run_id, withdraw: true}` to `leads.requests`, keyed like the
    business's leads so that it follows them in their partition."""
    producer = clients.producer(settings)
    topic = topic_name(LEADS_REQUESTS, settings.topic_prefix)
    try:
        producer.produce(
            topic,
            key=record_key(business_id),
            value=Withdrawal(business_id, run_id=run_id).encode(),
        )
    except KafkaException as exc:
        raise RunError(f"cannot send to {topic}: {kafka_reason(exc)}") from None
    if producer.flush(WRITE_TIMEOUT) != 0:
        raise RunError(
            f"the withdrawal was not delivered to {topic} on"
            f" {settings.kafka_bootstrap_servers} within {WRITE_TIMEOUT:g} s"
        )
