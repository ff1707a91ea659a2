"""The contract as published files: a JSON Schema per record type and an AsyncAPI 3
document of every topic, generated from `streams/topics.py` (its records' fields, their
meanings and constraints), so that they cannot say something the code does not.

    python -m streams.schemas --write docs/contract    # rewrite the files
    python -m streams.schemas --check docs/contract    # exit 1 when they drifted

A unit test fails when the files in the repository differ from what this generates.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from streams.topics import (
    ALL_TOPICS,
    BUSINESS_CONTROL,
    CALLS_DIAL,
    CALLS_STATUS,
    LEADS_DEADLETTER,
    LEADS_OUTCOMES,
    LEADS_REQUESTS,
    LIMITER_TICKS,
    PARTITIONER,
    BusinessControl,
    CallStatus,
    DeadLetter,
    DialCommand,
    Fields,
    LeadOutcome,
    LeadRequest,
    Record,
    Tick,
    Withdrawal,
)

#: Every record type, by the topic that carries it (leads.requests carries two).
TOPIC_RECORDS: dict[str, tuple[type[Record], ...]] = {
    LEADS_REQUESTS: (LeadRequest, Withdrawal),
    CALLS_STATUS: (CallStatus,),
    LIMITER_TICKS: (Tick,),
    BUSINESS_CONTROL: (BusinessControl,),
    CALLS_DIAL: (DialCommand,),
    LEADS_OUTCOMES: (LeadOutcome,),
    LEADS_DEADLETTER: (DeadLetter,),
}
#: Who sends and who receives each topic, for the AsyncAPI document.
TOPIC_PARTIES: dict[str, tuple[str, str]] = {
    LEADS_REQUESTS: ("the CRM (streams produce-leads, streams run withdraw)", "the worker"),
    CALLS_STATUS: ("the dialer", "the worker"),
    LIMITER_TICKS: ("the worker's timer", "the worker"),
    BUSINESS_CONTROL: ("streams business", "the worker"),
    CALLS_DIAL: ("the worker", "the dialer"),
    LEADS_OUTCOMES: ("the worker", "the CRM"),
    LEADS_DEADLETTER: ("the worker", "operators"),
}
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID_BASE = "https://streams-call-limiter.invalid/contract/"
ASYNCAPI_FILE = "asyncapi.json"


def schema_file(record: type[Record]) -> str:
    return f"{record.__name__}.schema.json"


def _json_type(annotation: Any) -> Fields:
    """The JSON Schema of a plain Python annotation (str, int, bool, X | None)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        kinds = [a for a in get_args(annotation) if a is not type(None)]
        return _json_type(kinds[0]) if len(kinds) == 1 else {}
    return {
        str: {"type": "string"},
        int: {"type": "integer"},
        bool: {"type": "boolean"},
    }.get(annotation, {})


def record_schema(record: type[Record]) -> Fields:
    """The JSON Schema of one record type, from its fields' types and metadata: a field
    without a default is required, an optional one may be absent or null."""
    hints = typing.get_type_hints(record)
    properties: Fields = {}
    required: list[str] = []
    for field in dataclasses.fields(record):
        meta = dict(field.metadata.get("schema", {}))
        must = field.metadata.get("present") or field.default is dataclasses.MISSING
        base = {} if "anyOf" in meta else _json_type(hints[field.name])
        schema: Fields = {**base, **meta}
        if not must and "anyOf" not in schema and isinstance(schema.get("type"), str):
            schema["type"] = [schema["type"], "null"]
        elif not must and ("anyOf" in schema or "enum" in schema or "type" not in schema):
            schema = {"anyOf": [schema, {"type": "null"}]}
        properties[field.name] = {"description": field.metadata.get("doc", ""), **schema}
        if must:
            required.append(field.name)
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": SCHEMA_ID_BASE + schema_file(record),
        "title": record.__name__,
        "description": " ".join((record.__doc__ or "").split()),
        "type": "object",
        "required": required,
        "properties": properties,
        **getattr(record, "SCHEMA_RULES", {}),
    }


