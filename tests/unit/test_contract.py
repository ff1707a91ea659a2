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
