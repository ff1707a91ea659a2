"""The floor for Faust: a minimal agent forwarding records unchanged.

Same transport and producer settings as the limiter worker (kafka://, acks=-1, raw
serializers, concurrency 1), no table. With BENCH_TABLE_WRITES=k it also writes k keys of
a changelogged memory table per record (JSON, like the limiter's table) and does not
wait for them: what Faust charges for table writes alone. Started by `bench/throughput.py`:

    BENCH_IN=topic BENCH_OUT=topic BENCH_APP=id KAFKA_BOOTSTRAP_SERVERS=host:port \
        python bench/faust_passthrough.py
"""

from __future__ import annotations

import os

import faust

from streams.kafka import admin, clients
from streams.settings import Settings


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
    writes = int(os.environ.get("BENCH_TABLE_WRITES", "0"))
    table = None
    if writes:
        table = app.Table(
            "t",
            default=None,
            partitions=int(os.environ["BENCH_PARTITIONS"]),
            schema=faust.Schema(key_serializer="json", value_serializer="json"),
        )

    @app.agent(source, concurrency=1)
    async def forward(stream):
        async for event in stream.events():
            if table is not None:
                key = event.key.decode()
                for i in range(writes):
                    table[f"{key}:{i}"] = {"v": event.value.decode()}
            await sink.send(key=event.key, value=event.value)

    worker = faust.Worker(app, loglevel="warning", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
