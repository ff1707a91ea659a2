"""`streams`: the one command line of the project.

Settings come from the environment (`streams.settings`); flags only choose what to do.
Bad flags or settings stop the command with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import uuid

from streams.errors import StreamsError
from streams.settings import ConfigError, Settings, environment_variables

EPILOG = "settings (environment variables, with defaults):\n" + "\n".join(
    f"  {var}={default!s}" for var, default in environment_variables().items()
)


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise StreamsError(str(exc)) from None


def _logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


# -- worker --------------------------------------------------------------------------

WORKER_LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings()
    from streams.kafka import admin

    try:
        created = admin.create_topics(settings)
        partitions = admin.check_copartitioned(settings)
    except admin.TopicsError as exc:
        raise StreamsError(str(exc)) from None
    if created:
        print(f"created topics: {', '.join(created)}", file=sys.stderr)
    import dataclasses

    import faust

    from streams.app import Limiter

    limiter = Limiter(dataclasses.replace(settings, topic_partitions=partitions))
    print(
        f"worker {limiter.app.conf.id}: {partitions} partitions on"
        f" {settings.kafka_bootstrap_servers}, limit"
        f" {settings.max_outbound_calls_per_business} calls per business,"
        f" web on :{settings.worker_web_port}",
        file=sys.stderr,
    )
    # One log line per decision: skip what no format here uses (the caller's file and
    # line, found by walking the stack; thread and multiprocessing names), as the
    # logging HOWTO's "Optimization" section suggests.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logMultiprocessing = False
    quiet = {"level": args.loglevel.upper()}
    # The worker's own lines (one per decision) get a plain formatter of their own:
    # Faust's colouring formatter cost a tenth of the worker's time (bench/RESULTS.md).
    worker = faust.Worker(
        limiter.app,
        loglevel="info",
        quiet=True,
        logging_config={
            "version": 1,
            "merge": True,
            "disable_existing_loggers": False,
            "formatters": {"plain": {"format": WORKER_LOG_FORMAT}},
            "handlers": {
                "streams": {"class": "logging.StreamHandler", "formatter": "plain"}
            },
            "loggers": {
                "faust": quiet,
                "mode": quiet,
                "aiokafka": quiet,
                "kafka": quiet,
                "streams": {"level": "INFO", "handlers": ["streams"], "propagate": False},
            },
        },
    )
    worker.execute_from_commandline()
    return 0


# -- topics --------------------------------------------------------------------------


def cmd_topics_create(args: argparse.Namespace) -> int:
    settings = _settings()
    from streams.kafka import admin
    from streams.topics import ALL_TOPICS

    try:
        created = admin.create_topics(settings)
        admin.check_copartitioned(settings)
        counts = admin.partition_counts(settings)
    except admin.TopicsError as exc:
        raise StreamsError(str(exc)) from None
    for base, count in counts.items():
        name = base if base not in ALL_TOPICS else f"{settings.topic_prefix}{base}"
        print(f"{name}\t{count} partitions\t{'created' if name in created else 'exists'}")
    return 0


# -- broker --------------------------------------------------------------------------


def _broker(args: argparse.Namespace):
    from streams.devtools.broker import Broker

    return Broker(port=args.port, controller_port=args.port + 1)


def cmd_broker(args: argparse.Namespace) -> int:
    from streams.devtools.broker import BrokerError

    broker = _broker(args)
    try:
        if args.action == "start":
            started = broker.start()
            print(
                f"broker {'started' if started else 'already running'} on {broker.bootstrap}"
            )
        elif args.action == "stop":
            stopped = broker.stop()
            print(
                f"broker on {broker.bootstrap} {'stopped' if stopped else 'was not running'}"
            )
        else:
            print(json.dumps(broker.status(), indent=2))
    except BrokerError as exc:
        raise StreamsError(str(exc)) from None
    return 0


# -- leads ---------------------------------------------------------------------------


def cmd_produce_leads(args: argparse.Namespace) -> int:
    from streams.devtools.leads import lead_source, produce_leads

    settings = _settings()
    leads = lead_source(args.file, args.count, args.businesses, args.run_id, args.seed)
    sent = produce_leads(settings, leads)
    print(f"sent {sent} leads to {settings.topic_prefix}leads.requests")
    return 0


# -- dialer --------------------------------------------------------------------------


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


def cmd_dialer(args: argparse.Namespace) -> int:
    if not args.simulate:
        return _twilio_dialer(args)
    settings = _settings()
    _logging(args.verbose)
    from streams.dialers.simulated import SimulatedDialer

    try:
        dialer = SimulatedDialer(
            settings,
            seed=args.seed,
            talk_seconds=args.talk_seconds,
            ring_seconds=args.ring_seconds,
            ledger_path=args.ledger,
        )
    except ValueError as exc:
        raise StreamsError(str(exc)) from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    dialer.run(stop)
    print(json.dumps(dialer.snapshot()), file=sys.stderr)
    return 0


# -- business control ----------------------------------------------------------------


def cmd_business(args: argparse.Namespace) -> int:
    from streams.ops.control.command import run_business

    limit = getattr(args, "limit", None)
    return run_business(_settings(), args.action, args.business_id, limit)


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


def _twilio_dialer(args: argparse.Namespace) -> int:
    """`streams dialer`: the Twilio dialer until SIGINT/SIGTERM."""
    settings = _settings()
    try:
        settings.require_twilio()
    except ConfigError as exc:
        raise StreamsError(str(exc)) from None
    _logging(args.verbose)
    if not args.verbose:
        for noisy in ("twilio", "aiohttp.access"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    from streams.dialers.twilio.dialer import DialerError, TwilioDialer

    try:
        dialer = TwilioDialer(settings, seed=args.seed)
    except DialerError as exc:
        raise StreamsError(str(exc)) from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        dialer.run(stop)
    except DialerError as exc:
        raise StreamsError(str(exc)) from None
    return 0


# -- ledger --------------------------------------------------------------------------


def cmd_ledger_active(args: argparse.Namespace) -> int:
    settings = _settings()
    # SQLAlchemy and the Twilio dialer's package take a quarter of a second to import;
    # only this command needs them.
    from streams.ops.ledger.command import run_ledger_active

    return run_ledger_active(settings, args.json, args.default_limit)


# -- lag -----------------------------------------------------------------------------


def cmd_lag(args: argparse.Namespace) -> int:
    """Consumer lag per group/topic/partition with a Burrow-style status per group."""
    from streams.ops.lag.command import run_lag

    return run_lag(
        _settings(),
        groups=args.group,
        as_json=args.json,
        watch=args.watch,
        interval=args.interval,
        samples=args.samples,
        fail_over=args.fail_over,
    )


# -- status and top ------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    """Per business: active calls, waiting leads, limit, paused, from every worker."""
    from streams.ops.status.command import run_status
    from streams.ops.status.model import parse_workers

    settings = _settings()
    return run_status(
        parse_workers(args.workers, settings.worker_web_port),
        args.business_id,
        args.lead,
        as_json=args.json,
        timeout=args.timeout,
    )


def cmd_top(args: argparse.Namespace) -> int:
    """Live view of every business, with lag in the header."""
    from streams.ops.status.model import parse_workers
    from streams.ops.top.command import run_top

    settings = _settings()
    return run_top(
        settings,
        parse_workers(args.workers, settings.worker_web_port),
        sort=args.sort,
        limit_rows=args.limit_rows,
        interval=args.interval,
        timeout=args.timeout,
        lag=not args.no_lag,
    )


# -- demo ----------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from streams.devtools.demo.command import run_demo

    return run_demo(
        _settings(),
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
        "broker", help="a local single-node Kafka (KRaft) for development and tests"
    )
    broker.add_argument("action", choices=["start", "stop", "status"])
    broker.add_argument(
        "--port",
        type=int,
        default=9092,
        help="client port; the controller uses PORT+1 (default 9092)",
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
        return args.func(args)
    except StreamsError as exc:
        print(f"streams: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("streams: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
