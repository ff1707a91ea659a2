"""`streams status [BUSINESS]`: what each business runs and what waits, from the workers.

Every worker serves its own partitions' businesses (`GET /businesses/`, and
`GET /businesses/{id}/?lead=ID` for one business and one lead; `streams/app.py`). This
module asks every worker named (default: `localhost:WORKER_WEB_PORT`) at once, merges
their answers and prints them. A worker that is down, not ready (503 while it restores
its table) or answers nonsense is reported next to the others' answers, not fatal; only
when no worker gives an answer is that an error (`StatusError`: one line, exit 2).

A 404 for one business means "not on that worker": it does not own the business's
partition, or knows nothing of it. Not found on any worker that answered is exit 1.

`streams top` (`streams/ops/top.py`) builds on the same fetching and merging.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from streams.errors import StreamsError
from streams.ops.formatting import format_age
from streams.topics import to_iso

#: Seconds to wait for one worker's answer.
DEFAULT_TIMEOUT = 3.0
#: Workers asked at once.
MAX_PARALLEL = 16

_DIGITS = re.compile(r"(\d+)")
_WORKER_RE = re.compile(
    r"^(?:https?://)?(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+)?(?::(\d{1,5}))?/?$"
)


class StatusError(StreamsError):
    """No worker gave an answer (or a bad --workers); the message is one line."""


# -- asking the workers ----------------------------------------------------------------


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


Fetch = Callable[[str, float], Reply]


def http_get_json(url: str, timeout: float) -> tuple[int | None, Any, str | None]:
    """(status, JSON body or None, error) of a GET; status None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            code, raw = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        code, raw = exc.code, exc.read()
    except urllib.error.URLError as exc:
        return None, None, _reason(exc.reason, timeout)
    except (OSError, ValueError) as exc:  # timeouts, resets, bad URLs
        return None, None, _reason(exc, timeout)
    try:
        return code, json.loads(raw), None
    except ValueError:
        return code, None, f"HTTP {code}, not JSON"


def _reason(reason: Any, timeout: float) -> str:
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return "unknown host"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason) or type(reason).__name__


def fetch(worker: str, path: str, timeout: float = DEFAULT_TIMEOUT) -> Reply:
    """GET http://worker/path as a Reply."""
    code, body, error = http_get_json(f"http://{worker}{path}", timeout)
    return Reply(worker, code, body, error)


def ask(
    workers: Sequence[str],
    path: str,
    timeout: float = DEFAULT_TIMEOUT,
    get: Callable[[str, str, float], Reply] = fetch,
) -> list[Reply]:
    """The same GET to every worker at once; replies in the workers' order."""
    if len(workers) == 1:
        return [get(workers[0], path, timeout)]
    with concurrent.futures.ThreadPoolExecutor(min(MAX_PARALLEL, len(workers))) as pool:
        return list(pool.map(lambda w: get(w, path, timeout), workers))


def business_path(business_id: str, lead_id: str | None = None) -> str:
    path = f"/businesses/{urllib.parse.quote(business_id, safe='')}/"
    if lead_id:
        path += "?" + urllib.parse.urlencode({"lead": lead_id})
    return path


# -- merging ---------------------------------------------------------------------------


@dataclasses.dataclass
class Merged:
    """Every answering worker's businesses, by business id."""

    replies: list[Reply]
    businesses: dict[str, dict]  # id -> the business, plus "worker"
    duplicates: dict[str, list[str]]  # id -> every worker that reported it

    @property
    def answered(self) -> list[Reply]:
        return [r for r in self.replies if r.state == "ok"]

    @property
    def unanswered(self) -> list[Reply]:
        return [r for r in self.replies if r.state != "ok"]


def merge_businesses(replies: Iterable[Reply]) -> Merged:
    """Merge the `/businesses/` answers. Each worker serves only the partitions it owns,
    so a business normally comes from one worker; when two report it (during a
    rebalance) the first worker asked wins and the business is listed in `duplicates`."""
    replies = list(replies)
    businesses: dict[str, dict] = {}
    seen: dict[str, list[str]] = {}
    checked = []
    for reply in replies:
        listed = reply.body.get("businesses") if isinstance(reply.body, dict) else None
        if reply.code == 200 and not isinstance(listed, list):
            reply = dataclasses.replace(
                reply, body=None, error="no businesses list in the answer"
            )
        checked.append(reply)
        if reply.state != "ok" or reply.code != 200:
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


# -- formatting ------------------------------------------------------------------------


