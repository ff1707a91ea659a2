"""What the worker's web server shows (Faust's web app, WORKER_WEB_PORT).

`/businesses/` and `/businesses/{id}/` read the table of this worker's partitions
(`streams status`, `streams top` merge them across workers), `/ready/` is a readiness
probe, `/counters/` counts the core's decisions, `/metrics` is Prometheus' text format.
"""

from __future__ import annotations

import collections
import time
from typing import Any, Protocol

import faust

from streams import limiter_table as core
from streams import metrics
from streams.shell.units import Units


class Worker(Protocol):
    """What the pages read of the worker (`streams.app.Limiter`)."""

    app: faust.App
    rules: core.Rules
    units: Units
    counters: collections.Counter[str]

    def ready(self) -> bool: ...

    def restore_status(self) -> dict[str, Any] | None: ...

    def businesses(self) -> list[dict[str, Any]]: ...


def add_views(worker: Worker) -> None:
    """Add the worker's pages to its Faust app."""
    page = worker.app.page

    @page("/businesses/")
    async def businesses(view: Any, request: Any) -> Any:
        """Every business on this worker's partitions: active calls, waiting leads.

        503 until the table is restored: before that it is empty or half-replayed
        from the changelog, and would show stale slots and queues."""
        if not worker.ready():
            return view.json({"ready": False, "businesses": []}, status=503)
        return view.json({"businesses": worker.businesses()})

    @page("/businesses/{business_id}/")
    async def business(view: Any, request: Any, business_id: str) -> Any:
        """One business and its open runs' figures; with ?lead=ID also where that lead
        stands and why it waits, with ?run=ID that run's figures.

        404 when this worker does not own the business's partition (ask the others)
        or knows nothing of it."""
        if not worker.ready():
            return view.json({"ready": False}, status=503)
        now = time.time()
        found: dict[str, Any] = dict(
            core.describe_business(
                worker.units.get, business_id, now, worker.rules, runs=True
            )
        )
        lead_id = request.query.get("lead")
        if lead_id:
            found["lead"] = core.describe_lead(
                worker.units.get, business_id, lead_id, worker.rules, now
            )
        run_id = request.query.get("run")
        if run_id:
            found["run"] = core.describe_run(worker.units.get, business_id, run_id)
        known = (
            found["active"]
            or found["waiting"]
            or found["scheduled"]
            or found["runs"]
            or found.get("lead")
            or found.get("run")
        )
        return view.json(found, status=200 if known else 404)

    @page("/ready/")
    async def ready(view: Any, request: Any) -> Any:
        """200 once the table holds this worker's partitions, else 503: a readiness
        probe that, unlike /businesses/, costs nothing with 100,000 businesses. While
        the table is restored from its changelog, `restore` says how far (records
        replayed of the total, rate, seconds left)."""
        if worker.ready():
            return view.json({"ready": True})
        status: dict[str, Any] = {"ready": False}
        restore = worker.restore_status()
        if restore is not None:
            status["restore"] = restore
        return view.json(status, status=503)

    @page("/counters/")
    async def counters(view: Any, request: Any) -> Any:
        """How often each kind of decision happened since this worker started."""
        return view.json(dict(worker.counters))

    @page("/metrics")
    async def prometheus(view: Any, request: Any) -> Any:
        """Prometheus text format (streams/metrics.py); gauges refresh on a timer."""
        body, content_type = metrics.metrics_text()
        # aiohttp refuses a charset in content_type=, so the header goes as is.
        return view.bytes(body, headers={"Content-Type": content_type})
