"""The dialer's web server (aiohttp on `DIALER_WEB_PORT`): Twilio's status callbacks,
health and metrics.

* `POST /twilio/status`: the signature is checked (`signatures`; 403 and nothing
  written when it fails); the status goes to the ledger (`Ledger.apply_status`: terminal
  is final, live only moves forward; a terminal one keeps its `SipResponseCode` as the
  failure's reason, since callbacks carry no `ErrorCode`), and the answer (204) is sent
  as soon as the ledger has it. Twilio retries a callback only when it could not
  connect, never after a 5xx or a slow answer, so holding the answer until Kafka has
  the status would lose it whenever Kafka is slow: the status is delivered to
  `calls.status` from the ledger's outbox instead (at once, and by the reconciler
  until it gets through). A duplicate or stale callback is answered 204 and produces
  nothing. A callback for a dial we reported stale (Twilio had the call after all) is
  logged as an error: a call the limiter is not counting.
* `GET /healthz` answers 200 when the ledger and Kafka answer and Twilio accepts the
  account, else 503.
* `GET /metrics` serves the Prometheus counters of `streams/metrics.py`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from aiohttp import web

from streams import metrics
from streams.dialers.twilio.client import TwilioAccount
from streams.dialers.twilio.create import STATUS_PATH
from streams.dialers.twilio.gate import AccountGate
from streams.dialers.twilio.ledger import Ledger
from streams.dialers.twilio.producer import StatusProducer
from streams.dialers.twilio.report import Reporter
from streams.dialers.twilio.runtime import Runtime, Stopping
from streams.dialers.twilio.signatures import SignatureCheck, form_params
from streams.topics import CALL_STATUSES, DIAL_DEADLINE_PASSED

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
#: How long each health check (ledger, Kafka) may take.
HEALTH_CHECK_SECONDS = 3.0
#: How long a callback may wait for the ledger before it is answered 503.
LEDGER_WRITE_SECONDS = 10.0
#: SIP response codes Twilio's terminal callbacks carry, and their reason phrases.
SIP_REASONS = {
    404: "Not Found",
    408: "Request Timeout",
    480: "Temporarily Unavailable",
    486: "Busy Here",
    487: "Request Terminated",
    500: "Server Internal Error",
    503: "Service Unavailable",
    600: "Busy Everywhere",
    603: "Decline",
}


def int_or_none(text: str | None) -> int | None:
    return int(text) if text is not None and re.fullmatch(r"-?\d+", text.strip()) else None


def sip_reason(status: str, code: int | None) -> str | None:
    """A failed call's reason from its `SipResponseCode` (none for a completed call)."""
    if code is None or status == "completed" or code < 300:
        return None
    return f"SIP {code} {SIP_REASONS.get(code, '')}".rstrip()


