"""The fake Twilio server, driven by the real `twilio` library (sync and async clients).

No Kafka: a fake, a client pointed at it, and a small HTTP receiver for status callbacks.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from tests.support.fake_twilio import CALLBACK_ATTEMPTS, FakeTwilio
from tests.support.waiting import eventually

SID = "AC" + "1" * 32
TOKEN = "secret-token"
FROM = "+14155550100"
ALL_EVENTS = ["initiated", "ringing", "answered", "completed"]
FAST = dict(ring_seconds=(0.05, 0.1), talk_seconds=(0.1, 0.2))


class Receiver:
    """Records every callback it gets; answers ``statuses`` in turn, then 204."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                params = dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
                with receiver.lock:
                    receiver.received.append(
                        {
                            "url": receiver.base_url + self.path,
                            "params": params,
                            "signature": self.headers.get("X-Twilio-Signature"),
                            "token": self.headers.get("I-Twilio-Idempotency-Token"),
                            "at": time.time(),
                        }
                    )
                    status = receiver.statuses.pop(0) if receiver.statuses else 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            # Twilio retries only a connection that failed: room for every one at once.
            request_queue_size = 128

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), daemon=True
        )
        self.thread.start()

    def url(self, business_id: str | None = "b1", dial_id: str | None = "d1") -> str:
        query = {k: v for k, v in (("dial_id", dial_id), ("business_id", business_id)) if v}
        return f"{self.base_url}/twilio/status?{urllib.parse.urlencode(query)}"

    def for_call(self, sid: str) -> list[dict]:
        with self.lock:
            return [
                r["params"] | {"_url": r["url"], "_sig": r["signature"], "_tok": r["token"]}
                for r in self.received
                if r["params"].get("CallSid") == sid
            ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def no_edge(monkeypatch):
    # With these set, the library rewrites the API host and misses the fake.
    monkeypatch.delenv("TWILIO_EDGE", raising=False)
    monkeypatch.delenv("TWILIO_REGION", raising=False)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def make_fake(**options) -> FakeTwilio:
    return FakeTwilio(account_sid=SID, auth_token=TOKEN, **{**FAST, **options}).start()


@pytest.fixture
def fake():
    f = make_fake(answer_ratio=1.0)
    yield f
    f.stop()


def client_for(fake: FakeTwilio, sid: str = SID, token: str = TOKEN) -> Client:
    client = Client(sid, token)
    client.api.base_url = fake.base_url
    return client


def dial(
    client: Client,
    receiver: Receiver,
    to: str = "+14155550101",
    *,
    business_id: str | None = "b1",
    dial_id: str | None = "d1",
    events=ALL_EVENTS,
    **extra,
):
    return client.calls.create(
        to=to,
        from_=FROM,
        url="http://example.com/twiml",
        status_callback=receiver.url(business_id, dial_id),
        status_callback_event=events,
        **extra,
    )


def test_full_lifecycle_callbacks_are_signed_and_in_sequence(fake, receiver):
    client = client_for(fake)
    call = dial(client, receiver, timeout=5, time_limit=10)
    assert call.sid.startswith("CA") and len(call.sid) == 34
    assert int(call.sid[2:], 16) >= 0
    assert call.status == "queued" and call.to == "+14155550101" and call._from == FROM
    assert call.account_sid == SID and call.date_created is not None

    request = fake.create_requests()[0]
    assert request["http_status"] == 201
    assert request["params"]["StatusCallbackEvent"] == ALL_EVENTS
    assert request["params"]["Timeout"] == "5" and request["params"]["TimeLimit"] == "10"

    assert fake.wait_idle(5)
    got = receiver.for_call(call.sid)
    assert [g["CallStatus"] for g in got] == [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]
    assert [g["SequenceNumber"] for g in got] == ["0", "1", "2", "3"]
    validator = RequestValidator(TOKEN)
    for g in got:
        params = {k: v for k, v in g.items() if not k.startswith("_")}
        assert g["_url"] == receiver.url("b1", "d1")
        assert validator.validate(g["_url"], params, g["_sig"])
        assert not validator.validate(g["_url"], params | {"CallStatus": "busy"}, g["_sig"])
        assert not RequestValidator("other").validate(g["_url"], params, g["_sig"])
        assert params["AccountSid"] == SID and params["Direction"] == "outbound-api"
        assert params["ApiVersion"] == "2010-04-01" and params["To"] == call.to
        assert params["From"] == FROM
        assert "+0000" in params["Timestamp"]
    assert "CallDuration" in got[-1] and "CallDuration" not in got[0]

    (truth,) = fake.calls()
    assert truth["business_id"] == "b1" and truth["dial_id"] == "d1"
    assert truth["status"] == "completed"
    assert truth["created_at"] < truth["answered_at"] < truth["ended_at"]
    # the final callback left after the call's end moment
    completed = [cb for cb in fake.callbacks() if cb["status"] == "completed"][0]
    assert completed["sent_at"][0] >= truth["ended_at"]
    fetched = client.calls(call.sid).fetch()
    assert fetched.status == "completed" and fetched.end_time is not None
    assert fetched.duration == got[-1]["CallDuration"]


def test_fetch_returns_the_true_status_as_it_changes(receiver):
    with make_fake(
        ring_seconds=(0.8, 0.8), talk_seconds=(0.8, 0.8), answer_ratio=1.0
    ) as fake:
        client = client_for(fake)
        call = dial(client, receiver, business_id="b7")

        def status() -> str:
            return client.calls(call.sid).fetch().status

        # ringing from 0.05 s to 0.85 s, in progress until 1.65 s
        eventually(lambda: status() == "ringing", timeout=5, interval=0.02)
        assert fake.live_by_business() == {"b7": 1}
        eventually(lambda: status() == "in-progress", timeout=5, interval=0.02)
        assert fake.wait_idle(3)
        assert client.calls(call.sid).fetch().status == "completed"
        assert fake.live_by_business() == {}
        with pytest.raises(TwilioRestException) as missing:
            client.calls("CA" + "f" * 32).fetch()
        assert missing.value.status == 404 and missing.value.code == 20404


def test_list_filters_on_to_status_and_start_time_and_pages(fake, receiver):
    client = client_for(fake)
    a1 = dial(client, receiver, "+14155550111", dial_id="x1")
    a2 = dial(client, receiver, "+14155550111", dial_id="x2")
    b1 = dial(client, receiver, "+14155550122", dial_id="x3")
    assert {c.sid for c in client.calls.list(to="+14155550111")} == {a1.sid, a2.sid}
    assert [c.sid for c in client.calls.list(to="+14155550122")] == [b1.sid]
    assert client.calls.list(to="+19999999999") == []
    assert fake.wait_idle(5)
    assert len(client.calls.list(status="completed")) == 3
    assert client.calls.list(status="busy") == []
    today = datetime.datetime.now(datetime.timezone.utc).date()
    assert len(client.calls.list(start_time_after=today)) == 3
    assert client.calls.list(start_time_after=today + datetime.timedelta(days=1)) == []
    assert len(client.calls.list(start_time=today)) == 3
    # page_size=2 makes the library follow next_page_uri
    assert {c.sid for c in client.calls.list(page_size=2)} == {a1.sid, a2.sid, b1.sid}
    assert len(client.calls.list(page_size=2, limit=2)) == 2


def test_fail_next_answers_429_20429_then_creates_again(fake, receiver):
    client = client_for(fake)
    fake.fail_next(2)
    for _ in range(2):
        with pytest.raises(TwilioRestException) as error:
            dial(client, receiver)
        assert error.value.status == 429 and error.value.code == 20429
    assert dial(client, receiver).status == "queued"
    assert [r["http_status"] for r in fake.create_requests()] == [429, 429, 201]
    assert len(fake.calls()) == 1
    fake.fail_next(1, status=503, code=20503)
    with pytest.raises(TwilioRestException) as error:
        dial(client, receiver)
    assert error.value.status == 503 and error.value.code == 20503


def test_rejected_number_and_missing_fields_answer_twilio_errors(receiver):
    with make_fake(rejected_numbers={"+15005550001"}) as fake:
        client = client_for(fake)
        with pytest.raises(TwilioRestException) as error:
            dial(client, receiver, "+15005550001")
        assert error.value.status == 400 and error.value.code == 21211
        assert (
            "+15005550001" in error.value.msg
            and "not a valid phone number" in error.value.msg
        )
        with pytest.raises(TwilioRestException) as error:
            client.calls.create(to="+14155550101", from_=FROM)
        assert error.value.code == 21205
        assert fake.calls() == [] and fake.live_by_business() == {}
        assert [r["http_status"] for r in fake.create_requests()] == [400, 400]


def test_wrong_credentials_answer_401(fake, receiver):
    for sid, token in ((SID, "wrong"), ("AC" + "2" * 32, TOKEN)):
        with pytest.raises(TwilioRestException) as error:
            dial(client_for(fake, sid, token), receiver)
        assert error.value.status == 401 and error.value.code == 20003
    assert fake.calls() == []
    assert [r["http_status"] for r in fake.create_requests()] == [401, 401]


def test_peak_live_counts_overlapping_calls_per_business(receiver):
    with make_fake(
        ring_seconds=(0.2, 0.2), talk_seconds=(0.2, 0.2), answer_ratio=1.0
    ) as fake:
        client = client_for(fake)
        dial(client, receiver, "+14155550201", business_id="b1", dial_id="p1")
        dial(client, receiver, "+14155550202", business_id="b1", dial_id="p2")
        dial(client, receiver, "+14155550203", business_id="b2", dial_id="p3")
        client.calls.create(to="+14155550204", from_=FROM, url="http://example.com/twiml")
        assert fake.live_by_business() == {"b1": 2, "b2": 1, "unknown": 1}
        assert fake.wait_idle(5)
        # back to back, never overlapping: the peak stays 1
        dial(client, receiver, "+14155550205", business_id="b3", dial_id="p4")
        assert fake.wait_idle(5)
        dial(client, receiver, "+14155550206", business_id="b3", dial_id="p5")
        assert fake.wait_idle(5)
        assert fake.peak_live_by_business() == {"b1": 2, "b2": 1, "unknown": 1, "b3": 1}
        assert fake.live_by_business() == {}
        unknown = [c for c in fake.calls() if c["business_id"] == "unknown"]
        assert len(unknown) == 1 and unknown[0]["dial_id"] is None


def test_concurrent_creates_from_many_threads(receiver):
    # Calls ring for 2 s, so all 27 are live at once even when a loaded machine takes
    # well over a second to place them.
    with make_fake(
        ring_seconds=(2.0, 2.2), talk_seconds=(0.3, 0.4), answer_ratio=1.0
    ) as fake:
        errors: list[BaseException] = []

        def worker(w: int) -> None:
            client = client_for(fake)
            try:
                for n in range(3):
                    dial(
                        client,
                        receiver,
                        f"+1415555{w:02d}{n:02d}",
                        business_id=f"c{w % 3}",
                        dial_id=f"c{w}-{n}",
                    )
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(9)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        created = sorted(call["created_at"] for call in fake.calls())
        assert len(created) == 27
        busiest = max(
            sum(1 for t in created if start <= t < start + 1) for start in created
        )
        assert fake.max_creates_in_any_second() == busiest  # 27 unless the machine stalled
        assert sum(fake.live_by_business().values()) == 27
        assert fake.peak_live_by_business() == {"c0": 9, "c1": 9, "c2": 9}
        assert fake.wait_idle(10)
        assert len({c["sid"] for c in fake.calls()}) == 27
        assert sum(1 for cb in fake.callbacks() if cb["outcome"] == "delivered") == 27 * 4


def test_max_creates_in_any_second_counts_rejected_ones_too(fake, receiver):
    client = client_for(fake)
    fake.fail_next(1)
    for n in range(4):
        try:
            dial(client, receiver, f"+1415555030{n}", dial_id=f"r{n}")
        except TwilioRestException:
            pass
    assert fake.max_creates_in_any_second() == 4
    time.sleep(1.05)
    dial(client, receiver, "+14155550309", dial_id="r9")
    assert fake.max_creates_in_any_second() == 4
    assert len(fake.create_requests()) == 5


def test_duplicates_arrive_twice_with_one_signature(receiver):
    with make_fake(answer_ratio=1.0, duplicate_ratio=1.0) as fake:
        call = dial(client_for(fake), receiver)
        assert fake.wait_idle(5)
        got = receiver.for_call(call.sid)
        assert len(got) == 8
        by_seq: dict[str, list] = {}
        for g in got:
            by_seq.setdefault(g["SequenceNumber"], []).append(g)
        assert sorted(by_seq) == ["0", "1", "2", "3"]
        for pair in by_seq.values():
            assert len(pair) == 2 and pair[0]["_sig"] == pair[1]["_sig"]
            assert pair[0]["_tok"] == pair[1]["_tok"]
            assert pair[0]["CallStatus"] == pair[1]["CallStatus"]


def test_dropped_callbacks_are_never_sent(receiver):
    with make_fake(answer_ratio=1.0, drop_ratio=1.0) as fake:
        call = dial(client_for(fake), receiver)
        assert fake.wait_idle(5)
        assert receiver.for_call(call.sid) == []
        assert fake.calls()[0]["status"] == "completed"
        assert {cb["outcome"] for cb in fake.callbacks()} == {"dropped"}


def test_drop_callbacks_switch_loses_them_while_enabled(fake, receiver):
    client = client_for(fake)
    fake.drop_callbacks(True)
    lost = dial(client, receiver, dial_id="lost")
    assert fake.wait_idle(5)
    assert receiver.for_call(lost.sid) == []
    assert client.calls(lost.sid).fetch().status == "completed"  # the reconciler's view
    fake.drop_callbacks(False)
    kept = dial(client, receiver, dial_id="kept")
    assert fake.wait_idle(5)
    assert [g["CallStatus"] for g in receiver.for_call(kept.sid)][-1] == "completed"


def test_reordered_callbacks_are_late_but_all_arrive(receiver):
    with make_fake(
        answer_ratio=1.0,
        reorder_ratio=1.0,
        ring_seconds=(0.05, 0.05),
        talk_seconds=(0.05, 0.05),
    ) as fake:
        call = dial(client_for(fake), receiver)
        assert fake.wait_idle(5)
        got = receiver.for_call(call.sid)
        assert sorted(g["SequenceNumber"] for g in got) == ["0", "1", "2", "3"]
        assert all(cb["delayed"] for cb in fake.callbacks())
        # every event happened within ~0.15 s; each callback was held back >= 0.3 s
        ended = fake.calls()[0]["ended_at"]
        created = fake.calls()[0]["created_at"]
        assert ended - created < 0.3
        assert min(r["at"] for r in receiver.received) - created >= 0.3


def test_callbacks_follow_twilios_default_retry_policy(receiver):
    """One retry, and only when no connection could be made: a 5xx is not retried."""
    with make_fake(answer_ratio=1.0) as fake:
        receiver.statuses = [500]  # Twilio does not retry an answer, even a 5xx
        call = dial(client_for(fake), receiver, events=["completed"])
        assert fake.wait_idle(5)
        (cb,) = fake.callbacks()
        assert cb["outcome"] == "gave-up" and cb["attempts"] == 1
        assert len(receiver.for_call(call.sid)) == 1

        receiver.statuses = [403]  # a 4xx is not retried
        call = dial(client_for(fake), receiver, events=["completed"], dial_id="d2")
        assert fake.wait_idle(5)
        assert fake.callbacks()[-1]["outcome"] == "rejected"
        assert len(receiver.for_call(call.sid)) == 1

        # nobody listening: retried, then given up, and the fake still goes idle
        dead = Receiver()
        dead.close()
        call = dial(client_for(fake), dead, events=["completed"], dial_id="d3")
        assert fake.wait_idle(5)
        last = fake.callbacks()[-1]
        assert last["outcome"] == "gave-up" and last["attempts"] == CALLBACK_ATTEMPTS


def test_timeout_caps_the_ring_and_unanswered_calls_end_without_answer(receiver):
    with make_fake(ring_seconds=(3.0, 3.0), answer_ratio=1.0) as fake:
        call = dial(client_for(fake), receiver, timeout=1)
        assert fake.wait_idle(3)
        truth = fake.calls()[0]
        assert truth["status"] == "no-answer" and truth["answered_at"] is None
        assert 1.0 <= truth["ended_at"] - truth["created_at"] < 1.5
        got = receiver.for_call(call.sid)
        assert [g["CallStatus"] for g in got] == ["initiated", "ringing", "no-answer"]
        assert got[-1]["CallDuration"] == "0"
    with make_fake(answer_ratio=0.0, seed=3) as fake:
        client = client_for(fake)
        for n in range(12):
            dial(
                client,
                receiver,
                f"+1415555040{n % 10}",
                dial_id=f"u{n}",
                events=["completed"],
            )
        assert fake.wait_idle(5)
        finals = {c["status"] for c in fake.calls()}
        assert finals <= {"no-answer", "busy", "failed"} and len(finals) >= 2
        for cb in fake.callbacks():
            assert "ErrorCode" not in cb["params"]
            sip = int(cb["params"]["SipResponseCode"])
            assert (sip >= 400) and (sip in (404, 480, 503)) == (cb["status"] == "failed")


def test_same_seed_same_script(receiver):
    scripts = []
    for _ in range(2):
        with make_fake(seed=42) as fake:
            client = client_for(fake)
            for n in range(6):
                dial(
                    client,
                    receiver,
                    f"+1415555050{n}",
                    dial_id=f"s{n}",
                    events=["completed"],
                )
            assert fake.wait_idle(5)
            scripts.append(
                sorted((c["dial_id"], c["sid"], c["status"]) for c in fake.calls())
            )
    assert scripts[0] == scripts[1]
    assert len({sid for _, sid, _ in scripts[0]}) == 6


def test_cancel_a_ringing_call(receiver):
    with make_fake(ring_seconds=(2.0, 2.0), answer_ratio=1.0) as fake:
        client = client_for(fake)
        call = dial(client, receiver)
        eventually(
            lambda: client.calls(call.sid).fetch().status == "ringing",
            timeout=5,
            interval=0.02,
        )
        assert client.calls(call.sid).update(status="canceled").status == "canceled"
        assert fake.wait_idle(2)
        assert [g["CallStatus"] for g in receiver.for_call(call.sid)][-1] == "canceled"
        assert fake.live_by_business() == {}


# twilio 9.13.0's async client passes aiohttp a BasicAuth, which aiohttp 3.14 deprecates.
@pytest.mark.filterwarnings("ignore:.*(BasicAuth|'auth' parameter).*:DeprecationWarning")
def test_async_client_creates_a_call(fake, receiver):
    from twilio.http.async_http_client import AsyncTwilioHttpClient

    async def place():
        async with AsyncTwilioHttpClient() as http_client:
            client = Client(SID, TOKEN, http_client=http_client)
            client.api.base_url = fake.base_url
            call = await client.calls.create_async(
                to="+14155550601",
                from_=FROM,
                url="http://example.com/twiml",
                status_callback=receiver.url("b-async", "d-async"),
                status_callback_event=ALL_EVENTS,
            )
            fetched = await client.calls(call.sid).fetch_async()
            listed = await client.calls.list_async(to="+14155550601")
            return call, fetched, listed

    call, fetched, listed = asyncio.run(place())
    assert call.status == "queued" and fetched.sid == call.sid
    assert [c.sid for c in listed] == [call.sid]
    assert fake.calls()[0]["business_id"] == "b-async"
    assert fake.wait_idle(5)
    assert [g["CallStatus"] for g in receiver.for_call(call.sid)][-1] == "completed"


# -- as unkind as Twilio -----------------------------------------------------------------


def test_terminal_callbacks_carry_the_sip_response_code(fake, receiver):
    call = dial(client_for(fake), receiver, events=["completed"])
    assert fake.wait_idle(5)
    (final,) = receiver.for_call(call.sid)
    assert final["CallStatus"] == "completed" and final["SipResponseCode"] == "200"
    assert "CallDuration" in final and "ErrorCode" not in final


def test_list_and_fetch_lag_behind_creates(receiver):
    with make_fake(consistency_lag=(1.0, 1.0)) as fake:
        client = client_for(fake)
        call = dial(client, receiver)
        assert client.calls.list(to="+14155550101") == []
        with pytest.raises(TwilioRestException) as missing:
            client.calls(call.sid).fetch()
        assert missing.value.status == 404
        eventually(
            lambda: [c.sid for c in client.calls.list(to="+14155550101")] == [call.sid],
            timeout=5,
        )
        assert client.calls(call.sid).fetch().sid == call.sid


def test_a_server_error_may_have_created_the_call(receiver):
    with make_fake(server_error_after_create_ratio=1.0) as fake:
        with pytest.raises(TwilioRestException) as error:
            dial(client_for(fake), receiver)
        assert (error.value.status, error.value.code) == (500, 20500)
        (call,) = fake.calls()
        assert call["dial_id"] == "d1"
        assert fake.create_requests()[0]["http_status"] == 500


def test_a_hung_request_is_never_answered_until_released(receiver):
    with make_fake() as fake:
        fake.hang_next(1, creates_call=True)
        client = client_for(fake)
        done = threading.Event()
        errors: list[BaseException] = []

        def hung() -> None:
            try:
                dial(client, receiver)
            except Exception as exc:  # the connection closes without an answer
                errors.append(exc)
            done.set()

        threading.Thread(target=hung, daemon=True).start()
        assert not done.wait(1.5), "a hung request was answered"
        assert fake.hung_requests() == 1 and len(fake.calls()) == 1
        dial(client, receiver, dial_id="d2")  # other requests are served meanwhile
        fake.release_hung()
        assert done.wait(5) and errors


def test_calls_beyond_the_accounts_cps_wait_queued(receiver):
    with make_fake(cps=2.0, answer_ratio=1.0) as fake:
        client = client_for(fake)
        calls = [
            dial(client, receiver, f"+1415555060{n}", dial_id=f"q{n}") for n in range(4)
        ]
        queue_ms = [int(call.queue_time) for call in calls]
        assert queue_ms[0] < 100 and 1400 <= queue_ms[3] <= 1600, queue_ms
        assert client.calls(calls[3].sid).fetch().status == "queued"
        client.calls(calls[3].sid).update(status="canceled")
        assert fake.wait_idle(10)
        truth = {c["sid"]: c for c in fake.calls()}
        assert truth[calls[3].sid]["status"] == "canceled"
        assert truth[calls[3].sid]["started_at"] is None or (
            truth[calls[3].sid]["answered_at"] is None
        )
        starts = sorted(truth[c.sid]["started_at"] for c in calls[:3])
        assert starts[2] - starts[0] >= 0.9  # two a second


def test_account_level_refusals_last_until_cleared(fake, receiver):
    fake.refuse_creates(400, 21210)
    client = client_for(fake)
    for _ in range(2):
        with pytest.raises(TwilioRestException) as error:
            dial(client, receiver)
        assert error.value.code == 21210
    fake.accept_creates()
    assert dial(client, receiver).sid
