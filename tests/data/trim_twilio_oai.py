"""Trim Twilio's OpenAPI description of api.twilio.com 2010-04-01 to the operations the
dialer uses, for the contract check (tests/unit/test_twilio_contract.py).

    python tests/data/trim_twilio_oai.py SPEC.json COMMIT \
        > tests/data/twilio_api_v2010_calls.json

SPEC.json is `spec/json/twilio_api_v2010.json` of https://github.com/twilio/twilio-oai at
COMMIT (1.8 MB). Kept: the paths in `KEPT_PATHS` with every operation on them, and the
`components` they reference, transitively; everything else is dropped unchanged. The
source, commit and the spec's version go in `info.x-trimmed-from`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

KEPT_PATHS = (
    "/2010-04-01/Accounts/{AccountSid}/Calls.json",
    "/2010-04-01/Accounts/{AccountSid}/Calls/{Sid}.json",
)
SOURCE = (
    "https://github.com/twilio/twilio-oai/blob/{commit}/spec/json/twilio_api_v2010.json"
)


def refs(node: Any) -> set[str]:
    """Every `$ref` inside `node`."""
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(refs(value) for value in node)) if node else set()
    return set()


def trim(spec: dict[str, Any], commit: str) -> dict[str, Any]:
    paths = {path: spec["paths"][path] for path in KEPT_PATHS}
    components: dict[str, dict[str, Any]] = {}
    pending = refs(paths)
    seen: set[str] = set()
    while pending:
        ref = pending.pop()
        seen.add(ref)
        _, section, name = ref.removeprefix("#/").split("/", 2)
        node = spec["components"][section][name]
        components.setdefault(section, {})[name] = node
        pending |= refs(node) - seen
    info = dict(spec["info"])
    info["x-trimmed-from"] = {
        "source": SOURCE.format(commit=commit),
        "commit": commit,
        "spec-version": spec["info"].get("version"),
        "kept-paths": list(KEPT_PATHS),
        "by": "tests/data/trim_twilio_oai.py",
    }
    return {
        "openapi": spec["openapi"],
        "info": info,
        "servers": spec.get("servers", []),
        "paths": paths,
        "components": {k: dict(sorted(v.items())) for k, v in sorted(components.items())},
    }


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as file:
        spec = json.load(file)
    json.dump(trim(spec, argv[2]), sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
