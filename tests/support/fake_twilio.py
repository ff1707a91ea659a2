"""A fake Twilio REST API (the Calls resource) for tests driving the real `twilio` library.

Point a client at it with ``client.api.base_url = fake.base_url`` (and ``TWILIO_EDGE`` /
``TWILIO_REGION`` unset, or the library rewrites the host). It speaks the 2010-04-01 API:

* ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` creates a call (201, status
  ``queued``), or answers Twilio's JSON error body: 401/20003 for bad basic auth,
  400/21201, 21213, 21205 for a missing To, From, Url (or Twiml), 400/21211 for a number in
  ``rejected_numbers``, and whatever ``fail_next`` injected (default 429/20429).
* ``GET .../Calls/{CallSid}.json`` fetches a call with its current true status (404/20404).
* ``GET .../Calls.json`` lists calls, newest first, filtered on To, From, Status,
  StartTime, StartTime>, StartTime<, EndTime, EndTime>, EndTime< and paged with PageSize
  and Page in Twilio's envelope (``calls``, ``page``, ``page_size``, ``next_page_uri``...).
* ``POST .../Calls/{CallSid}.json`` with ``Status=canceled|completed`` hangs up a call
  (an extra: ``canceled`` ends a queued or ringing call, ``completed`` any live call).

Each call then lives on the fake's clock: initiated (+10 ms), ringing (+50 ms), then after
a ring time drawn from ``ring_seconds`` either answered (``in-progress``) and completed
after a talk time drawn from ``talk_seconds`` (capped by ``TimeLimit``), or ended
``no-answer``/``busy``/``failed``. A ring time reaching ``Timeout`` ends the call
``no-answer`` at ``Timeout``. A call is *live* from the moment its create request is
accepted until its end moment, which is recorded before its final callback is sent.

Status callbacks go to ``StatusCallback`` for the requested ``StatusCallbackEvent`` values
(only ``completed`` when none is given), form-encoded and signed with
``X-Twilio-Signature`` over the exact URL called, from worker threads so that no REST
request ever waits on a callback. One call's callbacks are sent one at a time, in order,
unless ``reorder_ratio`` delays one. Terminal callbacks carry ``CallDuration`` and
``SipResponseCode``, never ``ErrorCode``.

As unkind as Twilio, each behaviour as Twilio documents it:

* **Webhook retries**: Twilio's defaults are a 5 s connect timeout, a 15 s read timeout
  and total time, one retry, and a retry policy of ``ct``: only a connection that could
  not be made is retried; a 5xx answer or a slow one is not (Connection Overrides,
  https://www.twilio.com/docs/usage/webhooks/webhooks-connection-overrides). So a
  callback gets ``CALLBACK_ATTEMPTS`` = 2 attempts, the second only after a failed
  connection.
* **Eventually consistent reads**: "Reading a call (fetch, list) is eventually consistent",
  with no bound documented; ``consistency_lag`` (seconds, drawn per call) hides a new call
  from list and fetch (404) for that long.
* **5xx that did create the call**: ``POST /Calls`` takes no idempotency key (the API
  reference names none) and a 5xx says nothing about what happened; with
  ``server_error_after_create_ratio`` a create makes the call and answers 500/20500.
* **Connections that hang**: ``hang_ratio`` (or ``hang_next``) accepts a request and never
  answers it (a hung create may have made its call); such a connection is closed only by
  ``release_hung()`` or ``stop()``. The ``twilio`` library's async client does not apply
  its own timeout (twilio-python issue 925).
* **CPS queueing**: "Calls beyond your account's CPS limit will be queued and will execute
  at the CPS rate" (Twilio help article 223180028): with ``cps`` set, a create is
  accepted at once, waits ``queued`` and starts at the next free slot of the account's
  rate; the answer's ``queue_time`` says how long (milliseconds, as the Call resource's
  ``queue_time``). ``Status=canceled`` ends a call still queued.
* **Account-level errors**: ``refuse_creates(status, code)`` answers every create with an
  error about the account until ``accept_creates()`` (e.g. 401/20003 after a rotated auth
  token, 400/21210 for a From that is not the account's,
  https://www.twilio.com/docs/api/errors/21210); ``rejected_numbers`` maps a number to
  the per-destination error its creates get (21211 by default).

The ``StatusCallback`` URL's ``business_id`` and ``dial_id`` query parameters attribute a
call to a business (``"unknown"`` without them). The fake keeps the truth for tests:
``peak_live_by_business()`` counts overlapping live calls per business from each call's
creation and end moments.

Everything drawn at random for a call (its SID, ring and talk time, outcome, the fate of
its callbacks) comes from a generator seeded with ``seed`` and the call's identity
(dial_id, To, business and how many calls with that identity came before), so a run is
reproducible whatever order concurrent creates arrive in.
"""

from __future__ import annotations

import base64
import collections
import concurrent.futures
import dataclasses
import datetime
import email.utils
import functools
import hashlib
import heapq
import http.client
import itertools
import json
import logging
import math
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from twilio.request_validator import RequestValidator

