"""The published contract (docs/contract/): generated from streams/topics.py, in step
with the decoders, and an AsyncAPI document whose every reference resolves."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from streams import schemas
from streams.topics import (
    ALL_TOPICS,
    BusinessControl,
    CallingWindow,
    CallStatus,
    DeadLetter,
    DialCommand,
    LeadOutcome,
    LeadRequest,
    RetryPolicy,
    Tick,
    Withdrawal,
)

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract"


def test_the_published_files_are_what_streams_topics_generates():
    """Rewrite them with `python -m streams.schemas --write docs/contract`."""
    assert schemas.drifted(CONTRACT) == []


def validator(topic: str) -> jsonschema.protocols.Validator:
    schema = schemas.topic_schema(topic)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@pytest.mark.parametrize(
    "topic, record",
    [
        ("leads.requests", LeadRequest("L1", "A", "+14155550100")),
        (
            "leads.requests",
            LeadRequest(
                "L1",
                "A",
                "+14155550100",
                3,
                "spring",
                "2026-03-02T15:00:00.000Z",
                "2026-03-02T18:00:00.000Z",
                "Europe/Paris",
            ),
        ),
        ("leads.requests", Withdrawal("A", run_id="spring")),
        ("leads.requests", Withdrawal("A", lead_id="L1")),
        (
            "calls.status",
            CallStatus("A:L1:1", "L1", "A", "ringing", "2026-03-02T15:00:00Z"),
        ),
        ("limiter.ticks", Tick(3, "2026-03-02T15:00:00.000Z")),
        ("business.control", BusinessControl("A")),
        (
            "business.control",
            BusinessControl(
                "A",
                2,
                True,
                CallingWindow.parse("09:00-20:00", "mon-fri", "Europe/Paris"),
                RetryPolicy.parse("busy,no-answer", "10m,1h", 3),
            ),
        ),
        (
            "calls.dial",
            DialCommand(
                "A:L1:1",
                "L1",
                "A",
                "+1415",
                1,
                "2026-03-02T15:00:00.000Z",
                "2026-03-02T15:00:30.000Z",
            ),
        ),
        ("leads.outcomes", LeadOutcome("L1", "A", "busy", "A:L1:1", "CA1", None, 1, False)),
        ("leads.outcomes", LeadOutcome("L1", "A", "withdrawn", attempt=0)),
        ("leads.deadletter", DeadLetter.of("bad", "leads.requests", 0, 7, None, b"{}")),
    ],
)
def test_every_record_the_code_writes_is_valid(topic, record):
    validator(topic).validate(record.to_dict())


@pytest.mark.parametrize(
    "topic, value",
    [
        ("leads.requests", {"lead_id": "L1", "business_id": "A", "phone": "0800"}),
        (
            "leads.requests",
            {"lead_id": "L1", "business_id": "A", "phone": "+1415", "priority": 12},
        ),
        ("leads.requests", {"business_id": "A", "run_id": "R", "withdraw": False}),
        (
            "calls.status",
            {"dial_id": "d", "lead_id": "L", "business_id": "A", "status": "x", "at": "t"},
        ),
        ("leads.outcomes", {"lead_id": "L1", "business_id": "A", "outcome": "maybe"}),
        (
            "business.control",
            {"business_id": "A", "retry": {"on": ["completed"], "delays": [1]}},
        ),
    ],
)
def test_records_the_decoders_refuse_the_schemas_refuse_too(topic, value):
    assert not validator(topic).is_valid(value)


def test_the_asyncapi_document_names_every_topic_key_and_record():
    document = json.loads((CONTRACT / schemas.ASYNCAPI_FILE).read_text())
    assert document["asyncapi"].startswith("3.")
    assert {c["address"] for c in document["channels"].values()} == set(ALL_TOPICS)
    messages = document["components"]["messages"]
    for channel in document["channels"].values():
        for ref in channel["messages"].values():
            message = messages[ref["$ref"].rsplit("/", 1)[1]]
            assert (CONTRACT / message["payload"]["schema"]["$ref"]).exists()
            assert "business_id" in message["bindings"]["kafka"]["key"]["description"] or (
                channel["address"] == "limiter.ticks"
            )
    for name, operation in document["operations"].items():
        channel = operation["channel"]["$ref"].rsplit("/", 1)[1]
        assert channel in document["channels"], name
        for ref in operation["messages"]:
            assert ref["$ref"].split("/")[2] == channel
