"""Minimal Faust agents: what Faust itself delivers, with and without sending.

Same transport and producer settings as the limiter worker (kafka://, acks=-1, raw
serializers, concurrency 1). Two loops, three ways to send:

* BENCH_LOOP=events: `async for event in stream.events()`, one event at a time;
  BENCH_LOOP=take: `async for events in stream.take_events(1000, within=0.005)`.
* BENCH_SEND=each: `await sink.send(...)` for every record (Faust's per-record path);
  BENCH_SEND=batched: the records handed to Faust's producer without waiting for
  delivery (Faust's commit flushes it first), what a well-built Faust app does;
  BENCH_SEND=none: consume only, Faust's ceiling. With nothing on an output topic to
  time, the agent writes BENCH_STAMPS: wall and process CPU time at each hundredth of
  BENCH_COUNT records consumed.

With BENCH_TABLE_WRITES=k it also writes k keys of a changelogged memory table per record
(JSON, like the limiter's table): what Faust charges for table writes alone. Started by
`bench/throughput.py`:

    BENCH_IN=topic BENCH_OUT=topic BENCH_APP=id KAFKA_BOOTSTRAP_SERVERS=host:port \
        python bench/faust_passthrough.py worker
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import faust

from streams.kafka import admin, clients
from streams.settings import Settings

TAKE_MAX = 1000
TAKE_WITHIN = 0.005


def main() -> None:
    settings = Settings.from_env()
    app = clients.faust_app(
        settings,
        os.environ["BENCH_APP"],
        admin.replication_factor(settings),
        store="memory://",
        datadir=os.environ.get("BENCH_DATADIR", "/tmp/faust-passthrough"),
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    source = app.topic(os.environ["BENCH_IN"], key_type=bytes, value_type=bytes)
    sink = app.topic(os.environ["BENCH_OUT"], key_type=bytes, value_type=bytes)
    loop = os.environ.get("BENCH_LOOP", "events")
    send = os.environ.get("BENCH_SEND", "each")
    writes = int(os.environ.get("BENCH_TABLE_WRITES", "0"))
    count = int(os.environ.get("BENCH_COUNT", "0"))
    stamps_path = os.environ.get("BENCH_STAMPS")
    table = None
    if writes:
        table = app.Table(
            "t",
            default=None,
            partitions=int(os.environ["BENCH_PARTITIONS"]),
            schema=faust.Schema(key_serializer="json", value_serializer="json"),
        )
    every = max(1, count // 100)
    stamps: list[tuple[int, float, float]] = []
    seen = 0

    def consumed(k: int) -> None:
        nonlocal seen
        before, seen = seen, seen + k
        if before // every != seen // every:
            stamps.append((seen, time.time(), time.process_time()))
        if stamps_path and before < count <= seen:
            Path(stamps_path).write_text(json.dumps(stamps))

    async def batches(stream: faust.StreamT) -> AsyncIterator[list[Any]]:
        if loop == "take":
            async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN):
                yield list(events)
        else:
            async for event in stream.events():
                yield [event]

    @app.agent(source, concurrency=1)
    async def forward(stream: faust.StreamT) -> None:
        producer = app.producer
        out = sink.get_topic_name()
        async for events in batches(stream):
            for event in events:
                if table is not None:
                    key = event.key.decode()
                    for i in range(writes):
                        table[f"{key}:{i}"] = {"v": event.value.decode()}
                if send == "each":
                    await sink.send(key=event.key, value=event.value)
                elif send == "batched":
                    await producer.send(out, event.key, event.value, None, None, None)
            consumed(len(events))

    worker = faust.Worker(app, loglevel="warning", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
