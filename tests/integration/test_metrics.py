"""The worker's `GET /metrics` on a real broker: decisions counted, gauges refreshed."""

from __future__ import annotations

import json
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.support.deployment import Deployment, WorkerProcess
from tests.support.waiting import eventually

Samples = dict[tuple[str, frozenset], float]


def scrape(worker: WorkerProcess) -> tuple[str, Samples]:
    """(Content-Type, {(sample name, labels): value}) of the worker's /metrics."""
    with urllib.request.urlopen(
        f"http://127.0.0.1:{worker.web_port}/metrics", timeout=5
    ) as reply:
        content_type = reply.headers["Content-Type"]
        text = reply.read().decode()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return content_type, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def dump(samples: Samples) -> str:
    """The project's samples, for a failure message."""
    return json.dumps(
        {
            f"{name}{dict(labels)}": v
            for (name, labels), v in samples.items()
            if name.startswith("streams_")
        },
        indent=1,
    )


def test_metrics_show_dials_waiting_leads_and_top_businesses(
    deployment: Deployment,
) -> None:
    worker = deployment.start_worker()
    worker.wait_serving()
    # Business M: 3 dials (the default limit), 2 waiting; no dialer, so they stay.
    deployment.produce_leads(
        [
            {"lead_id": f"M{n}", "business_id": "M", "phone": "+14155550100"}
            for n in range(5)
        ]
    )
    deployment.produce_leads(
        [{"lead_id": "bad", "business_id": "M", "phone": "not-a-number"}]
    )
    leads_topic = deployment.topic("leads.requests")

    def settled() -> tuple[str, Samples]:
        """All six records handled, and their effect visible."""
        content_type, samples = scrape(worker)
        assert (
            value(samples, "streams_events_total", topic=leads_topic) == 6
            and value(samples, "streams_business_active_calls", business_id="M") == 3
            and value(samples, "streams_waiting_leads") == 2
        ), dump(samples)
        return content_type, samples

    content_type, samples = eventually(settled, timeout=30)
    dumped = dump(samples)
    assert content_type.startswith("text/plain"), content_type
    assert value(samples, "streams_dials_granted_total") == 3, dumped
    assert value(samples, "streams_active_calls") == 3, dumped
    assert value(samples, "streams_waiting_leads") == 2, dumped
    assert value(samples, "streams_business_active_calls", business_id="M") == 3, dumped
    assert value(samples, "streams_business_waiting_leads", business_id="M") == 2, dumped
    assert (value(samples, "streams_oldest_waiting_seconds") or 0) > 0, dumped
    assert value(samples, "streams_worker_ready") == 1, dumped
    with urllib.request.urlopen(
        f"http://127.0.0.1:{worker.web_port}/ready/", timeout=5
    ) as reply:
        assert (reply.status, json.load(reply)) == (200, {"ready": True})
    assert value(samples, "streams_events_total", topic=leads_topic) == 6, dumped
    assert value(samples, "streams_decisions_total", kind="waiting") == 2, dumped
    assert value(samples, "streams_dead_letters_total") == 1, dumped
    assert value(samples, "streams_outcomes_total", outcome="rejected") == 1, dumped
    assert (value(samples, "streams_event_processing_seconds_count") or 0) >= 6, dumped
    # Lag series exist for every input partition this (only) worker owns.
    lagged = {
        dict(labels)["partition"]
        for (name, labels) in samples
        if name == "streams_consumer_lag_records" and dict(labels)["topic"] == leads_topic
    }
    assert lagged == {str(p) for p in range(deployment.settings.topic_partitions)}, dumped