def topic_schema(topic: str) -> Fields:
    """What a record of `topic` must be: its record type's schema, or one of them."""
    records = TOPIC_RECORDS[topic]
    if len(records) == 1:
        return record_schema(records[0])
    return {
        "$schema": SCHEMA_DIALECT,
        "oneOf": [record_schema(record) for record in records],
    }


def asyncapi() -> Fields:
    """The AsyncAPI 3.0 document: every topic (a channel), its key and its records (its
    messages, with payloads referring to the schema files), who sends and who receives."""
    channels: Fields = {}
    operations: Fields = {}
    messages: Fields = {}
    for topic in ALL_TOPICS:
        name = topic.replace(".", "-")
        refs = {}
        for record in TOPIC_RECORDS[topic]:
            messages[record.__name__] = {
                "name": record.__name__,
                "title": record.__name__,
                "summary": " ".join((record.__doc__ or "").split()),
                "contentType": "application/json",
                "payload": {
                    "schemaFormat": "application/schema+json;version=draft-2020-12",
                    "schema": {"$ref": f"schemas/{schema_file(record)}"},
                },
                "bindings": {
                    "kafka": {
                        "key": {
                            "type": "string",
                            "description": (
                                "the raw UTF-8 bytes of business_id"
                                if topic != LIMITER_TICKS
                                else "none: sent to the partition it is for"
                            ),
                        },
                        "bindingVersion": "0.5.0",
                    }
                },
            }
            refs[record.__name__] = {"$ref": f"#/components/messages/{record.__name__}"}
        sender, receiver = TOPIC_PARTIES[topic]
        channels[name] = {
            "address": topic,
            "description": (
                f"`TOPIC_PREFIX` + {topic}; sent by {sender}, read by {receiver}."
                f" Keyed by business_id, partitioned with {PARTITIONER}."
            ),
            "messages": refs,
            "bindings": {"kafka": {"topic": topic, "bindingVersion": "0.5.0"}},
        }
        for action, party in (("send", sender), ("receive", receiver)):
            operations[f"{action}-{name}"] = {
                "action": action,
                "summary": f"{party} {action}s {topic}",
                "channel": {"$ref": f"#/channels/{name}"},
                "messages": [{"$ref": f"#/channels/{name}/messages/{m}"} for m in refs],
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "streams: a per-business outbound call limiter",
            "version": "1.0.0",
            "description": (
                "Every topic, its key and its records. Generated from streams/topics.py"
                " by `python -m streams.schemas`; the JSON Schemas are in schemas/."
                " Outputs are at-least-once: dialers dedupe on dial_id, the CRM on"
                " lead_id (and reads final)."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def generated() -> dict[str, str]:
    """Relative path -> file text of everything this module publishes."""
    files = {
        f"schemas/{schema_file(record)}": record_schema(record)
        for records in TOPIC_RECORDS.values()
        for record in records
    }
    files[ASYNCAPI_FILE] = asyncapi()
    return {
        path: json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
        for path, doc in files.items()
    }


def drifted(directory: Path) -> list[str]:
    """The files under `directory` that differ from what is generated (or are missing)."""
    return [
        path
        for path, text in generated().items()
        if not (directory / path).exists() or (directory / path).read_text() != text
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streams.schemas",
        description="Write or check the contract's JSON Schemas and AsyncAPI document.",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", metavar="DIR", help="rewrite the files under DIR")
    action.add_argument(
        "--check", metavar="DIR", help="exit 1 if the files under DIR drifted"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = drifted(Path(args.check))
        for path in stale:
            print(f"{args.check}/{path} differs from streams/topics.py", file=sys.stderr)
        return 1 if stale else 0
    directory = Path(args.write)
    for path, text in generated().items():
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
            print(f"{target} written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
