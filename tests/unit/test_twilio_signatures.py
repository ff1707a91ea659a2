"""Status callback signatures (streams/dialers/twilio/signatures.py)."""

from __future__ import annotations

from multidict import MultiDict, MultiDictProxy
from twilio.request_validator import RequestValidator

from streams.dialers.twilio.signatures import SignatureCheck, form_params

TOKEN = "secret-token"
BASE = "https://dialer.example.com"
QUERY = "dial_id=b%3Al%3A1&business_id=b&lead_id=l"
PARAMS = {"CallSid": "CA" + "1" * 32, "CallStatus": "ringing", "SequenceNumber": "1"}


def test_twilios_signature_over_our_public_url_and_the_query_as_received():
    check = SignatureCheck(TOKEN, BASE)
    url = f"{BASE}/twilio/status?{QUERY}"
    assert check.signed_url(QUERY) == url
    assert check.signed_url("") == f"{BASE}/twilio/status"
    good = RequestValidator(TOKEN).compute_signature(url, PARAMS)
    assert check.valid(QUERY, PARAMS, good)
    assert not check.valid(QUERY, PARAMS, "")
    assert not check.valid(QUERY, dict(PARAMS, CallStatus="busy"), good)
    assert not check.valid("dial_id=other", PARAMS, good)
    forged = RequestValidator("not-the-token").compute_signature(url, PARAMS)
    assert not check.valid(QUERY, PARAMS, forged)
    behind_a_proxy = RequestValidator(TOKEN).compute_signature(
        f"http://10.0.0.5:8080/twilio/status?{QUERY}", PARAMS
    )
    assert not check.valid(QUERY, PARAMS, behind_a_proxy)


def test_a_repeated_form_key_keeps_all_its_values():
    form = MultiDictProxy(MultiDict([("CallSid", "CA1"), ("Event", "a"), ("Event", "b")]))
    assert form_params(form) == {"CallSid": "CA1", "Event": ["a", "b"]}