from streams.dialers.simulated.ledger import peak_concurrency

log = logging.getLogger("tests.support.fake_twilio")

API_VERSION = "2010-04-01"
#: Delays from the create's acceptance to ``initiated`` and to ``ringing``.
INITIATED_AFTER = 0.01
RINGING_AFTER = 0.05
#: StatusCallbackEvent -> CallStatus sent (``completed`` sends the terminal status).
EVENTS = ("initiated", "ringing", "answered", "completed")
EVENT_STATUS = {"initiated": "initiated", "ringing": "ringing", "answered": "in-progress"}
TERMINAL = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
#: Relative weights of the final status of an unanswered call.
UNANSWERED = (("no-answer", 6), ("busy", 3), ("failed", 1))
#: SipResponseCode of each terminal status's final callback; a failed call draws one.
SIP_RESPONSE_CODES = {"completed": 200, "busy": 486, "no-answer": 487, "canceled": 487}
FAILED_SIP_CODES = (404, 480, 503)
#: Twilio's default webhook delivery: attempts in all (the second only after a failed
#: connection), the pause before it, the connect and the read timeout.
CALLBACK_ATTEMPTS = 2
CALLBACK_BACKOFF = 0.1
CALLBACK_CONNECT_TIMEOUT = 5.0
CALLBACK_TIMEOUT = 15.0
#: A reordered callback is held back this long; a duplicate follows its original by this.
REORDER_DELAY = (0.3, 1.0)
DUPLICATE_DELAY = (0.0, 0.1)
DEFAULT_TIMEOUT = 60.0
MAX_TIMEOUT = 600.0
DEFAULT_TIME_LIMIT = 4 * 3600.0
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

ERROR_MESSAGES = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "An internal server error has occurred",
    21210: "The source phone number provided is not yet verified for your account.",
    20503: "Service Unavailable",
}

_PATH = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Calls(?:/([^/]+?))?\.json$")


def rfc2822(epoch: float | None) -> str | None:
    """Twilio's date format: ``Tue, 31 Aug 2010 20:36:28 +0000``."""
    if epoch is None:
        return None
    return email.utils.format_datetime(
        datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
    )


