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
    assert check.signed_urls(QUERY)[0] == url
    assert check.signed_urls("") == [f"{BASE}/twilio/status"]
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
    assert form.getall("Event") == ["a", "b"]
    assert form_params(form) == {"CallSid": "CA1", "Event": "b"}
    check = SignatureCheck(TOKEN, BASE)
    url = f"{BASE}/twilio/status?{QUERY}"
    good = RequestValidator(TOKEN).compute_signature(url, form)
    assert check.valid(QUERY, form, good)
    # A junk request with repeated keys is refused, not a crash (a 403, not a 500).
    assert not check.valid(QUERY, form, "junk")
    one_value = MultiDictProxy(MultiDict([("CallSid", "CA1"), ("Event", "a")]))
    assert not check.valid(QUERY, one_value, good)


def test_a_query_a_proxy_re_encoded_still_validates():
    check = SignatureCheck(TOKEN, BASE)
    url = f"{BASE}/twilio/status?{QUERY}"
    good = RequestValidator(TOKEN).compute_signature(url, PARAMS)
    re_encoded = "dial_id=b:l:1&business_id=b&lead_id=l"
    assert check.valid(re_encoded, PARAMS, good)
    reordered = "lead_id=l&dial_id=b%3Al%3A1&business_id=b"
    assert check.valid(reordered, PARAMS, good)
    assert not check.valid("dial_id=b:l:2&business_id=b&lead_id=l", PARAMS, good)


def test_the_token_being_rotated_out_is_accepted_while_set():
    url = f"{BASE}/twilio/status?{QUERY}"
    old = RequestValidator("old-token").compute_signature(url, PARAMS)
    assert not SignatureCheck(TOKEN, BASE).valid(QUERY, PARAMS, old)
    rotating = SignatureCheck(TOKEN, BASE, previous_auth_token="old-token")
    assert rotating.valid(QUERY, PARAMS, old)
    new = RequestValidator(TOKEN).compute_signature(url, PARAMS)
    assert rotating.valid(QUERY, PARAMS, new)


def test_webhook_rule_signatures_use_the_shared_key_and_hmac_sha256():
    url = f"{BASE}/twilio/status?{QUERY}"
    header = "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"
    signed = RequestValidator("shared-secret").compute_signature(url, PARAMS, "HMAC_SHA256")
    check = SignatureCheck(
        TOKEN, BASE, shared_keys={"webhooks_sharedkey_1": "shared-secret"}
    )
    assert check.valid(QUERY, PARAMS, signed, header)
    assert not check.valid(QUERY, PARAMS, signed)  # without the header: the auth token
    assert not check.valid(QUERY, PARAMS, signed, "key=other,algorithm=HMAC_SHA256")
    sha1 = RequestValidator("shared-secret").compute_signature(url, PARAMS)
    assert not check.valid(QUERY, PARAMS, sha1, header)
    assert not SignatureCheck(TOKEN, BASE).valid(QUERY, PARAMS, signed, header)
