"""What the demo reads while it runs: the dialer's ledger, the worker's web view and
`leads.outcomes`."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, TextIO

from confluent_kafka import TopicPartition

from streams.devtools.demo.model import LiveCalls
from streams.dialers.simulated.ledger import call_spans, peak_concurrency, read_lines
from streams.kafka import clients
from streams.settings import Settings
from streams.topics import LEADS_OUTCOMES, LeadOutcome, topic_name


class LedgerTail:
    """Follows the dialer's ledger as it grows into `calls`, the true live calls."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.calls = LiveCalls()
        self._file: TextIO | None = None
        self._partial = ""

    def read(self) -> None:
        if self._file is None:
            if not self.path.exists():
                return
            self._file = open(self.path, encoding="utf-8")
        chunk = self._file.read()
        if not chunk:
            return
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()  # "" after a complete line, else a line still growing
        for raw in lines:
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(line, dict):
                self.calls.apply(line)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def ledger_peaks(path: str | os.PathLike[str]) -> tuple[dict[str, int], int]:
    """From the whole ledger: each business's peak of calls at once, and the peak over
    all businesses (nothing when the dialer never wrote it)."""
    if not Path(path).exists():
        return {}, 0
    spans = call_spans(read_lines(path))
    overall = peak_concurrency(("all", s.placed_at, s.ended_at) for s in spans)
    return peak_concurrency(spans), overall.get("all", 0)


class WorkerView:
    """The worker's GET /businesses/ view, by business id."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/businesses/"
        self.businesses: dict[str, dict[str, Any]] = {}

    def fetch(self, timeout: float = 1.0) -> bool:
        """Refresh; False (keeping the last view) when the worker did not answer."""
        try:
            with urllib.request.urlopen(self.url, timeout=timeout) as reply:
                data = json.load(reply)
        except (OSError, ValueError):
            return False
        if not isinstance(data, dict) or not isinstance(data.get("businesses"), list):
            return False
        self.businesses = {
            b["business_id"]: b
            for b in data["businesses"]
            if isinstance(b, dict) and "business_id" in b
        }
        return True


def restore_figures(port: int, timeout: float = 1.0) -> dict[str, Any] | None:
    """The worker's restore in progress, from `/ready/`; None when there is none or it
    did not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready/", timeout=timeout):
            return None  # 200: ready
    except urllib.error.HTTPError as error:
        try:
            data = json.load(error)
        except ValueError:
            return None
    except OSError:
        return None
    restore = data.get("restore") if isinstance(data, dict) else None
    return restore if isinstance(restore, dict) else None


class OutcomeReader:
    """`leads.outcomes` from its end when the run began, keeping this run's leads only."""

    def __init__(self, settings: Settings, run_id: str, lead_ids: set[str]) -> None:
        self.lead_ids = lead_ids
        self.outcomes: dict[str, LeadOutcome] = {}
        self.topic = topic_name(LEADS_OUTCOMES, settings.topic_prefix)
        self.consumer = clients.consumer(
            settings,
            f"{settings.topic_prefix}streams-demo-{run_id}",
            {"enable.auto.commit": False, "auto.offset.reset": "earliest"},
            quiet=True,
        )
        # Start at each partition's current end, read before any lead is sent: every
        # outcome of this run comes later, and old runs' outcomes need not be read.
        metadata = self.consumer.list_topics(self.topic, timeout=15).topics[self.topic]
        starts = []
        for partition in metadata.partitions:
            _low, high = self.consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=15
            )
            starts.append(TopicPartition(self.topic, partition, high))
        self.consumer.assign(starts)

    def poll(self) -> None:
        for message in self.consumer.consume(500, timeout=0):
            value = message.value()
            if message.error() is not None or value is None:
                continue
            try:
                outcome = LeadOutcome.decode(value)
            except (ValueError, TypeError):
                continue
            if outcome.lead_id in self.lead_ids and outcome.final:  # a retry goes on
                self.outcomes.setdefault(outcome.lead_id, outcome)  # outputs may repeat

    def done(self) -> bool:
        return len(self.outcomes) == len(self.lead_ids)

    def close(self) -> None:
        self.consumer.close()