class TwilioError(Exception):
    """An error answer: HTTP status plus Twilio's error code and message."""

    def __init__(self, status: int, code: int, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


@dataclasses.dataclass(eq=False)
class _Call:
    sid: str
    account_sid: str
    to: str
    from_: str
    business_id: str
    dial_id: str | None
    created_at: float
    timeout: float
    time_limit: float
    callback_url: str | None
    callback_method: str
    events: tuple[str, ...]
    voice: dict  # the Url or Twiml it was created with
    rng: random.Random
    # the script drawn at creation
    ring: float
    talk: float | None  # None: never answered
    final: str
    # what happened
    visible_at: float = 0.0  # list and fetch show the call from then on
    start_at: float = 0.0  # when it leaves the CPS queue
    sip_code: int = 404  # its SipResponseCode should it fail
    status: str = "queued"
    updated_at: float = 0.0
    started_at: float | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    next_seq: int = 0
    outbox: collections.deque = dataclasses.field(default_factory=collections.deque)
    in_flight: bool = False


@dataclasses.dataclass(eq=False)
class _Callback:
    call: _Call
    seq: int
    status: str
    params: dict
    url: str
    method: str
    signature: str
    token: str
    copy: str = "original"  # or "duplicate"
    delayed: bool = False
    attempts: int = 0
    outcome: str | None = None  # delivered | dropped | rejected | gave-up | stopped
    http_status: int | None = None
    sent_at: list = dataclasses.field(default_factory=list)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, fake: FakeTwilio):
        self.fake = fake
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stall
    server: _Server

    def do_GET(self) -> None:
        self.server.fake._handle(self, "GET")

    def do_POST(self) -> None:
        self.server.fake._handle(self, "POST")

    def do_DELETE(self) -> None:
        self.server.fake._handle(self, "DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeTwilio:
    """See the module docstring. Thread-safe; observations return copies."""

    def __init__(
        self,
        *,
        account_sid: str = "AC" + "0" * 32,
        auth_token: str = "test-token",
        seed: int = 0,
        ring_seconds=(0.1, 0.5),
        talk_seconds=(0.5, 2.0),
        answer_ratio: float = 0.8,
        duplicate_ratio: float = 0.0,
        reorder_ratio: float = 0.0,
        drop_ratio: float = 0.0,
        rejected_numbers: Collection[str] | Mapping[str, int] = frozenset(),
        consistency_lag: tuple[float, float] = (0.0, 0.0),
        server_error_after_create_ratio: float = 0.0,
        hang_ratio: float = 0.0,
        cps: float | None = None,
    ):
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.seed = seed
        self.ring_seconds = tuple(ring_seconds)
        self.talk_seconds = tuple(talk_seconds)
        self.answer_ratio = answer_ratio
        self.duplicate_ratio = duplicate_ratio
        self.reorder_ratio = reorder_ratio
        self.drop_ratio = drop_ratio
        self.rejected_numbers = rejected_numbers
        self.consistency_lag = tuple(consistency_lag)
        self.server_error_after_create_ratio = server_error_after_create_ratio
        self.hang_ratio = hang_ratio
        self.cps = cps
        self._validator = RequestValidator(auth_token)
        self._request_rng = random.Random(f"{seed}|requests")
        self._hang_queue: collections.deque[bool] = collections.deque()
        self._released = threading.Event()
        self._refusal: tuple[int, int] | None = None
        self._next_start = 0.0
        self._hung = 0

        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._calls: dict[str, _Call] = {}
        self._identities: collections.Counter = collections.Counter()
        self._create_requests: list[dict] = []
        self._create_times: list[float] = []  # monotonic, for the sliding window
        self._requests: list[dict] = []
        self._callbacks: list[_Callback] = []
        self._fail_queue: collections.deque = collections.deque()
        self._drop_all = False
        self._live: collections.Counter[str] = collections.Counter()
        self._pending = 0

        self._timer_cond = threading.Condition()
        self._timers: list = []
        self._timer_seq = itertools.count()
        self._stopping = False
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    # ---------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeTwilio.base_url is known only after start()")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeTwilio:
        if self._server is not None:
            return self
        self._stopping = False
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=32, thread_name_prefix="fake-twilio-callback"
        )
        self._server = _Server(self)
        server = self._server
        for name, target in (
            ("fake-twilio-http", lambda: server.serve_forever(poll_interval=0.05)),
            ("fake-twilio-clock", self._run_timers),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        with self._timer_cond:
            self._stopping = True
            self._timer_cond.notify_all()
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            self._timers.clear()
            self._idle.notify_all()
        self._server = None

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- controls

    def fail_next(self, count: int, status: int = 429, code: int = 20429) -> None:
        """The next ``count`` create requests (after auth) answer this error."""
        with self._lock:
            self._fail_queue.extend([(status, code)] * count)

    def hang_next(self, count: int, creates_call: bool = False) -> None:
        """The next ``count`` requests (any kind) are accepted and never answered; a hung
        create makes its call when ``creates_call``."""
        with self._lock:
            self._hang_queue.extend([creates_call] * count)

    def release_hung(self) -> None:
        """Close every hung connection (without an answer); later ones hang anew."""
        self._released.set()
        self._released = threading.Event()

    def hung_requests(self) -> int:
        """Requests accepted and never answered so far."""
        with self._lock:
            return self._hung

    def refuse_creates(self, status: int, code: int) -> None:
        """Every create answers this error about the account until `accept_creates`."""
        with self._lock:
            self._refusal = (status, code)

    def accept_creates(self) -> None:
        with self._lock:
            self._refusal = None

    def requests(self) -> list[dict]:
        """Every REST request: ``{"method", "path", "query", "form", "at"}``, the query
        and form as lists of (name, value) pairs in the order sent."""
        with self._lock:
            return [dict(r) for r in self._requests]

    def drop_callbacks(self, enabled: bool) -> None:
        """While enabled, every status callback about to be sent is lost instead."""
        with self._lock:
            self._drop_all = enabled

    # ---------------------------------------------------------------- observations

    def create_requests(self) -> list[dict]:
        """Every POST to Calls.json, rejected ones included: ``{"at", "params",
        "http_status"}``.

        ``params`` maps each form field to its string value; a repeated field (such as
        ``StatusCallbackEvent``) maps to the list of its values.
        """
        with self._lock:
            return [
                {
                    "at": r["at"],
                    "params": dict(r["params"]),
                    "http_status": r["http_status"],
                }
                for r in self._create_requests
            ]

    def calls(self) -> list[dict]:
        """Every call created, in creation order, as the fake knows it now."""
        with self._lock:
            return [self._call_view(c) for c in self._calls.values()]

    def callbacks(self) -> list[dict]:
        """Every status callback scheduled (an extra, for tests of the fake itself)."""
        with self._lock:
            return [
                {
                    "sid": cb.call.sid,
                    "seq": cb.seq,
                    "status": cb.status,
                    "copy": cb.copy,
                    "delayed": cb.delayed,
                    "attempts": cb.attempts,
                    "outcome": cb.outcome,
                    "http_status": cb.http_status,
                    "sent_at": list(cb.sent_at),
                    "url": cb.url,
                    "params": dict(cb.params),
                }
                for cb in self._callbacks
            ]

    def peak_live_by_business(self) -> dict[str, int]:
        """Most calls live at once per business, each call live from its creation to its
        end moment."""
        with self._lock:
            spans = [
                (c.business_id, c.created_at, c.ended_at) for c in self._calls.values()
            ]
        return peak_concurrency(spans)

    def live_by_business(self) -> dict[str, int]:
        with self._lock:
            return {b: n for b, n in self._live.items() if n > 0}

    def max_creates_in_any_second(self) -> int:
        """Most create requests (accepted or not) inside any sliding 1-second window."""
        with self._lock:
            times = sorted(self._create_times)
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] >= 1.0:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no call is live and no callback is pending; False on timeout."""
        with self._idle:
            return self._idle.wait_for(
                lambda: self._pending == 0 and not any(self._live.values()), timeout
            )

    # ---------------------------------------------------------------- HTTP

    def _handle(self, req: _Handler, method: str) -> None:
        split = urllib.parse.urlsplit(req.path)
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length).decode("utf-8") if length else ""
        form = urllib.parse.parse_qs(body, keep_blank_values=True)
        query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        match = _PATH.match(split.path)
        is_create = method == "POST" and match is not None and match.group(2) is None
        arrived, arrived_mono = time.time(), time.monotonic()
        after: Callable[[], None] | None = None
        with self._lock:
            self._requests.append(
                {
                    "method": method,
                    "path": split.path,
                    "query": urllib.parse.parse_qsl(split.query, keep_blank_values=True),
                    "form": urllib.parse.parse_qsl(body, keep_blank_values=True),
                    "at": arrived,
                }
            )
            if self._hang_queue:
                hang: bool | None = self._hang_queue.popleft()
            elif self._request_rng.random() < self.hang_ratio:
                hang = self._request_rng.random() < 0.5
            else:
                hang = None
        if hang is not None:
            self._hang(req, form, is_create and hang, arrived, arrived_mono)
            return
        try:
            if match is None:
                raise TwilioError(
                    404, 20404, f"The requested resource {split.path} was not found"
                )
            if not self._authorized(req.headers.get("Authorization")):
                raise TwilioError(401, 20003, ERROR_MESSAGES[20003])
            account, sid = match.groups()
            if account != self.account_sid:
                raise TwilioError(
                    404, 20404, f"The requested resource {split.path} was not found"
                )
            if is_create:
                status, payload, after = self._create(form)
                if payload.pop("_answer_500", False):
                    status = 500
                    payload = TwilioError(500, 20500, ERROR_MESSAGES[20500]).body()
            elif method == "POST":
                status, payload = 200, self._update(sid, form, split.path)
            elif method == "GET" and sid is None:
                status, payload = 200, self._list(query)
            elif method == "GET":
                status, payload = 200, self._fetch(sid, split.path)
            else:
                raise TwilioError(405, 20004, "Method not allowed")
        except TwilioError as error:
            status, payload = error.status, error.body()
        except Exception:  # a bug in the fake: answer like Twilio's 500, keep serving
            log.exception("fake twilio failed on %s %s", method, req.path)
            status, payload = 500, TwilioError(500, 20500, ERROR_MESSAGES[20500]).body()
        if is_create:
            with self._lock:
                self._create_requests.append(
                    {"at": arrived, "params": _flatten(form), "http_status": status}
                )
                self._create_times.append(arrived_mono)
        data = json.dumps(payload).encode("utf-8")
        try:
            req.send_response(status)
            req.send_header("Content-Type", "application/json; charset=utf-8")
            req.send_header("Content-Length", str(len(data)))
            req.send_header("Twilio-Request-Id", "RQ" + hashlib.md5(data).hexdigest())
            req.end_headers()
            req.wfile.write(data)
            req.wfile.flush()
        finally:
            if after is not None:
                after()  # the call's clock starts once its 201 is on the wire

    def _hang(
        self,
        req: _Handler,
        form: dict[str, list[str]],
        creates_call: bool,
        arrived: float,
        arrived_mono: float,
    ) -> None:
        """Accept the request, maybe make its call, and never answer."""
        with self._lock:
            self._hung += 1
            released = self._released
        if creates_call and self._authorized(req.headers.get("Authorization")):
            try:
                _, _, start = self._create(form)
                start()
            except TwilioError:
                pass
        if form or creates_call:
            with self._lock:
                self._create_requests.append(
                    {"at": arrived, "params": _flatten(form), "http_status": None}
                )
                self._create_times.append(arrived_mono)
        released.wait()
        req.close_connection = True

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except Exception:
            return False
        return user == self.account_sid and password == self.auth_token

    # ---------------------------------------------------------------- resources

    def _create(self, form: dict[str, list[str]]):
        def one(name: str) -> str | None:
            return _last(form, name)

        with self._lock:
            if self._fail_queue:
                status, code = self._fail_queue.popleft()
                raise TwilioError(
                    status, code, ERROR_MESSAGES.get(code, f"Injected error {code}")
                )
            if self._refusal is not None:
                status, code = self._refusal
                raise TwilioError(
                    status, code, ERROR_MESSAGES.get(code, f"Account error {code}")
                )
        to, from_ = one("To"), one("From")
        if not to:
            raise TwilioError(400, 21201, "No 'To' number is specified")
        if not from_:
            raise TwilioError(400, 21213, "No 'From' number is specified")
        if not (one("Url") or one("Twiml") or one("ApplicationSid")):
            raise TwilioError(400, 21205, "Url parameter is required.")
        if to in self.rejected_numbers:
            code = (
                self.rejected_numbers[to]
                if isinstance(self.rejected_numbers, Mapping)
                else 21211
            )
            raise TwilioError(
                400, code, f"The 'To' number {to} is not a valid phone number."
            )
        timeout = min(_number(one("Timeout"), "Timeout", DEFAULT_TIMEOUT), MAX_TIMEOUT)
        time_limit = _number(one("TimeLimit"), "TimeLimit", DEFAULT_TIME_LIMIT)
        callback_url = one("StatusCallback") or None
        method = (one("StatusCallbackMethod") or "POST").upper()
        if method not in ("GET", "POST"):
            raise TwilioError(
                400, 21200, f"StatusCallbackMethod {method} is not GET or POST"
            )
        events: list[str] = []
        for value in form.get("StatusCallbackEvent", []):
            events.extend(e.lower() for e in value.replace(",", " ").split())
        if callback_url is None:
            events = []
        elif not events:
            events = ["completed"]
        business_id, dial_id = "unknown", None
        if callback_url:
            parts = urllib.parse.urlsplit(callback_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise TwilioError(
                    400, 21205, f"StatusCallback {callback_url} is not a valid URL"
                )
            cbq = urllib.parse.parse_qs(parts.query)
            business_id = (cbq.get("business_id") or ["unknown"])[0] or "unknown"
            dial_id = _last(cbq, "dial_id") or None

        with self._lock:
            identity = f"{self.seed}|{dial_id or ''}|{to}|{business_id}"
            nth = self._identities[identity]
            self._identities[identity] += 1
            rng = random.Random(f"{identity}|{nth}")
            sid = "CA" + hashlib.sha256(f"{identity}|{nth}".encode()).hexdigest()[:32]
            while sid in self._calls:  # only if someone reused seeds oddly
                sid = f"CA{rng.getrandbits(128):032x}"
            # Always draw the same number of values, so one ratio never shifts the others.
            ring = rng.uniform(*self.ring_seconds)
            answered = rng.random() < self.answer_ratio
            talk = rng.uniform(*self.talk_seconds)
            unanswered = rng.choices(
                [s for s, _ in UNANSWERED], [w for _, w in UNANSWERED]
            )[0]
            if answered and ring < timeout:
                final, talk_or_none = "completed", min(talk, time_limit)
            elif answered or unanswered == "no-answer":
                final, talk_or_none, ring = "no-answer", None, min(ring, timeout)
            else:
                final, talk_or_none, ring = unanswered, None, min(ring, timeout)
            now = time.time()
            # A second generator for the unkind fates, so the call's script stays put.
            fate = random.Random(f"{identity}|{nth}|fate")
            visible_at = now + fate.uniform(*self.consistency_lag)
            answer_500 = fate.random() < self.server_error_after_create_ratio
            sip_code = fate.choice(FAILED_SIP_CODES)
            start_at = now
            if self.cps:
                start_at = max(now, self._next_start)
                self._next_start = start_at + 1.0 / self.cps
            call = _Call(
                sid=sid,
                account_sid=self.account_sid,
                to=to,
                from_=from_,
                business_id=business_id,
                dial_id=dial_id,
                created_at=now,
                timeout=timeout,
                time_limit=time_limit,
                callback_url=callback_url,
                callback_method=method,
                events=tuple(e for e in EVENTS if e in events),
                voice={k: one(k) for k in ("Url", "Twiml") if one(k)},
                rng=rng,
                ring=ring,
                talk=talk_or_none,
                final=final,
                updated_at=now,
                visible_at=visible_at,
                start_at=start_at,
                sip_code=sip_code,
            )
            self._calls[sid] = call
            self._live[business_id] += 1
            payload = self._resource(call)
            payload["_answer_500"] = answer_500
        return 201, payload, lambda: self._start_clock(call)

    def _fetch(self, sid: str, path: str) -> dict:
        with self._lock:
            call = self._calls.get(sid)
            if call is None or call.visible_at > time.time():
                raise TwilioError(
                    404, 20404, f"The requested resource {path} was not found"
                )
            return self._resource(call)

    def _update(self, sid: str, form: dict[str, list[str]], path: str) -> dict:
        with self._lock:
            call = self._calls.get(sid)
            if call is None:
                raise TwilioError(
                    404, 20404, f"The requested resource {path} was not found"
                )
            wanted = _last(form, "Status")
            if wanted not in (None, "canceled", "completed"):
                raise TwilioError(400, 21218, f"Invalid Status {wanted}")
            if call.ended_at is None:
                if call.status == "queued" and call.started_at is None and wanted:
                    self._end(call, "canceled")
                elif call.status in ("queued", "ringing") and wanted in (
                    "canceled",
                    "completed",
                ):
                    self._end(call, "canceled")
                elif call.status == "in-progress" and wanted == "completed":
                    self._end(call, "completed")
            return self._resource(call)

    def _list(self, query: dict[str, list[str]]) -> dict:
        def one(name: str) -> str | None:
            return _last(query, name)

        page_size = min(
            int(_number(one("PageSize"), "PageSize", DEFAULT_PAGE_SIZE)), MAX_PAGE_SIZE
        )
        page = int(_number(one("Page"), "Page", 0))
        if page_size < 1 or page < 0:
            raise TwilioError(400, 20001, "Invalid paging parameters")
        tests: list[Callable[[_Call], bool]] = []
        for field, attr in (("To", "to"), ("From", "from_"), ("Status", "status")):
            wanted = one(field)
            if wanted:
                tests.append(_attribute_is(attr, wanted))
        if one("ParentCallSid"):
            tests.append(lambda c: False)  # the fake never makes child legs
        for field, when in (
            ("StartTime", lambda c: c.started_at or c.created_at),
            ("EndTime", lambda c: c.ended_at),
        ):
            for suffix in ("", ">", "<"):
                raw = one(field + suffix)
                if raw:
                    tests.append(_time_filter(field + suffix, raw, suffix, when))
        with self._lock:
            now = time.time()
            chosen = [
                c
                for c in self._calls.values()
                if c.visible_at <= now and all(t(c) for t in tests)
            ]
            chosen.sort(key=lambda c: (c.created_at, c.sid), reverse=True)
            start = page * page_size
            records = [self._resource(c) for c in chosen[start : start + page_size]]
        base = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls.json"
        filters = [
            (k, v[-1])
            for k, v in query.items()
            if k not in ("Page", "PageSize", "PageToken")
        ]

        def uri(p: int) -> str:
            return (
                base
                + "?"
                + urllib.parse.urlencode(filters + [("PageSize", page_size), ("Page", p)])
            )

        more = start + page_size < len(chosen)
        return {
            "calls": records,
            "end": start + max(len(records) - 1, 0),
            "first_page_uri": uri(0),
            "next_page_uri": uri(page + 1) if more else None,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": uri(page - 1) if page > 0 else None,
            "start": start,
            "uri": uri(page),
        }

    def _resource(self, call: _Call) -> dict:
        base = f"/{API_VERSION}/Accounts/{call.account_sid}/Calls/{call.sid}"
        duration = None
        if call.ended_at is not None:
            duration = str(
                _seconds(call.ended_at - call.answered_at) if call.answered_at else 0
            )
        return {
            "account_sid": call.account_sid,
            "annotation": None,
            "answered_by": None,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": rfc2822(call.created_at),
            "date_updated": rfc2822(call.updated_at),
            "direction": "outbound-api",
            "duration": duration,
            "end_time": rfc2822(call.ended_at),
            "forwarded_from": None,
            "from": call.from_,
            "from_formatted": call.from_,
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": "PN" + hashlib.md5(call.from_.encode()).hexdigest(),
            "price": None,
            "price_unit": "USD",
            "queue_time": str(round(max(0.0, call.start_at - call.created_at) * 1000)),
            "sid": call.sid,
            "start_time": rfc2822(call.started_at),
            "status": call.status,
            "subresource_uris": {
                name: f"{base}/{name}.json"
                for name in (
                    "notifications",
                    "recordings",
                    "payments",
                    "events",
                    "siprec",
                    "streams",
                    "transcriptions",
                    "user_defined_message_subscriptions",
                    "user_defined_messages",
                )
            },
            "to": call.to,
            "to_formatted": call.to,
            "trunk_sid": None,
            "uri": base + ".json",
        }

    @staticmethod
    def _call_view(call: _Call) -> dict:
        return {
            "sid": call.sid,
            "to": call.to,
            "from": call.from_,
            "status": call.status,
            "business_id": call.business_id,
            "dial_id": call.dial_id,
            "created_at": call.created_at,
            "answered_at": call.answered_at,
            "ended_at": call.ended_at,
            "started_at": call.started_at,
            "timeout": call.timeout,
            "time_limit": call.time_limit,
            "status_callback": call.callback_url,
            "events": list(call.events),
            "voice": dict(call.voice),
        }

    # ---------------------------------------------------------------- the call's clock

    def _start_clock(self, call: _Call) -> None:
        queued = max(0.0, call.start_at - time.time())
        self._after(queued + INITIATED_AFTER, lambda: self._initiated(call))
        self._after(queued + RINGING_AFTER, lambda: self._ringing(call))
        self._after(queued + RINGING_AFTER + call.ring, lambda: self._rung(call))

    def _initiated(self, call: _Call) -> None:
        with self._lock:
            if call.ended_at is None:
                call.started_at = call.updated_at = time.time()
                self._emit(call, "initiated", call.started_at)

    def _ringing(self, call: _Call) -> None:
        with self._lock:
            if call.ended_at is None:
                call.status, call.updated_at = "ringing", time.time()
                self._emit(call, "ringing", call.updated_at)

    def _rung(self, call: _Call) -> None:
        with self._lock:
            if call.ended_at is not None:
                return
            if call.talk is None:
                self._end(call, call.final)
                return
            call.status, call.answered_at = "in-progress", time.time()
            call.updated_at = call.answered_at
            self._emit(call, "answered", call.answered_at)
        self._after(call.talk, lambda: self._hang_up(call))

    def _hang_up(self, call: _Call) -> None:
        with self._lock:
            if call.ended_at is None:
                self._end(call, "completed")

    def _end(self, call: _Call, status: str) -> None:
        """The end moment: not live any more, then the final callback. Holds the lock."""
        now = time.time()
        if call.started_at is None:
            call.started_at = now
        call.status, call.ended_at, call.updated_at = status, now, now
        self._live[call.business_id] -= 1
        self._emit(call, "completed", now)
        self._idle.notify_all()

    # ---------------------------------------------------------------- callbacks

    def _emit(self, call: _Call, event: str, at: float) -> None:
        """Schedule the callback for ``event`` if the call asked for it. Holds the lock."""
        if event not in call.events or not call.callback_url:
            return
        status = EVENT_STATUS.get(event, call.status)
        seq = call.next_seq
        call.next_seq += 1
        params = {
            "AccountSid": call.account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": call.sid,
            "CallStatus": status,
            "Called": call.to,
            "Caller": call.from_,
            "CallbackSource": "call-progress-events",
            "Direction": "outbound-api",
            "From": call.from_,
            "SequenceNumber": str(seq),
            "Timestamp": rfc2822(at),
            "To": call.to,
        }
        if status in TERMINAL:
            seconds = _seconds(at - call.answered_at) if call.answered_at else 0
            params["CallDuration"] = str(seconds)
            params["Duration"] = str(math.ceil(seconds / 60))
            params["SipResponseCode"] = str(SIP_RESPONSE_CODES.get(status, call.sip_code))
        if call.callback_method == "GET":
            sep = "&" if urllib.parse.urlsplit(call.callback_url).query else "?"
            url, body_params = call.callback_url + sep + urllib.parse.urlencode(params), {}
        else:
            url, body_params = call.callback_url, params
        signature = self._validator.compute_signature(url, body_params)
        token = f"{call.sid}-{seq}-{hashlib.md5(url.encode()).hexdigest()[:8]}"
        # Always draw five values, so the fates stay put when one ratio changes.
        rng = call.rng
        u_drop, u_dup, u_reorder = rng.random(), rng.random(), rng.random()
        reorder_delay, dup_delay = (
            rng.uniform(*REORDER_DELAY),
            rng.uniform(*DUPLICATE_DELAY),
        )
        original = _Callback(
            call=call,
            seq=seq,
            status=status,
            params=params,
            url=url,
            method=call.callback_method,
            signature=signature,
            token=token,
        )
        self._callbacks.append(original)
        if u_drop < self.drop_ratio:
            original.outcome = "dropped"
            return
        delay = 0.0
        if u_reorder < self.reorder_ratio:
            original.delayed, delay = True, reorder_delay
        copies = [(original, delay)]
        if u_dup < self.duplicate_ratio:
            duplicate = dataclasses.replace(original, copy="duplicate", sent_at=[])
            self._callbacks.append(duplicate)
            copies.append((duplicate, delay + dup_delay))
        for callback, after in copies:
            self._pending += 1
            if after > 0:
                self._after(after, functools.partial(self._due, callback))
            else:
                self._due(callback)

    def _due(self, callback: _Callback) -> None:
        with self._lock:
            call = callback.call
            call.outbox.append(callback)
            if not call.in_flight:
                self._pump(call)

    def _pump(self, call: _Call) -> None:
        """Send the call's next waiting callback. Holds the lock."""
        if call.in_flight or not call.outbox or self._pool is None:
            return
        call.in_flight = True
        callback = call.outbox.popleft()
        try:
            self._pool.submit(self._deliver, callback)
        except RuntimeError:  # pool shut down: the fake is stopping
            self._finish(callback, "stopped")

    def _deliver(self, callback: _Callback) -> None:
        with self._lock:
            if self._stopping:
                self._finish(callback, "stopped")
                return
            if self._drop_all:
                self._finish(callback, "dropped")
                return
            callback.attempts += 1
            callback.sent_at.append(time.time())
        status = _post(callback)
        with self._lock:
            callback.http_status = status if isinstance(status, int) else None
            if isinstance(status, int) and status < 400:
                self._finish(callback, "delivered")
            elif isinstance(status, int) and status < 500:
                self._finish(callback, "rejected")
            elif (
                status != NOT_CONNECTED
                or callback.attempts >= CALLBACK_ATTEMPTS
                or self._stopping
            ):
                self._finish(callback, "gave-up")  # a 5xx or a slow answer: no retry
            else:
                self._after(CALLBACK_BACKOFF, lambda: self._resubmit(callback))

    def _resubmit(self, callback: _Callback) -> None:
        with self._lock:
            try:
                if self._pool is None:
                    raise RuntimeError
                self._pool.submit(self._deliver, callback)
            except RuntimeError:
                self._finish(callback, "stopped")

    def _finish(self, callback: _Callback, outcome: str) -> None:
        """A callback is done with (sent, refused or lost). Holds the lock."""
        callback.outcome = outcome
        self._pending -= 1
        call = callback.call
        call.in_flight = False
        if not self._stopping:
            self._pump(call)
        self._idle.notify_all()

    # ---------------------------------------------------------------- timers

    def _after(self, delay: float, action: Callable[[], None]) -> None:
        with self._timer_cond:
            if self._stopping:
                return
            heapq.heappush(
                self._timers, (time.monotonic() + delay, next(self._timer_seq), action)
            )
            self._timer_cond.notify()

    def _run_timers(self) -> None:
        while True:
            with self._timer_cond:
                while not self._stopping:
                    now = time.monotonic()
                    if self._timers and self._timers[0][0] <= now:
                        break
                    self._timer_cond.wait(
                        self._timers[0][0] - now if self._timers else None
                    )
                if self._stopping:
                    return
                _, _, action = heapq.heappop(self._timers)
            try:
                action()
            except Exception:
                log.exception("fake twilio timer action failed")


