"""Reading records again by offset (streams/shell/reread.py), against the real broker.

The worker trusts what `BrokerReader.read` returns as the whole of a range: a record
missing from the answer is a record never handled. One reader serves every partition
in turn, so nothing of an earlier read may leak into a later one.
"""

from __future__ import annotations

from pathlib import Path

from streams.devtools.broker import Broker
from streams.settings import Settings
from streams.shell.reread import BrokerReader
from tests.support.deployment import Deployment


def test_ranges_of_different_partitions_read_back_to_back_are_exact(
    kafka_broker: Broker, tmp_path: Path
) -> None:
    deployment = Deployment(kafka_broker.bootstrap, tmp_path, TOPIC_PARTITIONS="2")
    deployment.create_topics()
    topic = deployment.topic("leads.requests")
    for partition in (0, 1):
        deployment.produce_to(
            topic, partition, [f"p{partition}-{n}".encode() for n in range(20)]
        )
    reader = BrokerReader(
        Settings(kafka_bootstrap_servers=kafka_broker.bootstrap), "reread-test"
    )
    try:
        for partition, start, end in [
            (0, 3, 7),
            (1, 0, 20),
            (0, 15, 20),
            (1, 5, 6),
            (0, 0, 1),
            (1, 19, 20),
        ]:
            got = reader.read(topic, partition, start, end)
            assert [(s.partition, s.offset, s.value) for s in got] == [
                (partition, n, f"p{partition}-{n}".encode()) for n in range(start, end)
            ]
        assert reader.committed(topic, 1) == 0, "no commit yet: the log's start"
    finally:
        reader.close()