class Callbacks:
    """The web server's handlers (module doc)."""

    def __init__(
        self,
        account: TwilioAccount,
        runtime: Runtime,
        reporter: Reporter,
        ledger: Ledger,
        producer: StatusProducer,
        gate: AccountGate,
    ):
        self.signatures = SignatureCheck(
            account.auth_token,
            account.public_base_url,
            previous_auth_token=account.previous_auth_token,
            shared_keys=account.shared_keys,
        )
        self.gate = gate
        self.runtime = runtime
        self.reporter = reporter
        self.ledger = ledger
        self.producer = producer

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(STATUS_PATH, self.on_status)
        app.router.add_get(HEALTH_PATH, self.on_health)
        app.router.add_get(METRICS_PATH, self.on_metrics)
        return app

    async def on_metrics(self, request: web.Request) -> web.Response:
        body, content_type = metrics.metrics_text()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def on_status(self, request: web.Request) -> web.Response:
        form = await request.post()
        params = form_params(form)
        signature = request.headers.get("X-Twilio-Signature", "")
        settings_header = request.headers.get("X-Twilio-Webhooks-Signature-Settings", "")
        if not self.signatures.valid(
            request.rel_url.raw_query_string, form, signature, settings_header
        ):
            self.runtime.counters["callback-forbidden"] += 1
            metrics.WEBHOOK_SIGNATURE_FAILURES.inc()
            log.warning(
                "refused a status callback with %s X-Twilio-Signature (from %s)",
                "no" if not signature else "an invalid",
                request.remote,
            )
            return web.Response(status=403, text="invalid X-Twilio-Signature\n")
        status = params.get("CallStatus")
        call_sid = params.get("CallSid")
        if status not in CALL_STATUSES or not isinstance(call_sid, str) or not call_sid:
            log.warning("status callback without a known CallStatus/CallSid: %r", params)
            return web.Response(status=400, text="CallStatus and CallSid are required\n")
        return await self._apply(request, params, status, call_sid)

    async def _apply(
        self, request: web.Request, params: dict[str, Any], status: str, call_sid: str
    ) -> web.Response:
        """A genuine callback: to the ledger, and to Kafka if it changed the row."""
        sequence = int_or_none(params.get("SequenceNumber"))
        sip_code = int_or_none(params.get("SipResponseCode"))
        dial_id = request.query.get("dial_id")
        if not dial_id:
            known = await self.runtime.db(self.ledger.by_call_sid, call_sid)
            dial_id = known.dial_id if known is not None else None
        if dial_id is None:
            log.warning(
                "status callback for call %s, which the ledger does not know;"
                " acknowledged, nothing reported",
                call_sid,
            )
            return web.Response(status=204)
        try:
            changed, job = await asyncio.wait_for(
                self.runtime.db(
                    self.ledger.apply_status,
                    dial_id,
                    status,
                    sequence=sequence,
                    call_sid=call_sid,
                    error_message=sip_reason(status, sip_code),
                    sip_response_code=sip_code,
                ),
                LEDGER_WRITE_SECONDS,
            )
        except asyncio.TimeoutError:
            log.error(
                "status %s of dial %s: the ledger did not take it in %gs; answered 503,"
                " the reconciler will fetch the call",
                status,
                dial_id,
                LEDGER_WRITE_SECONDS,
            )
            return web.Response(status=503, text="ledger unavailable\n")
        except Stopping:
            return web.Response(status=503, text="stopping\n")
        if changed:
            self.runtime.spawn(self.reporter.deliver(dial_id), f"delivering {dial_id}")
        counters = self.runtime.counters
        if job is None:
            log.warning(
                "status callback for dial %s (call %s), which the ledger does not"
                " know; acknowledged, nothing reported",
                dial_id,
                call_sid,
            )
        elif job.call_sid not in (None, call_sid):
            log.error(
                "status callback for dial %s names call %s, but the ledger has call %s;"
                " ignored",
                dial_id,
                call_sid,
                job.call_sid,
            )
        elif job.twilio_status == "canceled" and job.error_message == DIAL_DEADLINE_PASSED:
            counters["callback-for-refused-dial"] += 1
            log.error(
                "Twilio reports call %s (%s) for dial %s, which we reported stale and"
                " never dialed: a call the limiter is not counting",
                call_sid,
                status,
                dial_id,
            )
        elif changed:
            counters["callback"] += 1
            log.debug("dial %s: %s (sequence %s)", dial_id, status, sequence)
        else:
            counters["callback-duplicate"] += 1
            log.debug(
                "dial %s: duplicate or stale %s (sequence %s) acknowledged",
                dial_id,
                status,
                sequence,
            )
        return web.Response(status=204)

    async def on_health(self, request: web.Request) -> web.Response:
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(
                self.runtime.db_once(self.ledger.ping), HEALTH_CHECK_SECONDS
            )
            checks["ledger"] = "ok"
        except Exception as exc:
            checks["ledger"] = (
                f"error: {str(exc).splitlines()[0] if str(exc) else repr(exc)}"
            )
        try:
            await asyncio.wait_for(
                asyncio.to_thread(self.producer.check, 2.0), HEALTH_CHECK_SECONDS
            )
            checks["kafka"] = "ok"
        except Exception as exc:
            checks["kafka"] = f"error: {exc}"
        checks["twilio"] = (
            "ok" if self.gate.problem is None else f"dialing paused: {self.gate.problem}"
        )
        healthy = all(v == "ok" for v in checks.values())
        return web.json_response(
            {"status": "ok" if healthy else "unhealthy", **checks},
            status=200 if healthy else 503,
        )
