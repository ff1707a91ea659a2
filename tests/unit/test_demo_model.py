"""The demo's namespace of its own per run, and how it shows a worker's restore."""

from __future__ import annotations

from streams.devtools.demo.model import demo_namespace, restore_text
from streams.settings import Settings


def test_each_run_gets_topics_and_groups_of_its_own_and_a_clean_worker_data_dir():
    first = demo_namespace("0a1b2c3d", "/demo/worker-data", {})
    second = demo_namespace("9f8e7d6c", "/demo/worker-data", {})
    assert first == {
        "TOPIC_PREFIX": "demo-0a1b2c3d-",
        "STREAMS_DATA_DIR": "/demo/worker-data",
    }
    assert first["TOPIC_PREFIX"] != second["TOPIC_PREFIX"]
    # A valid prefix: the settings accept it.
    assert Settings.from_env(first).topic_prefix == "demo-0a1b2c3d-"


def test_the_users_own_namespace_wins():
    environ = {"TOPIC_PREFIX": "mine.", "STREAMS_DATA_DIR": "/var/lib/streams"}
    assert demo_namespace("0a1b2c3d", "/demo/worker-data", environ) == {}
    assert demo_namespace("0a1b2c3d", "/d", {"TOPIC_PREFIX": " "}) == {
        "TOPIC_PREFIX": "demo-0a1b2c3d-",
        "STREAMS_DATA_DIR": "/d",
    }


def test_a_restore_reads_as_records_replayed_of_the_total_and_time_left():
    figures = {"replayed": 1200, "total": 10_000, "seconds_left": 14.6}
    assert restore_text(figures) == (
        "worker restoring its table: 1,200 of 10,000 records, about 15 s left"
    )
    assert restore_text({"replayed": 0, "total": 400, "seconds_left": None}) == (
        "worker restoring its table: 0 of 400 records"
    )
