"""Plot slot-free -> next dial delay (p50, p99) against the number of businesses.

    python -m bench.plot bench/results/RUN/results.jsonl [-o bench/slot_free_delay.png]

Reads the `slot_free` JSON lines that `bench/seed_poller.py --out` wrote (or, with
`--bench slot_free_at_scale`, those of `bench/scale.py`); one line per design and size,
log-log axes.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

XLABEL = {
    "slot_free": "businesses, each with a backlog (limit 3 calls each)",
    "slot_free_at_scale": "businesses held (each 3 live calls + 1 waiting lead),"
    " same load of probe businesses",
}
STYLE = {
    "ours": ("tab:green", "o"),
    "ours-2-workers": ("tab:cyan", "D"),
    "seed-1-poller": ("tab:red", "s"),
    "seed-2-pollers": ("tab:orange", "^"),
    "seed-callback-1-poller": ("tab:purple", "D"),
    "seed-callback-2-pollers": ("tab:pink", "v"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("results")
    parser.add_argument(
        "-o",
        "--output",
        default=str(Path(__file__).resolve().parent / "slot_free_delay.png"),
    )
    parser.add_argument("--title", default="")
    parser.add_argument(
        "--bench",
        default="slot_free",
        help="which JSON lines: slot_free (bench/seed_poller.py) or"
        " slot_free_at_scale (bench/scale.py)",
    )
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[dict]] = collections.defaultdict(list)
    for line in Path(args.results).read_text().splitlines():
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        if r.get("bench") != args.bench:
            continue
        if r.get("slot_free_censored") and r.get("slot_free_ms_p50_at_least"):
            # too many refills still pending when the run stopped: plot lower bounds
            r = dict(
                r,
                slot_free_ms_p50=r["slot_free_ms_p50_at_least"],
                slot_free_ms_p99=r["slot_free_ms_p99_at_least"],
                lower_bound=True,
            )
        if r.get("slot_free_ms_p50") is not None:
            series[r["system"]].append(r)
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for system, rows in sorted(series.items()):
        rows.sort(key=lambda r: r["businesses"])
        color, marker = STYLE.get(system, ("tab:blue", "x"))
        xs = [r["businesses"] for r in rows]
        ax.plot(
            xs,
            [r["slot_free_ms_p50"] for r in rows],
            color=color,
            marker=marker,
            label=f"{system} p50",
        )
        ax.plot(
            xs,
            [r["slot_free_ms_p99"] for r in rows],
            color=color,
            marker=marker,
            linestyle="--",
            label=f"{system} p99",
        )
        for r in rows:
            if r.get("lower_bound"):
                ax.annotate(
                    "",
                    xy=(r["businesses"], r["slot_free_ms_p99"] * 2.2),
                    xytext=(r["businesses"], r["slot_free_ms_p99"]),
                    arrowprops={"arrowstyle": "->", "color": color},
                )
                ax.annotate(
                    f"lower bound:\n{r['slot_free_censored']} refills\nstill pending",
                    (r["businesses"], r["slot_free_ms_p50"]),
                    textcoords="offset points",
                    xytext=(-70, -22),
                    fontsize=6,
                    color=color,
                )
            ax.annotate(
                f"{r['grants_per_s_sustained']}/s",
                (r["businesses"], r["slot_free_ms_p99"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color=color,
            )
    ax.axhline(50, color="grey", linewidth=0.8, linestyle=":")
    ax.text(
        min(r["businesses"] for rows in series.values() for r in rows),
        55,
        "target p99 50 ms",
        fontsize=7,
        color="grey",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(XLABEL.get(args.bench, "businesses"))
    ax.set_ylabel("slot free -> next dial of that business (ms)")
    ax.set_title(
        args.title or "Slot-free -> next dial delay (labels: grants/s sustained)",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(args.output)
    print(
        json.dumps(
            {
                "bench": "plot",
                "output": args.output,
                "series": {k: len(v) for k, v in series.items()},
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
