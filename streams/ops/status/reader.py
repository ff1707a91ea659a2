"""Asking the workers' web views over HTTP, every worker at once."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from streams.ops.status.model import Reply

#: Seconds to wait for one worker's answer.
DEFAULT_TIMEOUT = 3.0
#: Workers asked at once.
MAX_PARALLEL = 16

#: `get(worker, path, timeout)`: one GET as a Reply (tests give their own).
Get = Callable[[str, str, float], Reply]


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


def _reason(reason: object, timeout: float) -> str:
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
    get: Get = fetch,
) -> list[Reply]:
    """The same GET to every worker at once; replies in the workers' order."""
    if len(workers) == 1:
        return [get(workers[0], path, timeout)]
    with concurrent.futures.ThreadPoolExecutor(min(MAX_PARALLEL, len(workers))) as pool:
        return list(pool.map(lambda w: get(w, path, timeout), workers))
