"""Every request sent to the fake Twilio checked against Twilio's own OpenAPI description
of api.twilio.com 2010-04-01 (tests/data/twilio_api_v2010_calls.json, trimmed from
twilio/twilio-oai by tests/data/trim_twilio_oai.py): the path and method name an
operation, every parameter is one the operation takes (in the query for GET, the form
for POST), required ones are there, only arrays repeat, and each value fits its schema
(type, enum, pattern, length, bounds, uri and date formats). Independent of the fake's
own idea of what Twilio accepts.
"""

from __future__ import annotations

import collections
import datetime
import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

SPEC_PATH = Path(__file__).resolve().parents[1] / "data" / "twilio_api_v2010_calls.json"


@cache
def spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text(encoding="utf-8"))


def _resolve(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in schema:
        _, section, name = schema["$ref"].removeprefix("#/").split("/", 2)
        schema = spec()["components"][section][name]
    return schema


def _template(path: str) -> re.Pattern[str]:
    return re.compile(
        "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path)) + "$"
    )


def value_problem(schema: Mapping[str, Any], value: str) -> str | None:
    """Why `value` (as sent, a string) does not fit `schema`; None when it does."""
    schema = _resolve(schema)
    kind = schema.get("type", "string")
    if kind == "integer":
        if not re.fullmatch(r"-?\d+", value):
            return f"{value!r} is not an integer"
        number = int(value)
        if "minimum" in schema and number < schema["minimum"]:
            return f"{number} < minimum {schema['minimum']}"
        if "maximum" in schema and number > schema["maximum"]:
            return f"{number} > maximum {schema['maximum']}"
        return None
    if kind == "boolean":
        return None if value in ("true", "false") else f"{value!r} is not a boolean"
    if kind == "number":
        try:
            float(value)
        except ValueError:
            return f"{value!r} is not a number"
        return None
    if "enum" in schema and value not in schema["enum"]:
        return f"{value!r} not in {schema['enum']}"
    if "pattern" in schema and not re.search(schema["pattern"], value):
        return f"{value!r} does not match {schema['pattern']}"
    if len(value) < schema.get("minLength", 0):
        return f"{value!r} shorter than {schema['minLength']}"
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        return f"{value!r} longer than {schema['maxLength']}"
    fmt = schema.get("format")
    if fmt == "uri":
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return f"{value!r} is not an absolute http(s) URI"
    if fmt == "date-time":
        try:
            datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return f"{value!r} is not a date-time"
    return None


def problems(request: Mapping[str, Any]) -> list[str]:
    """What is wrong with one recorded request (`FakeTwilio.requests()`)."""
    where = f"{request['method']} {request['path']}"
    matches = [
        (found, item)
        for path, item in spec()["paths"].items()
        if (found := _template(path).match(request["path"])) is not None
    ]
    if not matches:
        return [f"{where}: no such path in Twilio's API"]
    match, item = matches[0]
    operation = item.get(request["method"].lower())
    if operation is None:
        return [f"{where}: Twilio's API has no {request['method']} here"]
    found: list[str] = []
    parameters = [_resolve(p) for p in operation.get("parameters", [])]
    for parameter in parameters:
        if parameter["in"] == "path":
            problem = value_problem(parameter["schema"], match.group(parameter["name"]))
            if problem:
                found.append(f"{where}: path {parameter['name']}: {problem}")
    if request["method"] == "GET":
        allowed = {p["name"]: p for p in parameters if p["in"] == "query"}
        schemas = {name: p["schema"] for name, p in allowed.items()}
        required = {name for name, p in allowed.items() if p.get("required")}
        sent = request["query"]
        if request["form"]:
            found.append(f"{where}: a GET with a body")
    else:
        body = operation.get("requestBody", {}).get("content", {})
        form = _resolve(body.get("application/x-www-form-urlencoded", {}).get("schema", {}))
        schemas = dict(form.get("properties", {}))
        required = set(form.get("required", []))
        sent = request["form"]
    values: dict[str, list[str]] = collections.defaultdict(list)
    for name, value in sent:
        values[name].append(value)
    for name in sorted(required - set(values)):
        found.append(f"{where}: required {name} missing")
    for name, given in values.items():
        if name not in schemas:
            found.append(f"{where}: Twilio's API takes no parameter {name!r}")
            continue
        schema = _resolve(schemas[name])
        if schema.get("type") == "array":
            item_schema = schema.get("items", {})
        elif len(given) > 1:
            found.append(f"{where}: {name} repeated, but it is not a list")
            continue
        else:
            item_schema = schema
        for value in given:
            problem = value_problem(item_schema, value)
            if problem:
                found.append(f"{where}: {name}: {problem}")
    return found


def all_problems(requests: Iterable[Mapping[str, Any]]) -> list[str]:
    return [problem for request in requests for problem in problems(request)]
