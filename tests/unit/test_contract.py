"""The contract's edges: settings, records and the command line fail fast and clearly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from streams.cli import build_parser
from streams.kafka import clients
from streams.settings import ConfigError, Settings
from streams.topics import CallStatus, InvalidRecord, LeadRequest, record_key


@pytest.mark.parametrize(
    "env, message",
    [
        (
            {"MAX_OUTBOUND_CALLS_PER_BUSINESS": "three"},
            "MAX_OUTBOUND_CALLS_PER_BUSINESS must be an integer",
        ),
        ({"MAX_OUTBOUND_CALLS_PER_BUSINESS": "0"}, "at least 1"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "localhost"}, "host:port"),
        ({"TABLE_STORE": "redis://"}, "memory://, rocksdb://"),
        ({"TOPIC_PREFIX": "a b"}, "TOPIC_PREFIX"),
        ({"WORKER_WEB_PORT": "70000"}, "TCP port"),
        ({"DIAL_ACK_TIMEOUT_SECONDS": "40"}, "shorter than DIAL_DEADLINE_SECONDS"),
        ({"TICK_INTERVAL_SECONDS": "nan"}, "TICK_INTERVAL_SECONDS"),
        (
            {"TWILIO_VOICE_URL": "voice.example.com/flow"},
            "TWILIO_VOICE_URL must be an http",
        ),
        ({"TWILIO_TWIML": "<Say>hello</Say>"}, "TWILIO_TWIML must be a TwiML document"),
        (
            {
                "TWILIO_VOICE_URL": "https://voice.example.com/flow",
                "TWILIO_TWIML": "<Response><Say>hi</Say></Response>",
            },
            "not both",
        ),
    ],
)
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_defaults_are_the_documented_ones():
    settings = Settings.from_env({})
    assert settings.max_outbound_calls_per_business == 3
    assert settings.kafka_bootstrap_servers == "localhost:9092"
    assert settings.topic_partitions == 8 and settings.table_store == "rocksdb://"


def test_status_producers_partition_like_every_producer_and_send_at_once():
    """A terminal status frees a slot: the dialers' producer does not hold it back to
    batch, and keeps the murmur2 partitioner with everything else."""
    settings = Settings(kafka_bootstrap_servers="h:1")
    ours = clients.status_producer_config(settings)
    common = clients.producer_config(settings)
    assert ours["partitioner"] == common["partitioner"] == "murmur2_random"
    assert ours["enable.idempotence"] is True
    assert ours["linger.ms"] == 0 < common["linger.ms"]


def test_the_voice_flow_is_a_url_or_twiml_kept_as_given():
    settings = Settings.from_env(
        {"TWILIO_VOICE_URL": "https://voice.example.com/flows/out/"}
    )
    assert settings.twilio_voice_url == "https://voice.example.com/flows/out/"
    assert settings.twilio_twiml is None
    twiml = '<Response>\n  <Say voice="alice">Hello</Say>\n</Response>'
    assert Settings.from_env({"TWILIO_TWIML": twiml}).twilio_twiml == twiml


def lead(**fields) -> bytes:
    return json.dumps(
        {"lead_id": "L1", "business_id": "B1", "phone": "+14155550100", **fields}
    ).encode()


def test_lead_records_are_validated_with_readable_reasons():
    assert LeadRequest.decode(lead(priority=9), record_key("B1")).priority == 9
    cases = [
        (b"[]", "JSON object"),
        (lead(phone="0044 20"), "E.164"),
        (lead(priority=10), "priority"),
        (lead(business_id=""), "business_id"),
    ]
    for value, reason in cases:
        with pytest.raises(InvalidRecord, match=reason):
            LeadRequest.decode(value, record_key("B1"))
    with pytest.raises(InvalidRecord, match="not the raw UTF-8 business_id") as raised:
        LeadRequest.decode(lead(), b'"B1"')
    assert (raised.value.lead_id, raised.value.business_id) == ("L1", "B1")


def test_status_records_need_a_known_status_and_a_timestamp():
    base = {
        "dial_id": "B1:L1:1",
        "lead_id": "L1",
        "business_id": "B1",
        "status": "ringing",
        "at": "2026-11-24T10:00:00Z",
    }
    assert CallStatus.decode(json.dumps(base).encode(), b"B1").status == "ringing"
    for change, reason in (
        ({"status": "ringing?"}, "unknown call status"),
        ({"at": "yesterday"}, "ISO-8601"),
        ({"sequence": "3"}, "sequence"),
    ):
        with pytest.raises(InvalidRecord, match=reason):
            CallStatus.decode(json.dumps({**base, **change}).encode(), b"B1")


def test_every_command_has_help():
    parser = build_parser()
    commands = [
        ["worker"],
        ["topics", "create"],
        ["broker"],
        ["produce-leads"],
        ["dialer"],
        ["demo"],
        [],
    ]
    for command in commands:
        with pytest.raises(SystemExit) as done:
            parser.parse_args(command + ["--help"])
        assert done.value.code == 0


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_bad_config_stops_a_command_with_one_line():
    result = run_cli(
        "topics",
        "create",
        env={"MAX_OUTBOUND_CALLS_PER_BUSINESS": "-1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "streams: error: MAX_OUTBOUND_CALLS_PER_BUSINESS must be at least 1, got -1"
    )


def test_bad_arguments_fail_fast():
    result = run_cli("dialer", "--talk-seconds", "5,1")
    assert result.returncode == 2 and "MIN <= MAX" in result.stderr
    result = run_cli("dialer", env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert result.stderr == (
        "streams: error: TWILIO_ACCOUNT_SID is required by the Twilio"
        " dialer (or run `streams dialer --simulate`)\n"
    )


def test_lead_requests_carry_runs_schedules_and_zones_and_withdrawals_decode():
    from streams.topics import Withdrawal, decode_lead_request

    lead = decode_lead_request(
        json.dumps(
            {
                "lead_id": "L1",
                "business_id": "A",
                "phone": "+14155550100",
                "run_id": "spring",
                "not_before": "2026-03-02T15:00:00+01:00",
                "expires_at": 1772467200,
                "timezone": "Europe/Paris",
            }
        ).encode(),
        b"A",
    )
    assert lead == LeadRequest(
        "L1",
        "A",
        "+14155550100",
        run_id="spring",
        not_before="2026-03-02T14:00:00.000Z",
        expires_at="2026-03-02T16:00:00.000Z",
        timezone="Europe/Paris",
    )
    run = b'{"business_id": "A", "run_id": "spring", "withdraw": true}'
    assert decode_lead_request(run, b"A") == Withdrawal("A", run_id="spring")
    one = b'{"business_id": "A", "lead_id": "L1", "withdraw": true}'
    assert decode_lead_request(one, b"A") == Withdrawal("A", lead_id="L1")


@pytest.mark.parametrize(
    "value, message, names_lead",
    [
        (
            {"lead_id": "L1", "business_id": "A", "phone": "+1415", "timezone": "Mars/X"},
            "not an IANA time zone",
            True,
        ),
        (
            {
                "lead_id": "L1",
                "business_id": "A",
                "phone": "+14155550100",
                "not_before": "2026-03-02T15:00:00Z",
                "expires_at": "2026-03-02T14:00:00Z",
            },
            "later than not_before",
            True,
        ),
        (
            {"lead_id": "L1", "business_id": "A", "phone": "+1415", "not_before": "soon"},
            "ISO-8601",
            True,
        ),
        ({"business_id": "A", "lead_id": "L1", "withdraw": "yes"}, "must be true", False),
        (
            {"business_id": "A", "lead_id": "L1", "run_id": "R", "withdraw": True},
            "either a lead_id or a run_id",
            False,
        ),
        ({"business_id": "A", "withdraw": True}, "either a lead_id or a run_id", False),
    ],
)
def test_bad_lead_records_say_why_and_a_bad_withdrawal_names_no_lead(
    value, message, names_lead
):
    from streams.topics import decode_lead_request

    with pytest.raises(InvalidRecord, match=message) as raised:
        decode_lead_request(json.dumps(value).encode(), b"A")
    assert (raised.value.lead_id == "L1") is names_lead


def test_a_control_record_carries_window_and_retry_and_reads_old_records():
    from streams.topics import BusinessControl, CallingWindow, RetryPolicy

    control = BusinessControl(
        "A",
        2,
        False,
        CallingWindow.parse("09:00-20:00", "mon-fri", "Europe/Paris"),
        RetryPolicy.parse("busy,no-answer", "10m,1h", 3),
    )
    assert control.to_dict()["window"] == {
        "start": "09:00",
        "end": "20:00",
        "days": ["mon", "tue", "wed", "thu", "fri"],
        "timezone": "Europe/Paris",
    }
    assert control.to_dict()["retry"] == {
        "on": ["busy", "no-answer"],
        "delays": [600, 3600],
        "max_attempts": 3,
    }
    assert BusinessControl.decode(control.encode(), b"A") == control
    old = b'{"business_id": "A", "limit": 2, "paused": true}'
    assert BusinessControl.decode(old, b"A") == BusinessControl("A", 2, True)
    bad = b'{"business_id": "A", "retry": {"on": ["completed"], "delays": [1]}}'
    with pytest.raises(InvalidRecord, match="retry on completed"):
        BusinessControl.decode(bad, b"A")
