"""The Twilio dialer: `calls.dial` -> Twilio calls, status callbacks -> `calls.status`.

It plays the dialer's part of the contract (`streams.topics`) against the real Twilio
REST API through the `twilio` library (its async client), with a SQL ledger
(`ledger`) as the truth about every dial. This module wires the parts, each a module of
its own:

* `feed`: the consumer thread reading `calls.dial` and committing finished offsets;
* `commands`: a command to its durable outcome (claim the row, dial, refuse or
  re-report);
* `create`: the create loop, its transitions in a table of Twilio's answers
  (`failures` classifies them), within the CPS budget and backoff of `rate`;
* `lookup`: finding at Twilio the call of a create whose answer was lost;
* `reconcile`: recovering rows a crash left without a CallSid, fetching silent calls,
  re-reporting lost reports;
* `callbacks`: the web server (status callbacks, health, metrics);
* `report` and `producer`: ledger change first, then the status to Kafka;
* `runtime`: what they share while running (stop signal, tasks, ledger threads).

The ledger row changes before its status is produced, and a row ends before the limiter
can hear that its call ended; so the design note's query `SELECT business_id, COUNT(*)
FROM outbound_call_jobs WHERE status IN ('dialing','calling') GROUP BY business_id`
never counts more calls for a business than the limiter granted.

Threads: the asyncio loop (web server, dial tasks, reconciler) runs in `run()`'s
thread; the consumer has its own thread, the producer a poll thread, the ledger a
small pool (one thread for SQLite, whose writers are serialized anyway).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import logging
import random
import socket
import threading
import time

from aiohttp import web
from twilio.http.async_http_client import AsyncTwilioHttpClient

from streams.dialers.twilio.callbacks import Callbacks
from streams.dialers.twilio.client import TwilioAccount, TwilioApi, twilio_client
from streams.dialers.twilio.commands import CommandHandler
from streams.dialers.twilio.create import (
    STATUS_PATH,
    CallRequest,
    CrashAfterCreates,
    Creator,
)
from streams.dialers.twilio.feed import CommandFeed
from streams.dialers.twilio.gate import AccountGate
from streams.dialers.twilio.ledger import Ledger, safe_url
from streams.dialers.twilio.lookup import Lookup
from streams.dialers.twilio.producer import StatusProducer
from streams.dialers.twilio.rate import CreateRateLimiter
from streams.dialers.twilio.reconcile import Reconciler
from streams.dialers.twilio.report import Reporter
from streams.dialers.twilio.runtime import Runtime
from streams.errors import StreamsError
from streams.settings import Settings
from streams.topics import CALLS_DIAL, topic_name

log = logging.getLogger(__name__)

#: On stop, how long in-flight work may take beyond one request's timeout.
SHUTDOWN_EXTRA_SECONDS = 2.0
#: The whole stop fits in this, inside deploy/'s 30 s grace period, even when Kafka is
#: gone and every commit and flush would wait out its own timeout.
STOP_BUDGET_SECONDS = 25.0
#: Kept back from in-flight dials for committing offsets and flushing statuses.
STOP_RESERVE_SECONDS = 6.0
#: How long the consumer may take to start.
FEED_START_SECONDS = 30.0


class DialerError(StreamsError):
    """The dialer cannot start, or stopped consuming; the message is one line."""


@dataclasses.dataclass
class _Parts:
    """Everything a running dialer is made of, built in one place by `run`."""

    runtime: Runtime
    producer: StatusProducer
    http: AsyncTwilioHttpClient
    reconciler: Reconciler
    commands: CommandHandler
    web_server: web.AppRunner
    gate: AccountGate


class TwilioDialer:
    """Build it (validates settings, opens and migrates the ledger), then `run(stop)`."""

    def __init__(
        self,
        settings: Settings,
        *,
        ledger: Ledger | None = None,
        group_id: str | None = None,
        instance_id: str | None = None,
        crash_after_create: int | None = None,
        seed: int | None = None,
    ):
        self.account = TwilioAccount.from_settings(settings)
        self.settings = settings
        self.group_id = group_id or f"{settings.topic_prefix}twilio-dialer"
        # Two dialers on one host cannot share a web port, so this names one dialer.
        self.instance_id = instance_id or (
            f"{self.group_id}@{socket.gethostname()}:{settings.dialer_web_port}"
        )
        self.dial_topic = topic_name(CALLS_DIAL, settings.topic_prefix)
        self.crash = (
            CrashAfterCreates.from_env()
            if crash_after_create is None
            else CrashAfterCreates(crash_after_create)
        )
        self._rng = random.Random(seed)
        self._owns_ledger = ledger is None
        self.ledger = ledger or self._open_ledger(settings.database_url)
        self._db_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1 if self.ledger.is_sqlite else 4, thread_name_prefix="dialer-db"
        )
        #: The web server's port once serving (the setting's, or the one picked for 0).
        self.web_port: int | None = None
        self.started = threading.Event()
        self.counters: collections.Counter[str] = collections.Counter()

    @staticmethod
    def _open_ledger(url: str) -> Ledger:
        try:
            ledger = Ledger(url)
            applied = ledger.migrate()
        except Exception as exc:  # one line, whatever the driver says
            raise DialerError(
                f"cannot open the ledger at {safe_url(url)}: {str(exc).splitlines()[0]}"
            ) from None
        if applied:
            log.info("ledger %s: applied schema migrations %s", safe_url(url), applied)
        return ledger

    def run(self, stop: threading.Event | None = None) -> None:
        """Serve until `stop` is set (SIGINT/SIGTERM in the CLI), then shut down cleanly."""
        stop = threading.Event() if stop is None else stop
        try:
            asyncio.run(self._main(stop))
        finally:
            self._db_pool.shutdown(wait=True)
            if self._owns_ledger:
                self.ledger.close()

    # -- running ---------------------------------------------------------------------

    def _build(self) -> _Parts:
        """Every part of the running dialer, wired; called on the event loop."""
        settings, account, ledger = self.settings, self.account, self.ledger
        runtime = Runtime(self._db_pool, self.counters)
        producer = StatusProducer(settings)
        client, http = twilio_client(account)
        api = TwilioApi(client, account.request_timeout)
        gate = AccountGate()
        reporter = Reporter(runtime, ledger, producer)
        lookup = Lookup(
            runtime,
            reporter,
            ledger,
            api,
            account.from_number,
            settle=settings.twilio_list_settle_seconds,
        )
        creator = Creator(
            runtime,
            reporter,
            lookup,
            ledger,
            api,
            # Every dialer of the account takes its share of the account's rate.
            limiter=CreateRateLimiter(
                settings.twilio_cps / settings.twilio_dialer_instances
            ),
            gate=gate,
            request=CallRequest.of(account, settings),
            rng=self._rng,
            crash=self.crash,
            owner=self.instance_id,
        )
        reconciler = Reconciler(
            runtime,
            reporter,
            lookup,
            creator,
            ledger,
            api,
            reconcile_after_seconds=settings.reconcile_after_seconds,
            from_number=account.from_number,
        )
        callbacks = Callbacks(account, runtime, reporter, ledger, producer, gate)
        return _Parts(
            runtime=runtime,
            producer=producer,
            http=http,
            reconciler=reconciler,
            commands=CommandHandler(runtime, reporter, creator, ledger),
            web_server=web.AppRunner(callbacks.app(), access_log=None),
            gate=gate,
        )

    async def _main(self, stop: threading.Event) -> None:
        parts = self._build()
        await parts.web_server.setup()
        feed: CommandFeed | None = None
        reconciler: asyncio.Task[None] | None = None
        try:
            await self._serve_web(parts)
            await parts.reconciler.recover_at_start()
            feed = CommandFeed(
                settings=self.settings,
                group_id=self.group_id,
                instance_id=self.instance_id,
                dial_topic=self.dial_topic,
                handle=parts.commands.handle,
                loop=parts.runtime.loop,
                held=lambda: parts.gate.closed,
            )
            feed.start()
            await asyncio.to_thread(feed.ready.wait, FEED_START_SECONDS)
            if feed.error is not None:
                raise DialerError(f"cannot consume {self.dial_topic}: {feed.error}")
            reconciler = asyncio.create_task(parts.reconciler.run())
            self.started.set()
            while not stop.is_set():
                if feed.error is not None:
                    raise DialerError(f"stopped consuming {self.dial_topic}: {feed.error}")
                await asyncio.sleep(0.1)
            log.info(
                "twilio dialer stopping: no new commands; finishing %d dials in flight",
                len(parts.runtime.inflight),
            )
        finally:
            await self._shutdown(parts, feed, reconciler)

    async def _serve_web(self, parts: _Parts) -> None:
        port, runner = self.settings.dialer_web_port, parts.web_server
        site = web.TCPSite(runner, "0.0.0.0", port)
        try:
            await site.start()
        except OSError as exc:
            raise DialerError(
                f"cannot serve webhooks on port {port}: {exc.strerror}"
            ) from None
        self.web_port = runner.addresses[0][1] if runner.addresses else None
        log.info(
            "twilio dialer: %s -> Twilio (%s, %g calls/s of the account's %g) -> %s;"
            " webhooks on :%s at %s%s; ledger %s",
            self.dial_topic,
            self.account.api_base_url or "api.twilio.com",
            self.settings.twilio_cps / self.settings.twilio_dialer_instances,
            self.settings.twilio_cps,
            parts.producer.topic,
            self.web_port,
            self.account.public_base_url,
            STATUS_PATH,
            safe_url(self.settings.database_url),
        )

    async def _shutdown(
        self,
        parts: _Parts,
        feed: CommandFeed | None,
        reconciler: asyncio.Task[None] | None,
    ) -> None:
        deadline = time.monotonic() + STOP_BUDGET_SECONDS

        def left(reserve: float = 0.0) -> float:
            return max(0.5, deadline - reserve - time.monotonic())

        if feed is not None:
            feed.fetching.clear()
            await asyncio.to_thread(feed.idle.wait, min(5.0, left(STOP_RESERVE_SECONDS)))
        cut_short = await parts.runtime.finish_tasks(
            min(
                self.account.request_timeout + SHUTDOWN_EXTRA_SECONDS,
                left(STOP_RESERVE_SECONDS),
            )
        )
        if cut_short:
            log.warning(
                "%d dials were cut short by the stop; the next start recovers"
                " them from the ledger",
                cut_short,
            )
        if reconciler is not None:
            reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reconciler
        if feed is not None:
            feed.closing.set()
            await asyncio.to_thread(feed.join, left(STOP_RESERVE_SECONDS / 2))
            if feed.is_alive():
                log.warning(
                    "the dial command consumer did not close in time, so offsets may"
                    " be uncommitted; their commands come back after restart and the"
                    " ledger skips the dials already made"
                )
        await parts.web_server.cleanup()
        remaining = await asyncio.to_thread(parts.producer.close, min(10.0, left()))
        if remaining:
            log.warning(
                "%d call statuses were not delivered before stopping;"
                " the reconciler reports terminal ones after restart",
                remaining,
            )
        await parts.http.close()
        log.info("twilio dialer stopped: %s", dict(self.counters))
