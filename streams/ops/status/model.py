"""The workers' answers and what they add up to: pure merging, no I/O.

A worker that is down, not ready (503 while it restores its table) or answers nonsense
is reported next to the others' answers, not fatal; only when no worker gives an answer
is that an error (`StatusError`: one line, exit 2). A 404 for one business means "not
on that worker": it does not own the business's partition, or knows nothing of it.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any

from streams.errors import StreamsError

_DIGITS = re.compile(r"(\d+)")
_WORKER_RE = re.compile(
    r"^(?:https?://)?(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+)?(?::(\d{1,5}))?/?$"
)


class StatusError(StreamsError):
    """No worker gave an answer (or a bad --workers); the message is one line."""


def parse_workers(text: str | None, default_port: int) -> list[str]:
    """`host:port,host:port...` (a bare host gets `default_port`, a bare `:port`
    localhost) as a list of unique `host:port`; None or empty: localhost."""
    if text is None or not text.strip():
        return [f"localhost:{default_port}"]
    workers: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = _WORKER_RE.match(item)
        port = int(match.group(2)) if match and match.group(2) else default_port
        if not match or not (match.group(1) or match.group(2)) or not 0 < port < 65536:
            raise StatusError(f"--workers wants host:port[,host:port...], got {item!r}")
        address = f"{match.group(1) or 'localhost'}:{port}"
        if address not in workers:
            workers.append(address)
    if not workers:
        raise StatusError(f"--workers wants host:port[,host:port...], got {text!r}")
    return workers


def check_timeout(timeout: float) -> None:
    """StatusError (one line) unless `--timeout` is positive."""
    if not timeout > 0:
        raise StatusError(f"--timeout must be more than 0 seconds, got {timeout:g}")


def business_path(business_id: str, lead_id: str | None = None) -> str:
    """The worker's path of one business (and one of its leads)."""
    path = f"/businesses/{urllib.parse.quote(business_id, safe='')}/"
    if lead_id:
        path += "?" + urllib.parse.urlencode({"lead": lead_id})
    return path


@dataclasses.dataclass(frozen=True)
class Reply:
    """One worker's answer to one request."""

    worker: str  # host:port as asked
    code: int | None  # HTTP status; None: no answer at all
    body: Any = None  # the decoded JSON, when there was some
    error: str | None = None  # why there is no usable answer

    @property
    def state(self) -> str:
        """ok (200/404 with JSON), not ready (503), down (no answer), error."""
        if self.code is None:
            return "down"
        if self.code == 503:
            return "not ready"
        if self.code in (200, 404) and isinstance(self.body, dict):
            return "ok"
        return "error"

    def describe(self) -> str:
        if self.state == "down":
            return f"{self.worker} down ({self.error})"
        if self.state == "not ready":
            return f"{self.worker} not ready (restoring its table)"
        if self.state == "error":
            return f"{self.worker} error ({self.error or f'HTTP {self.code}'})"
        return f"{self.worker} ok"


# -- all businesses ------------------------------------------------------------------


@dataclasses.dataclass
class Merged:
    """Every answering worker's businesses, by business id."""

    replies: list[Reply]
    businesses: dict[str, dict[str, Any]]  # id -> the business, plus "worker"
    duplicates: dict[str, list[str]]  # id -> every worker that reported it

    @property
    def answered(self) -> list[Reply]:
        return [r for r in self.replies if r.state == "ok"]

    @property
    def unanswered(self) -> list[Reply]:
        return [r for r in self.replies if r.state != "ok"]

    def counts(self) -> dict[str, int]:
        """Businesses per worker."""
        counts: dict[str, int] = {}
        for business in self.businesses.values():
            counts[business["worker"]] = counts.get(business["worker"], 0) + 1
        return counts


def merge_businesses(replies: Iterable[Reply]) -> Merged:
    """Merge the `/businesses/` answers. Each worker serves only the partitions it owns,
    so a business normally comes from one worker; when two report it (during a
    rebalance) the first worker asked wins and the business is listed in `duplicates`."""
    businesses: dict[str, dict[str, Any]] = {}
    seen: dict[str, list[str]] = {}
    checked = []
    for reply in replies:
        listed = reply.body.get("businesses") if isinstance(reply.body, dict) else None
        if reply.code == 200 and not isinstance(listed, list):
            reply = dataclasses.replace(
                reply, body=None, error="no businesses list in the answer"
            )
        checked.append(reply)
        if reply.state != "ok" or reply.code != 200 or not isinstance(listed, list):
            continue
        for business in listed:
            if not isinstance(business, dict) or "business_id" not in business:
                continue
            bid = str(business["business_id"])
            seen.setdefault(bid, []).append(reply.worker)
            if bid not in businesses:
                businesses[bid] = {**business, "worker": reply.worker}
    duplicates = {bid: workers for bid, workers in seen.items() if len(workers) > 1}
    return Merged(checked, businesses, duplicates)


def require_an_answer(replies: Sequence[Reply]) -> None:
    """StatusError (one line) when no worker gave a usable answer."""
    if any(r.state == "ok" for r in replies):
        return
    problems = "; ".join(r.describe() for r in replies)
    if any(r.state == "not ready" for r in replies):
        raise StatusError(f"no worker is ready: {problems}")
    raise StatusError(f"no worker answered: {problems}")


def natural_key(text: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key putting biz-2 before biz-10."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in _DIGITS.split(text)
        if part
    )


def count_active(business: dict[str, Any]) -> int:
    return len(business.get("active") or ())


def totals(businesses: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Businesses, active calls, waiting and scheduled leads and the oldest wait over
    `businesses`."""
    n = active = waiting = scheduled = 0
    oldest: float | None = None
    for business in businesses:
        n += 1
        active += count_active(business)
        waiting += int(business.get("waiting") or 0)
        scheduled += int(business.get("scheduled") or 0)
        age = business.get("oldest_waiting_seconds")
        if age is not None and (oldest is None or age > oldest):
            oldest = age
    found: dict[str, Any] = {
        "businesses": n,
        "active": active,
        "waiting": waiting,
        "oldest_waiting_seconds": oldest,
    }
    if scheduled:  # only where leads are scheduled: runs are a feature not all use
        found["scheduled"] = scheduled
    return found


# -- one business --------------------------------------------------------------------


@dataclasses.dataclass
class Found:
    """One business as the workers know it."""

    business_id: str
    lead_id: str | None
    replies: list[Reply]
    worker: str | None = None
    business: dict[str, Any] | None = None
    lead: dict[str, Any] | None = None
    also_on: list[str] = dataclasses.field(default_factory=list)

    @property
    def found(self) -> bool:
        return self.business is not None


def find_business(
    replies: Sequence[Reply], business_id: str, lead_id: str | None = None
) -> Found:
    """Merge the `/businesses/{id}/` answers: a 200 is the owner's, a 404 "not here"."""
    found = Found(business_id, lead_id, list(replies))
    for reply in replies:
        if reply.state != "ok" or reply.code != 200:
            continue
        if found.business is None:
            body = dict(reply.body)
            found.lead = body.pop("lead", None)
            found.business, found.worker = body, reply.worker
        else:
            found.also_on.append(reply.worker)
    return found
