"""Every kind of request the Twilio dialer sends, checked against Twilio's published
OpenAPI description (tests/support/twilio_contract.py), not against the fake's opinion.
The integration tests check every request of every dialer run the same way."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from streams.dialers.twilio.client import TwilioAccount, TwilioApi, twilio_client
from streams.dialers.twilio.create import CallRequest
from streams.dialers.twilio.ledger import Job
from streams.dialers.twilio.reconcile import TWILIO_LIVE_STATUSES
from streams.settings import Settings
from tests.support import twilio_contract
from tests.support.fake_twilio import FakeTwilio

FROM = "+14155550199"


@pytest.fixture(autouse=True)
def no_edge(monkeypatch):
    monkeypatch.delenv("TWILIO_EDGE", raising=False)
    monkeypatch.delenv("TWILIO_REGION", raising=False)


def job(n: int) -> Job:
    now = dt.datetime.now(dt.timezone.utc)
    return Job(
        dial_id=f"b:l{n}:1",
        lead_id=f"l{n}",
        business_id="b",
        phone=f"+1415555010{n}",
        attempt=1,
        dial_by=now + dt.timedelta(seconds=30),
        status="dialing",
        created_at=now,
        updated_at=now,
    )


def every_request(fake: FakeTwilio, **env: str) -> None:
    """Send each request the dialer makes (create, fetch, both lists, both updates)."""
    settings = Settings.from_env(
        {
            "TWILIO_ACCOUNT_SID": fake.account_sid,
            "TWILIO_AUTH_TOKEN": fake.auth_token,
            "TWILIO_FROM_NUMBER": FROM,
            "TWILIO_API_BASE_URL": fake.base_url,
            "PUBLIC_BASE_URL": "https://dialer.example.com",
            **env,
        }
    )
    account = TwilioAccount.from_settings(settings)
    request = CallRequest.of(account, settings)

    async def run() -> None:
        client, http = twilio_client(account)
        api = TwilioApi(client, account.request_timeout)
        try:
            first = await api.create(request.params(job(1)))
            second = await api.create(request.params(job(2)))
            await api.fetch(first.sid)
            await api.calls_to(job(1).phone, FROM, 50)
            for status in TWILIO_LIVE_STATUSES:
                await api.calls_in(status, FROM, 200)
            await api.update_status(first.sid, "canceled")
            await api.update_status(second.sid, "completed")
        finally:
            await http.close()

    asyncio.run(run())


@pytest.mark.parametrize(
    "env",
    [{}, {"TWILIO_VOICE_URL": "https://flows.example.com/outbound"}],
    ids=["twiml", "voice-url"],
)
def test_every_request_the_dialer_sends_is_one_twilio_documents(env):
    with FakeTwilio(ring_seconds=(5, 5)) as fake:
        every_request(fake, **env)
        requests = fake.requests()
    kinds = {(r["method"], r["path"].rsplit("/", 1)[-1] == "Calls.json") for r in requests}
    assert kinds == {("POST", True), ("GET", False), ("GET", True), ("POST", False)}
    assert twilio_contract.all_problems(requests) == []


def test_the_check_catches_what_twilio_would_refuse():
    sid = "AC" + "0" * 32
    path = f"/2010-04-01/Accounts/{sid}/Calls.json"

    def create(*form: tuple[str, str]) -> dict:
        return {"method": "POST", "path": path, "query": [], "form": list(form)}

    good = [("To", "+14155550100"), ("From", FROM), ("Url", "https://x.example.com/t")]
    assert twilio_contract.problems(create(*good)) == []
    assert twilio_contract.problems(create(*good, ("StatusCallbackMethod", "PUT")))
    assert twilio_contract.problems(create(*good, ("Timeout", "soon")))
    assert twilio_contract.problems(create(*good, ("Ringtone", "loud")))
    assert twilio_contract.problems(create(*good, ("To", "+14155550101")))  # repeated
    assert twilio_contract.problems(create(*good[1:]))  # no To
    assert twilio_contract.problems(create(*good, ("StatusCallback", "/relative")))
    assert twilio_contract.problems(
        {"method": "GET", "path": path, "query": [("Status", "dialing")], "form": []}
    )
    assert twilio_contract.problems(
        {"method": "DELETE", "path": path, "query": [], "form": []}
    )
    assert twilio_contract.problems(
        {
            "method": "GET",
            "path": f"/2010-04-01/Accounts/{sid}/Calls/x.json",
            "query": [],
            "form": [],
        }
    )
    assert twilio_contract.problems(
        {
            "method": "GET",
            "path": "/2010-04-01/Accounts/ACnope/Calls.json",
            "query": [],
            "form": [],
        }
    )
