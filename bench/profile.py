"""Summarise a py-spy raw (collapsed-stack) profile: where the samples were.

    python -m bench.profile FILE [--top 25] [--group]

Prints the functions with the largest inclusive and self share of the samples, and with
--group the share of the samples whose stack passes through each of a few named parts
(our core, our shell, Faust's table/changelog, aiokafka, logging, the event loop idling).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys

GROUPS = {
    # each sample goes to the part of its innermost frame that matches one
    "idle (event loop waiting: select/epoll)": re.compile(
        r"\b(select|poll|_run_once) \(.*selectors\.py"
    ),
    "our core (limiter_table.process, its state codec)": re.compile(
        r"limiter_(table|state)\.py"
    ),
    "logging (our log lines)": re.compile(r"logging/__init__\.py"),
    "metrics (prometheus_client)": re.compile(r"prometheus_client|streams/metrics\.py"),
    "Faust table set -> changelog send": re.compile(r"faust/tables/|faust/stores/"),
    "aiokafka producer/consumer": re.compile(r"aiokafka/"),
    "our shell (agent, driver, units, outbox, decoding)": re.compile(
        r"streams/(app|topics)\.py|streams/shell/"
    ),
    "Faust stream/consumer/agent machinery": re.compile(
        r"faust/(streams|transport|agents|channels|topics|sensors|app)"
    ),
    "mode / asyncio other": re.compile(r"mode/|asyncio/"),
}


def load(path: str) -> list[tuple[list[str], int]]:
    stacks = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            stacks.append((stack.split(";"), int(count)))
    return stacks


PLUMBING = "mode / asyncio other"


def _part(frames: list[str]) -> str:
    """The named part of the innermost frame that belongs to one, the event loop's
    plumbing counting for whoever awaited through it: a sample in Faust's stream under
    our agent is Faust's, one in asyncio under the outbox is the outbox's; only what no
    other part called is the plumbing's."""
    for frame in reversed(frames):
        for name, pattern in GROUPS.items():
            if name != PLUMBING and pattern.search(frame):
                return name
    if any(GROUPS[PLUMBING].search(frame) for frame in frames):
        return PLUMBING
    return "other"


def summarise(path: str, top: int = 25) -> dict:
    stacks = load(path)
    total = sum(c for _, c in stacks)
    inclusive: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    groups: collections.Counter = collections.Counter()
    for frames, count in stacks:
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
        groups[_part(frames)] += count
    pct = lambda c: round(100 * c / total, 1)  # noqa: E731
    return {
        "file": path,
        "samples": total,
        "groups_pct": {k: pct(v) for k, v in groups.most_common()},
        "inclusive_pct": [[f, pct(c)] for f, c in inclusive.most_common(top)],
        "self_pct": [[f, pct(c)] for f, c in own.most_common(top)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("files", nargs="+")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    for path in args.files:
        summary = summarise(path, args.top)
        if args.json:
            print(json.dumps(summary))
            continue
        print(f"\n{path}: {summary['samples']} samples")
        print("  by part (first match from the leaf):")
        for name, share in summary["groups_pct"].items():
            print(f"    {share:5.1f}%  {name}")
        print("  inclusive:")
        for frame, share in summary["inclusive_pct"]:
            print(f"    {share:5.1f}%  {frame}")
        print("  self:")
        for frame, share in summary["self_pct"]:
            print(f"    {share:5.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
