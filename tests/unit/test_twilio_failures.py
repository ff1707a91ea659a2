"""Twilio's error answers classified (streams/dialers/twilio/failures.py), and the create
loop's transitions over them (streams/dialers/twilio/create.py)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from twilio.base.exceptions import TwilioException, TwilioRestException

from streams.dialers.twilio.create import AFTER_FAILURE, Step
from streams.dialers.twilio.failures import (
    ACCOUNT_CODES,
    Kind,
    TwilioFailure,
    account_problem,
    classify,
    error_label,
)


def test_twilio_failure_classification():
    rate = TwilioFailure.of(
        TwilioRestException(
            429, "/x", "Unable to create record: Too Many Requests", 20429, "POST"
        )
    )
    assert rate.rate_limited and rate.message == "Too Many Requests"
    server = TwilioFailure.of(TwilioRestException(503, "/x", "oops", 20503, "POST"))
    assert server.server_error and not server.rate_limited
    invalid = TwilioFailure.of(TwilioRestException(400, "/x", "bad", 21211, "POST"))
    assert not invalid.server_error and not invalid.rate_limited and invalid.code == 21211


@pytest.mark.parametrize(
    ("exc", "kind", "label"),
    [
        (
            TwilioRestException(429, "/x", "slow down", None, "POST"),
            Kind.RATE_LIMITED,
            "429",
        ),
        (TwilioRestException(400, "/x", "busy", 20429, "POST"), Kind.RATE_LIMITED, "20429"),
        (TwilioRestException(500, "/x", "oops", 20500, "POST"), Kind.SERVER_ERROR, "20500"),
        (TwilioRestException(404, "/x", "gone", 20404, "POST"), Kind.REJECTED, "20404"),
        (TwilioException("the library refused"), Kind.REJECTED, "0"),
        (
            aiohttp.ClientConnectorError(
                aiohttp.client_reqrep.ConnectionKey(
                    "api.twilio.com", 443, True, True, None, None, None
                ),
                OSError(111, "Connection refused"),
            ),
            Kind.NOT_SENT,
            "0",
        ),
        (asyncio.TimeoutError(), Kind.NO_ANSWER, "0"),
        (aiohttp.ServerDisconnectedError(), Kind.NO_ANSWER, "0"),
        (ConnectionResetError(104, "reset"), Kind.NO_ANSWER, "0"),
    ],
)
def test_every_request_error_has_a_kind(exc, kind, label):
    failure = classify(exc)
    assert failure.kind is kind and error_label(failure) == label


def test_a_bug_is_not_a_twilio_failure():
    with pytest.raises(TypeError):
        classify(KeyError("status"))


def test_only_a_request_that_may_have_created_the_call_is_looked_up():
    assert set(AFTER_FAILURE) == set(Kind)
    may_have_created = {Kind.SERVER_ERROR, Kind.NO_ANSWER}
    assert {k for k, step in AFTER_FAILURE.items() if step is Step.LOOK_UP} == (
        may_have_created
    )
    assert AFTER_FAILURE[Kind.REJECTED] is Step.FAIL
    # An error about the account fails no dial: the dial waits for the account.
    assert AFTER_FAILURE[Kind.ACCOUNT] is Step.WAIT


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, 20003), (401, None), (403, None), (400, 21210), (400, 21212), (400, 21219)],
)
def test_errors_about_the_account_are_not_about_the_number(status, code):
    failure = TwilioFailure.answered(status, code, "no")
    assert failure.kind is Kind.ACCOUNT
    assert "Twilio error" in account_problem(failure)


@pytest.mark.parametrize("code", [21211, 21214, 21215, 21216, 21217, 13223, 13224, 13227])
def test_errors_about_the_number_end_only_its_lead(code):
    assert code not in ACCOUNT_CODES
    assert TwilioFailure.answered(400, code, "no").kind is Kind.REJECTED
