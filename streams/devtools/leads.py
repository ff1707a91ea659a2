"""Sending lead requests the way the CRM must: keyed by business_id, murmur2 partitioner.

`streams produce-leads` and `streams demo` send leads through here; generated leads
spread round-robin over `biz-0..biz-N`, or come from a JSON-lines file.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterable, Iterator

from confluent_kafka import Producer

from streams.errors import StreamsError
from streams.settings import Settings
from streams.topics import LEADS_REQUESTS, producer_config, record_key, topic_name


def generated_leads(
    count: int, businesses: int, run_id: str, seed: int | None
) -> Iterator[dict]:
    """`count` leads spread round-robin over `businesses` businesses."""
    rng = random.Random(seed)
    for n in range(count):
        yield {
            "lead_id": f"{run_id}-{n}",
            "business_id": f"biz-{n % businesses}",
            "phone": f"+1555{rng.randrange(10**7):07d}",
            "priority": 0,
        }


def file_leads(path: str) -> Iterator[dict]:
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with stream:
        for number, line in enumerate(stream, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise StreamsError(f"{path}:{number}: not JSON: {exc}") from None


def produce_leads(settings: Settings, leads: Iterable[dict], progress: bool = True) -> int:
    """Send leads keyed by business_id with the murmur2 partitioner; return the count."""
    producer = Producer(producer_config(settings.kafka_bootstrap_servers))
    topic = topic_name(LEADS_REQUESTS, settings.topic_prefix)
    failures: list[str] = []

    def delivered(err, _msg):
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
    producer.flush(60)
    if failures:
        raise StreamsError(f"{len(failures)} leads were not delivered: {failures[0]}")
    return sent
