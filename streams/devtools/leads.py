"""Sending lead requests the way the CRM must: keyed by business_id, murmur2 partitioner.

`streams produce-leads` and `streams demo` send leads through here; generated leads
spread round-robin over `biz-0..biz-N`, or come from a JSON-lines file.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from confluent_kafka import KafkaError, Message

from streams.errors import StreamsError
from streams.kafka import clients
from streams.settings import Settings
from streams.topics import LEADS_REQUESTS, record_key, topic_name

Lead = dict[str, Any]


def lead_source(
    path: str | None,
    count: int,
    businesses: int,
    run_id: str,
    seed: int | None,
    *,
    not_before: str | None = None,
    expires_at: str | None = None,
    timezone: str | None = None,
) -> Iterator[Lead]:
    """`streams produce-leads`: the leads of the file at `path` ('-' for stdin), or
    `count` generated ones over `businesses` businesses, of run `run_id`, with the
    optional schedule and zone."""
    if path:
        return file_leads(path)
    if count < 1 or businesses < 1:
        raise StreamsError("--count and --businesses must be at least 1")
    extra = {"not_before": not_before, "expires_at": expires_at, "timezone": timezone}
    return generated_leads(
        count, businesses, run_id, seed, {k: v for k, v in extra.items() if v}
    )


def generated_leads(
    count: int,
    businesses: int,
    run_id: str,
    seed: int | None,
    extra: dict[str, str] | None = None,
) -> Iterator[Lead]:
    """`count` leads of run `run_id` spread round-robin over `businesses` businesses,
    with the `extra` fields."""
    rng = random.Random(seed)
    for n in range(count):
        yield {
            "lead_id": f"{run_id}-{n}",
            "business_id": f"biz-{n % businesses}",
            "phone": f"+1555{rng.randrange(10**7):07d}",
            "priority": 0,
            "run_id": run_id,
            **(extra or {}),
        }


def file_leads(path: str) -> Iterator[Lead]:
    """The JSON lines of the file at `path` ('-' for stdin); blank lines skipped. The
    file is opened at once, so a missing one is reported before Kafka is asked."""
    if path == "-":
        return _json_lines(sys.stdin, path)
    try:
        stream = open(path, encoding="utf-8")
    except OSError as exc:
        raise StreamsError(f"cannot read {path}: {exc.strerror or exc}") from None
    return _closing(stream, path)


def _closing(stream: TextIO, path: str) -> Iterator[Lead]:
    with stream:
        yield from _json_lines(stream, path)


def _json_lines(stream: TextIO, path: str) -> Iterator[Lead]:
    try:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                lead = json.loads(line)
            except json.JSONDecodeError as exc:
                raise StreamsError(f"{path}:{number}: not JSON: {exc}") from None
            if not isinstance(lead, dict):
                raise StreamsError(f"{path}:{number}: not a JSON object")
            yield lead
    except UnicodeDecodeError as exc:
        raise StreamsError(f"{path}: not UTF-8 text ({exc.reason})") from None


def produce_leads(
    settings: Settings,
    leads: Iterable[Lead],
    progress: bool = True,
    flush_timeout: float = 60.0,
) -> int:
    """Send leads keyed by business_id with the murmur2 partitioner; return the count
    once the broker has them all (StreamsError after `flush_timeout` seconds)."""
    producer = clients.producer(settings)
    topic = topic_name(LEADS_REQUESTS, settings.topic_prefix)
    failures: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(str(err))

    sent = 0
    for lead in leads:
        business_id = str(lead.get("business_id", ""))
        value = json.dumps(lead, separators=(",", ":")).encode()
        while True:
            try:
                producer.produce(
                    topic, key=record_key(business_id), value=value, on_delivery=delivered
                )
                break
            except BufferError:
                producer.poll(0.1)
        sent += 1
        producer.poll(0)
        if progress and sent % 10_000 == 0:
            print(f"  {sent} leads sent...", file=sys.stderr)
    undelivered = producer.flush(flush_timeout)
    if undelivered:
        raise StreamsError(
            f"{undelivered} of {sent} leads were not delivered within"
            f" {flush_timeout:g} s to Kafka at {settings.kafka_bootstrap_servers}"
        )
    if failures:
        raise StreamsError(f"{len(failures)} leads were not delivered: {failures[0]}")
    return sent