def natural_key(text: str) -> tuple:
    """Sort key putting biz-2 before biz-10."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in _DIGITS.split(text)
        if part
    )


def count_active(business: dict) -> int:
    return len(business.get("active") or ())


def business_line(business: dict) -> str:
    """One line about a business: limit, paused, active of limit, waiting, oldest wait."""
    active, waiting, limit = (
        count_active(business),
        int(business.get("waiting") or 0),
        business.get("limit"),
    )
    parts = [
        f"limit {limit}",
        "paused" if business.get("paused") else "running",
        f"{active} of {limit} active"
        + (" (draining to the limit)" if isinstance(limit, int) and active > limit else ""),
    ]
    if waiting:
        parts.append(
            f"{waiting} waiting, oldest for"
            f" {format_age(business.get('oldest_waiting_seconds'))}"
        )
    else:
        parts.append("none waiting")
    held = business.get("held_statuses") or 0
    if held:
        parts.append(f"{held} status{'es' if held != 1 else ''} held for an unknown dial")
    where = f"  [worker {business['worker']}]" if business.get("worker") else ""
    return f"business {business.get('business_id')}: {', '.join(parts)}{where}"


def active_lines(business: dict, indent: str = "  ") -> list[str]:
    """The business's active calls as an aligned table (nothing when there are none)."""
    calls = sorted(business.get("active") or (), key=lambda a: -(a.get("age_seconds") or 0))
    if not calls:
        return []
    rows = [("dial_id", "lead", "phase", "age", "lease left")]
    for call in calls:
        left = call.get("lease_left_seconds")
        rows.append(
            (
                str(call.get("dial_id")),
                str(call.get("lead_id")),
                str(call.get("status")),
                format_age(call.get("age_seconds")),
                "due now" if left is not None and left <= 0 else format_age(left),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            row[0].ljust(widths[0]),
            row[1].ljust(widths[1]),
            row[2].ljust(widths[2]),
            row[3].rjust(widths[3]),
            row[4].rjust(widths[4]),
        ]
        lines.append(indent + "  ".join(cells).rstrip())
    return lines


def lead_lines(
    business_id: str, lead_id: str, lead: dict | None, business: dict | None = None
) -> list[str]:
    """Where one lead stands and, when it waits, what for."""
    if lead is None:
        return [
            f"lead {lead_id}: unknown to business {business_id} (not received yet,"
            " sent to another business, or never sent)"
        ]
    state, attempt = lead.get("state"), lead.get("attempt")
    dial_id = lead.get("dial_id")
    if state == "waiting":
        ahead = int(lead.get("ahead") or 0)
        return [
            f"lead {lead_id}: waiting (attempt {attempt}), number {ahead + 1} in line",
            f"  waits for {lead.get('waits_for')}",
        ]
    if state == "active":
        call = next(
            (
                a
                for a in (business or {}).get("active") or ()
                if a.get("dial_id") == dial_id
            ),
            None,
        )
        phase = (
            f", phase {call.get('status')} for {format_age(call.get('age_seconds'))}"
            if call
            else ""
        )
        return [
            f"lead {lead_id}: on a call (attempt {attempt}), dial {dial_id}{phase};"
            " it holds one of the business's slots"
        ]
    if state == "done":
        return [
            f"lead {lead_id}: done, outcome {lead.get('outcome')}"
            + (f" (dial {dial_id}, attempt {attempt})" if dial_id else "")
        ]
    return [f"lead {lead_id}: {state} (attempt {attempt})"]


def workers_line(replies: Sequence[Reply], counts: dict[str, int] | None = None) -> str:
    parts = []
    for reply in replies:
        if reply.state == "ok" and counts is not None:
            n = counts.get(reply.worker, 0)
            parts.append(f"{reply.worker} ok, {n} business{'es' if n != 1 else ''}")
        else:
            parts.append(reply.describe())
    return "workers: " + "; ".join(parts)


def totals(businesses: Iterable[dict]) -> dict:
    n = active = waiting = 0
    oldest: float | None = None
    for business in businesses:
        n += 1
        active += count_active(business)
        waiting += int(business.get("waiting") or 0)
        age = business.get("oldest_waiting_seconds")
        if age is not None and (oldest is None or age > oldest):
            oldest = age
    return {
        "businesses": n,
        "active": active,
        "waiting": waiting,
        "oldest_waiting_seconds": oldest,
    }


def format_all(merged: Merged) -> list[str]:
    """`streams status`: every business, sorted by id, then the totals."""
    counts: dict[str, int] = {}
    for business in merged.businesses.values():
        counts[business["worker"]] = counts.get(business["worker"], 0) + 1
    several = len(merged.replies) > 1
    lines = [workers_line(merged.replies, counts)]
    for bid in sorted(merged.businesses, key=natural_key):
        business = merged.businesses[bid]
        shown = business if several else {**business, "worker": None}
        lines.append(business_line(shown))
        lines.extend(active_lines(business))
    total = totals(merged.businesses.values())
    summary = (
        f"{total['businesses']:,} business{'es' if total['businesses'] != 1 else ''}:"
        f" {total['active']:,} active, {total['waiting']:,} waiting"
    )
    if total["oldest_waiting_seconds"] is not None:
        summary += f", oldest wait {format_age(total['oldest_waiting_seconds'])}"
    lines.append(summary)
    for bid, workers in sorted(merged.duplicates.items()):
        lines.append(
            f"note: business {bid} is reported by {', '.join(workers)} (a rebalance"
            f" in progress?); shown from {workers[0]}"
        )
    if merged.unanswered:
        lines.append("note: businesses of workers that did not answer are missing")
    return lines


# -- one business ------------------------------------------------------------------------


@dataclasses.dataclass
class Found:
    """One business as the workers know it."""

    business_id: str
    lead_id: str | None
    replies: list[Reply]
    worker: str | None = None
    business: dict | None = None
    lead: dict | None = None
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


def format_one(found: Found) -> list[str]:
    lines = []
    if len(found.replies) > 1:
        lines.append(workers_line(found.replies))
    if not found.found:
        answered = [r.worker for r in found.replies if r.state == "ok"]
        missing = [r for r in found.replies if r.state != "ok"]
        line = (
            f"business {found.business_id}: not found on"
            f" {'the worker' if len(answered) == 1 else f'any of the {len(answered)} workers'}"
            f" that answered ({', '.join(answered)})"
        )
        if missing:
            line += "; it may be on one that did not: " + "; ".join(
                r.describe() for r in missing
            )
        return lines + [line]
    lines.append(
        business_line(
            {**found.business, "worker": found.worker if len(found.replies) > 1 else None}
        )
    )
    lines.extend(active_lines(found.business))
    if found.lead_id:
        lines.extend(
            lead_lines(found.business_id, found.lead_id, found.lead, found.business)
        )
    if found.also_on:
        lines.append(
            f"note: also reported by {', '.join(found.also_on)} (a rebalance in"
            f" progress?); shown from {found.worker}"
        )
    return lines


# -- JSON --------------------------------------------------------------------------------


def workers_json(replies: Sequence[Reply], counts: dict[str, int] | None = None) -> list:
    out = []
    for reply in replies:
        item: dict[str, Any] = {"worker": reply.worker, "state": reply.state}
        if reply.state != "ok":
            item["error"] = reply.error or (
                "restoring its table" if reply.code == 503 else f"HTTP {reply.code}"
            )
        elif counts is not None:
            item["businesses"] = counts.get(reply.worker, 0)
        out.append(item)
    return out


def all_json(merged: Merged, at: float) -> dict:
    counts: dict[str, int] = {}
    for business in merged.businesses.values():
        counts[business["worker"]] = counts.get(business["worker"], 0) + 1
    return {
        "at": to_iso(at),
        "workers": workers_json(merged.replies, counts),
        "businesses": [
            merged.businesses[bid] for bid in sorted(merged.businesses, key=natural_key)
        ],
        "totals": totals(merged.businesses.values()),
        "duplicates": merged.duplicates,
    }


def one_json(found: Found, at: float) -> dict:
    out: dict[str, Any] = {
        "at": to_iso(at),
        "workers": workers_json(found.replies),
        "business_id": found.business_id,
        "found": found.found,
        "worker": found.worker,
        "business": found.business,
    }
    if found.lead_id:
        out["lead_id"] = found.lead_id
        out["lead"] = found.lead
    if found.also_on:
        out["also_on"] = found.also_on
    return out


# -- the command --------------------------------------------------------------------------


def run_status(
    workers: Sequence[str],
    business_id: str | None = None,
    lead_id: str | None = None,
    as_json: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    out=None,
    get: Callable[[str, str, float], Reply] = fetch,
) -> int:
    """`streams status`; 0, 1 (the business, or the lead, is not found), StatusError
    when no worker answered."""
    out = out or sys.stdout
    if lead_id and not business_id:
        raise StatusError("--lead needs the BUSINESS it belongs to")
    if business_id is None:
        merged = merge_businesses(ask(workers, "/businesses/", timeout, get))
        require_an_answer(merged.replies)
        lines = None if as_json else format_all(merged)
        document = all_json(merged, time.time()) if as_json else None
        code = 0
    else:
        replies = ask(workers, business_path(business_id, lead_id), timeout, get)
        require_an_answer(replies)
        found = find_business(replies, business_id, lead_id)
        lines = None if as_json else format_one(found)
        document = one_json(found, time.time()) if as_json else None
        code = 0 if found.found and (not lead_id or found.lead is not None) else 1
    if as_json:
        print(json.dumps(document), file=out, flush=True)
    else:
        print("\n".join(lines), file=out, flush=True)
    return code
