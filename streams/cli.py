"""`streams`: the one command line of the project, as a parser and a dispatch table.

Settings come from the environment (`streams.settings`); flags only choose what to do.
Each command is a few lines handing its flags to the module that does the work. Every
problem the user must fix is a `StreamsError`: `main` prints it as one line on stderr
and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

from streams.devtools.broker_command import MAX_NODES, run_broker
from streams.devtools.demo.command import run_demo
from streams.devtools.kafka_properties import SECURITY_CHOICES
from streams.devtools.leads import lead_source, produce_leads
from streams.dialers.simulated import SimulatedDialer
from streams.errors import StreamsError
from streams.kafka.admin import ensure_topics
from streams.ops.control.command import run_business
from streams.ops.lag.command import run_lag
from streams.ops.status.command import run_status
from streams.ops.status.model import parse_workers
from streams.ops.top.command import run_top
from streams.service import configure_logging, stop_on_signals
from streams.settings import Settings, environment_variables

EPILOG = "settings (environment variables, with defaults):\n" + "\n".join(
    f"  {var}={default!s}" for var, default in environment_variables().items()
)


# -- argument types ------------------------------------------------------------------


def _span(text: str) -> tuple[float, float]:
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected MIN,MAX seconds, got {text!r}"
        ) from None
    if not 0 <= low <= high:
        raise argparse.ArgumentTypeError(f"expected 0 <= MIN <= MAX, got {text!r}")
    return low, high


def _limit_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"limit must be an integer, got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"limit must be 0 or more, got {value}")
    return value


# -- commands ------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    # Faust takes a quarter of a second to import; only the worker needs it.
    from streams.worker import run_worker

    return run_worker(settings, args.loglevel)


def cmd_topics_create(args: argparse.Namespace) -> int:
    for name, count, created in ensure_topics(Settings.from_env()):
        print(f"{name}\t{count} partitions\t{'created' if created else 'exists'}")
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    return run_broker(args.action, args.port, args.nodes, args.security, args.data_dir)


def cmd_produce_leads(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    leads = lead_source(args.file, args.count, args.businesses, args.run_id, args.seed)
    sent = produce_leads(settings, leads)
    print(f"sent {sent} leads to {settings.topic_prefix}leads.requests")
    return 0


def cmd_dialer(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if not args.simulate:
        return _twilio_dialer(settings, args)
    configure_logging(args.verbose)
    dialer = SimulatedDialer(
        settings,
        seed=args.seed,
        talk_seconds=args.talk_seconds,
        ring_seconds=args.ring_seconds,
        ledger_path=args.ledger,
    )
    dialer.run(stop_on_signals())
    print(json.dumps(dialer.snapshot()), file=sys.stderr)
    return 0


def _twilio_dialer(settings: Settings, args: argparse.Namespace) -> int:
    settings.require_twilio()
    configure_logging(args.verbose, noisy=("twilio", "aiohttp.access"))
    # The Twilio library, aiohttp and SQLAlchemy take a quarter of a second to import;
    # only this command needs them.
    from streams.dialers.twilio.dialer import TwilioDialer

    TwilioDialer(settings, seed=args.seed).run(stop_on_signals())
    return 0


def cmd_business(args: argparse.Namespace) -> int:
    limit = getattr(args, "limit", None)
    return run_business(Settings.from_env(), args.action, args.business_id, limit)


def cmd_ledger_active(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    # SQLAlchemy and the Twilio dialer's package take a quarter of a second to import;
    # only this command needs them.
    from streams.ops.ledger.command import run_ledger_active

    return run_ledger_active(settings, args.json, args.default_limit)


def cmd_lag(args: argparse.Namespace) -> int:
    return run_lag(
        Settings.from_env(),
        groups=args.group,
        as_json=args.json,
        watch=args.watch,
        interval=args.interval,
        samples=args.samples,
        fail_over=args.fail_over,
    )


def cmd_status(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    return run_status(
        parse_workers(args.workers, settings.worker_web_port),
        args.business_id,
        args.lead,
        as_json=args.json,
        timeout=args.timeout,
    )


def cmd_top(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    return run_top(
        settings,
        parse_workers(args.workers, settings.worker_web_port),
        sort=args.sort,
        limit_rows=args.limit_rows,
        interval=args.interval,
        timeout=args.timeout,
        lag=not args.no_lag,
    )


def cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(
        Settings.from_env(),
        leads_per_business=args.leads_per_business,
        businesses=args.businesses,
        talk_seconds=args.talk_seconds,
    )


# -- parser --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="streams",
        formatter_class=formatter,
        epilog=EPILOG,
        description="Per-business outbound call limiter on Kafka: no business ever has"
        " more than its limit of calls in flight.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    worker = sub.add_parser(
        "worker",
        formatter_class=formatter,
        epilog=EPILOG,
        help="run the limiter worker (Faust) until Ctrl-C",
    )
    worker.add_argument(
        "--loglevel",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="Faust's own log level (our decisions log at INFO)",
    )
    worker.set_defaults(func=cmd_worker)

    topics = sub.add_parser("topics", help="manage the contract's topics")
    topics_sub = topics.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = topics_sub.add_parser(
        "create",
        formatter_class=formatter,
        epilog=EPILOG,
        help="create missing topics (TOPIC_PARTITIONS each) and check co-partitioning",
    )
    create.set_defaults(func=cmd_topics_create)

    broker = sub.add_parser(
        "broker",
        formatter_class=formatter,
        help="a local Kafka (KRaft) for development and tests: one node or a cluster",
        description=(
            "Start, stop or show a local Kafka run from Maven Central jars: one plaintext\n"
            "node by default, or a cluster of --nodes KRaft nodes (replication factor 3,\n"
            "min.insync.replicas 2, unclean leader election off) whose client listener\n"
            "requires TLS and SCRAM with --security sasl_ssl. stop and status find a\n"
            "cluster started with the same --port or --data-dir."
        ),
    )
    broker.add_argument("action", choices=["start", "stop", "status"])
    broker.add_argument(
        "--port",
        type=int,
        default=None,
        help="first client port (default 9092, or the recorded cluster's); one node's"
        " controller uses PORT+1, a cluster's nodes take PORT.. and their controllers"
        " the ports after those",
    )
    broker.add_argument(
        "--nodes",
        type=int,
        default=1,
        help=f"start: number of KRaft nodes, 1 to {MAX_NODES} (default 1)",
    )
    broker.add_argument(
        "--security",
        choices=SECURITY_CHOICES,
        default="plaintext",
        help="start: sasl_ssl makes clients use TLS (a throwaway CA) and SCRAM; their"
        " settings go to a client properties file for KAFKA_CLIENT_CONFIG (default"
        " plaintext)",
    )
    broker.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the broker or cluster keeps its data (default .kafka/data-PORT, or"
        " .kafka/cluster-PORT for a cluster)",
    )
    broker.set_defaults(func=cmd_broker)

    produce = sub.add_parser(
        "produce-leads",
        formatter_class=formatter,
        epilog=EPILOG,
        help="send lead requests, generated or from a JSON-lines file",
    )
    produce.add_argument("--count", type=int, default=100, help="leads to generate")
    produce.add_argument(
        "--businesses",
        type=int,
        default=10,
        help="spread generated leads over this many businesses",
    )
    produce.add_argument(
        "--run-id",
        default=uuid.uuid4().hex[:8],
        help="prefix of generated lead ids (default: random)",
    )
    produce.add_argument("--seed", type=int, help="seed for generated phone numbers")
    produce.add_argument("--file", help="JSON-lines file of lead requests ('-' for stdin)")
    produce.set_defaults(func=cmd_produce_leads)

    dialer = sub.add_parser(
        "dialer",
        formatter_class=formatter,
        epilog=EPILOG,
        help="consume dial commands and report call statuses",
        description="Place a Twilio call for every dial command (needs"
        " TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN,"
        " TWILIO_FROM_NUMBER, PUBLIC_BASE_URL; keeps its"
        " ledger at DATABASE_URL), or simulate calls.",
    )
    dialer.add_argument(
        "--simulate",
        action="store_true",
        help="simulate calls instead of dialing (no Twilio needed)",
    )
    dialer.add_argument("--talk-seconds", type=_span, default=(1.0, 4.0), metavar="MIN,MAX")
    dialer.add_argument("--ring-seconds", type=_span, default=(0.1, 0.8), metavar="MIN,MAX")
    dialer.add_argument(
        "--ledger",
        help="append every placed/ended call to this JSON-lines"
        " file (the independent concurrency record)",
    )
    dialer.add_argument("--seed", type=int)
    dialer.add_argument("-v", "--verbose", action="store_true")
    dialer.set_defaults(func=cmd_dialer)

    business = sub.add_parser(
        "business",
        formatter_class=formatter,
        epilog=EPILOG,
        help="change or show one business's limit and pause state at runtime (no restart)",
    )
    business_sub = business.add_subparsers(dest="action", metavar="ACTION", required=True)
    set_limit = business_sub.add_parser(
        "set-limit", help="override the default limit; lowering it ends no live call"
    )
    set_limit.add_argument("business_id")
    set_limit.add_argument("limit", type=_limit_arg)
    for action, text in (
        ("reset-limit", "go back to the default limit"),
        ("pause", "stop new dials; waiting leads stay queued"),
        ("resume", "dial again, filling every free slot at once"),
        ("show", "the business's configuration and live state"),
    ):
        business_sub.add_parser(action, help=text).add_argument("business_id")
    business.set_defaults(func=cmd_business)

    ledger = sub.add_parser("ledger", help="the Twilio dialer's SQL ledger (DATABASE_URL)")
    ledger_sub = ledger.add_subparsers(dest="action", metavar="ACTION", required=True)
    active = ledger_sub.add_parser(
        "active",
        formatter_class=formatter,
        epilog=EPILOG,
        help="live calls per business (the design note's verification query); exit 1"
        " when a business is over its limit (business.control, or"
        " MAX_OUTBOUND_CALLS_PER_BUSINESS)",
    )
    active.add_argument("--json", action="store_true", help="one JSON object instead")
    active.add_argument(
        "--default-limit",
        action="store_true",
        help="judge every business by MAX_OUTBOUND_CALLS_PER_BUSINESS,"
        " without reading business.control from Kafka",
    )
    active.set_defaults(func=cmd_ledger_active)

    lag = sub.add_parser(
        "lag",
        formatter_class=formatter,
        epilog=EPILOG,
        help="consumer lag (records and seconds) of the worker's and dialers' groups,"
        " with a status per group (OK, WARN, REWIND, STALL, STOP, ERR)",
        description="Per group, topic and partition: committed offset, log-end offset, lag"
        " in records and in time (age of the record at the committed offset)."
        " Groups: the worker (TOPIC_PREFIX + STREAMS_APP_ID) and the dialers"
        " (TOPIC_PREFIX + sim-dialer / twilio-dialer), those that exist."
        " Leads waiting for a slot are not lag.",
    )
    lag.add_argument(
        "--group",
        action="append",
        metavar="NAME",
        help="show this consumer group instead (repeatable)",
    )
    lag.add_argument(
        "--json",
        action="store_true",
        help="machine-readable JSON (one object per refresh with --watch)",
    )
    lag.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    lag.add_argument(
        "--interval",
        type=float,
        metavar="SECONDS",
        help="seconds between samples (default 1, with --watch 2)",
    )
    lag.add_argument(
        "--samples",
        type=int,
        metavar="N",
        help="samples per evaluation window (default 3, with --watch 10);"
        " STALL and WARN need a window of 5 s, so a single look takes"
        " more samples when it suspects one",
    )
    lag.add_argument(
        "--fail-over",
        type=float,
        metavar="SECONDS",
        help="exit 1 when any partition's time lag exceeds SECONDS or a group"
        " is STALL or STOP (for scripts and probes)",
    )
    lag.set_defaults(func=cmd_lag)

    workers_help = (
        "the workers' web views, host:port[,host:port...]; each serves the"
        " partitions it owns (default: localhost:WORKER_WEB_PORT)"
    )
    status = sub.add_parser(
        "status",
        formatter_class=formatter,
        epilog=EPILOG,
        help="per business: active calls, waiting leads, oldest wait, limit, paused"
        " (from every worker's web view)",
        description="Asks every worker's GET /businesses/ (or /businesses/BUSINESS/) and"
        " merges the answers; a worker that is down or not ready is reported,"
        " not fatal. Exit 1: BUSINESS (or --lead) not found on any worker that"
        " answered; exit 2: no worker answered.",
    )
    status.add_argument(
        "business_id", nargs="?", metavar="BUSINESS", help="only this business"
    )
    status.add_argument("--workers", metavar="HOST:PORT,...", help=workers_help)
    status.add_argument(
        "--lead",
        metavar="LEAD_ID",
        help="with BUSINESS: where this lead stands and why it waits",
    )
    status.add_argument("--json", action="store_true", help="one JSON object instead")
    status.add_argument(
        "--timeout",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="wait this long for each worker (default 3)",
    )
    status.set_defaults(func=cmd_status)

    top = sub.add_parser(
        "top",
        formatter_class=formatter,
        epilog=EPILOG,
        help="live view of all businesses (active, waiting, oldest wait, dials per"
        " minute, outcomes) with consumer lag in the header; Ctrl-C or q quits",
        description="Refreshes every --interval seconds from the workers' /businesses/ and"
        " /counters/, and the worker group's lag from the broker"
        " (KAFKA_BOOTSTRAP_SERVERS) in the background. Keys 1-5 change the"
        " sort. Without a terminal (a pipe) it prints one plain snapshot with"
        " every row (or --limit-rows) and exits.",
    )
    top.add_argument("--workers", metavar="HOST:PORT,...", help=workers_help)
    top.add_argument(
        "--sort",
        choices=["active", "waiting", "oldest", "dials", "business"],
        default="waiting",
        help="row order (default waiting; keys 1-5)",
    )
    top.add_argument(
        "--limit-rows",
        type=int,
        metavar="N",
        help="show the top N rows (default: what fits the terminal)",
    )
    top.add_argument(
        "--interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="seconds between refreshes (default 2)",
    )
    top.add_argument(
        "--timeout",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="wait this long for each worker (default 3)",
    )
    top.add_argument(
        "--no-lag", action="store_true", help="do not read consumer lag from the broker"
    )
    top.set_defaults(func=cmd_top)

    demo = sub.add_parser(
        "demo",
        formatter_class=formatter,
        epilog=EPILOG,
        help="start broker, worker and simulated dialer, send the seed"
        " scenario and watch it live",
    )
    demo.add_argument(
        "--businesses", type=int, default=3, help="businesses A, B, C... (default 3)"
    )
    demo.add_argument("--leads-per-business", type=int, default=5)
    demo.add_argument("--talk-seconds", type=_span, default=(2.0, 5.0), metavar="MIN,MAX")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except StreamsError as exc:
        print(f"streams: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("streams: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