#: What `_post` says when no connection could be made (the only failure Twilio retries).
NOT_CONNECTED = "not-connected"


def _post(callback: _Callback) -> int | str | None:
    """One delivery attempt: the HTTP status; `NOT_CONNECTED` when no connection could
    be made; None when the connection was made but no answer came in time."""
    parts = urllib.parse.urlsplit(callback.url)
    connection_class = (
        http.client.HTTPSConnection
        if parts.scheme == "https"
        else http.client.HTTPConnection
    )
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    body = urllib.parse.urlencode(callback.params) if callback.method == "POST" else None
    headers = {
        "X-Twilio-Signature": callback.signature,
        "User-Agent": "TwilioProxy/1.1",
        "I-Twilio-Idempotency-Token": callback.token,
        "Connection": "close",
    }
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8"
    connection = connection_class(
        parts.hostname or "", parts.port, timeout=CALLBACK_CONNECT_TIMEOUT
    )
    try:
        connection.connect()
    except OSError:
        connection.close()
        return NOT_CONNECTED
    try:
        if connection.sock is not None:
            connection.sock.settimeout(CALLBACK_TIMEOUT)
        connection.request(callback.method, target, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def _last(form: dict[str, list[str]], name: str) -> str | None:
    """A form field's last value (Twilio takes the last of a repeated scalar)."""
    values = form.get(name)
    return values[-1] if values else None


def _attribute_is(attr: str, value: str) -> Callable[[_Call], bool]:
    return lambda call: getattr(call, attr) == value


def _flatten(form: dict[str, list[str]]) -> dict:
    flat: dict[str, Any] = {}
    for key, values in form.items():
        flat[key] = (
            list(values) if len(values) > 1 or key == "StatusCallbackEvent" else values[0]
        )
    return flat


def _number(raw: str | None, name: str, default: float) -> float:
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise TwilioError(400, 20001, f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise TwilioError(400, 20001, f"{name} must be a positive number, got {raw!r}")
    return value


def _seconds(elapsed: float) -> int:
    """Twilio bills and reports whole seconds, rounded up."""
    return max(0, math.ceil(round(elapsed, 3)))


def _parse_when(raw: str, name: str) -> tuple[float, bool]:
    """``YYYY-MM-DD`` (a whole UTC day) or an ISO datetime; (epoch, is_date)."""
    text = raw.strip()
    try:
        if len(text) == 10:
            day = datetime.date.fromisoformat(text)
            return datetime.datetime(
                day.year, day.month, day.day, tzinfo=datetime.timezone.utc
            ).timestamp(), True
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TwilioError(400, 20001, f"{name} is not a date: {raw!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    # The library sends a date as midnight (``2024-05-01T00:00:00Z``): read it as the day.
    midnight = when.astimezone(datetime.timezone.utc).time() == datetime.time(0, 0)
    return when.timestamp(), midnight


def _time_filter(
    name: str, raw: str, suffix: str, when: Callable[[_Call], float | None]
) -> Callable[[_Call], bool]:
    """Twilio's date filters: ``X`` on that day, ``X>`` on or after, ``X<`` on or before."""
    start, is_date = _parse_when(raw, name)
    end = start + (86400.0 if is_date else 1.0)  # the day, or the second, named

    def test(call: _Call) -> bool:
        moment = when(call)
        if moment is None:
            return False
        if suffix == ">":
            return moment >= start
        if suffix == "<":
            return moment < end
        return start <= moment < end

    return test
