"""Helpers the benchmarks share: topics, reading record timestamps, rates, percentiles."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic

from streams.kafka import clients
from streams.settings import Settings

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DEFAULT_BOOTSTRAP = os.environ.get("BENCH_BOOTSTRAP", "localhost:29092")


def say(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def emit(result: dict) -> None:
    print(json.dumps(result), flush=True)


def tag() -> str:
    return uuid.uuid4().hex[:8]


def worker_env(
    bootstrap: str, prefix: str, partitions: int, app_id: str = "limiter", **variables: str
) -> dict[str, str]:
    """The environment of the processes a benchmark starts: this one's (security
    included), on the benchmark's own topics, with `variables` on top. An inherited
    WORKER_INSTANCE_ID is dropped: two workers must not share one static identity."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "TOPIC_PREFIX": prefix,
        "STREAMS_APP_ID": app_id,
        "TOPIC_PARTITIONS": str(partitions),
        **variables,
    }
    env.pop("WORKER_INSTANCE_ID", None)
    return env


def settings_for(bootstrap: str, **variables: str) -> Settings:
    """The settings of a benchmark's clients: the environment's (security included),
    at `bootstrap`, with `variables` on top."""
    return Settings.from_env(
        {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, **variables}
    )


def create_topics(bootstrap: str, names: Iterable[str], partitions: int) -> None:
    """Topics with TOPIC_REPLICATION_FACTOR replicas, else the cluster's default."""
    settings = settings_for(bootstrap)
    client = clients.admin(settings)
    factor = settings.topic_replication_factor or -1  # -1: the broker's default
    futures = client.create_topics([NewTopic(n, partitions, factor) for n in names])
    for future in futures.values():
        future.result(30)


def delete_topics(bootstrap: str, prefix: str) -> None:
    """Delete every topic whose name starts with `prefix` (this run's own)."""
    client = clients.admin(settings_for(bootstrap))
    names = [t for t in client.list_topics(timeout=15).topics if t.startswith(prefix)]
    if names:
        for future in client.delete_topics(names).values():
            try:
                future.result(30)
            except Exception:
                pass


def high_watermark(bootstrap: str, topic: str) -> int:
    consumer = clients.consumer(
        settings_for(bootstrap), f"hw-{tag()}", {"enable.auto.commit": False}
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        )
    finally:
        consumer.close()


def wait_count(
    bootstrap: str,
    topic: str,
    count: int,
    timeout: float,
    process: subprocess.Popen | None = None,
) -> int:
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        seen = high_watermark(bootstrap, topic)
        if seen >= count:
            return seen
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"process exited {process.returncode} with {seen}/{count}"
                f" records in {topic}"
            )
        time.sleep(0.5)
    raise TimeoutError(f"{topic} has {seen} of {count} records after {timeout:.0f}s")


def read_all(
    bootstrap: str,
    topic: str,
    count: int | None = None,
    timeout: float = 60,
    values: bool = False,
) -> list:
    """Every record of `topic` from the start: (timestamp_ms, key, value|None)."""
    consumer = clients.consumer(
        settings_for(bootstrap),
        f"reader-{tag()}",
        {"enable.auto.commit": False, "auto.offset.reset": "earliest"},
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        }
        total = sum(ends.values()) if count is None else count
        consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
        records = []
        deadline = time.monotonic() + timeout
        while len(records) < total and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.5):
                if message.error() is None:
                    records.append(
                        (
                            message.timestamp()[1],
                            message.key(),
                            message.value() if values else None,
                        )
                    )
        return records
    finally:
        consumer.close()


def rates(timestamps_ms: list[int]) -> dict:
    """Rate over the whole span and over the middle 90% of records (sustained)."""
    ts = sorted(timestamps_ms)
    n = len(ts)
    out = {"records": n}
    if n < 2:
        return out
    span = (ts[-1] - ts[0]) / 1000
    out["span_s"] = round(span, 3)
    out["per_s_full"] = round((n - 1) / span) if span > 0 else None
    lo, hi = int(n * 0.05), int(n * 0.95) - 1
    mid = (ts[hi] - ts[lo]) / 1000
    out["per_s_sustained"] = round((hi - lo) / mid) if mid > 0 else None
    return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
