"""A worker restoring its table from a long changelog says how far it is: on `/ready/`
while it lasts, and in its log (RocksDB, the default store, from an empty data dir)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from bench.recovery import build_state, produce_changelog
from streams.topics import changelog_topic
from tests.support.deployment import Deployment
from tests.support.waiting import eventually

BUSINESSES = 40_000


def ready(port: int) -> tuple[int, dict] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready/", timeout=1) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)
    except OSError:
        return None


@pytest.mark.slow
def test_a_restore_shows_its_progress_on_ready_and_in_the_log(deployment: Deployment):
    assert deployment.settings.table_store == "rocksdb://"
    settings = deployment.settings
    table, partition_of_key, _ = build_state(
        BUSINESSES, settings.topic_prefix, settings.topic_partitions, settings.rules()
    )
    changelog = changelog_topic(settings.topic_prefix, settings.app_id)
    produce_changelog(settings.kafka_bootstrap_servers, changelog, table, partition_of_key)
    worker = deployment.start_worker()
    seen: list[dict] = []

    def restored() -> bool:
        answer = ready(worker.web_port)
        if answer is not None and "restore" in answer[1]:
            assert answer[0] == 503
            seen.append(answer[1]["restore"])
        assert answer is not None and answer[0] == 200, f"not ready: {answer}"
        return True

    eventually(restored, timeout=180, interval=0.1)
    assert seen, "/ready/ never showed the restore in progress"
    last = seen[-1]
    # Offsets, not records, and a partition done before the first look is not counted:
    # the figures are for a person watching, within a few percent.
    assert 0.9 * len(table) <= last["total"] <= len(table), (seen[:3], seen[-3:])
    assert 0 <= last["replayed"] <= last["total"]
    assert all(a["replayed"] <= b["replayed"] for a, b in zip(seen, seen[1:], strict=False))

    def restored_line() -> str:
        log = worker.log_path.read_text(errors="replace")
        assert "restored the table: " in log  # at the next look after the restore
        return log

    log = eventually(restored_line, timeout=10)
    assert "not found in cluster metadata" not in log  # we created the changelog
