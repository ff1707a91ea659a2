"""Before a command uses Kafka: can it connect? If not, why, in one line.

librdkafka reports a wrong password, an untrusted certificate or a refused connection
only through its log and error callback; the request itself fails after its timeout
with "Local: Broker transport failure", and a client left to retry would hang. The
preflight asks for the cluster's metadata with those reports captured, stops at the
first failure no retry cures, and names it. A certificate that failed verification is
looked at once more through Python's `ssl` (the worker's own TLS stack), which tells an
untrusted CA from a hostname mismatch; librdkafka says "certificate verify failed" for
both.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import ClusterMetadata

from streams.errors import StreamsError
from streams.kafka import clients
from streams.settings import Settings

#: The whole preflight's budget, well inside the 30 s a failing command may take.
PREFLIGHT_SECONDS = 15.0
#: Nothing but refused, unresolvable or silent addresses for this long: give up.
UNREACHABLE_SECONDS = 5.0
#: A TCP connect and TLS handshake of the certificate probe.
PROBE_SECONDS = 5.0

#: librdkafka's report: `[proto://]host:port/<id or bootstrap>: reason (after Nms in
#: state S)`; the address and the reason are what a user needs.
_REPORT = re.compile(
    r"^(?:\w+://)?(?P<server>[^\s/]+:\d+)/\w+: (?P<reason>.*?)"
    r"(?: \(after \d+ms in state \w+\))?(?: \(\d+ identical error\(s\) suppressed\))?$"
)
_UNREACHABLE = ("Connection refused", "Failed to resolve", "timed out", "Timed out")


class ConnectError(StreamsError):
    """Kafka cannot be used with these settings; the message names the cause."""


class UnreachableError(ConnectError):
    """No broker answered at all (refused, unresolvable, or silent)."""


@dataclasses.dataclass(frozen=True)
class Report:
    """One failure librdkafka reported: the broker address and its reason."""

    server: str | None
    reason: str

    @classmethod
    def parse(cls, text: str) -> Report:
        match = _REPORT.match(text.strip())
        if match is None:
            return cls(None, text.strip())
        return cls(match.group("server"), match.group("reason"))

    @property
    def unreachable(self) -> bool:
        return any(marker in self.reason for marker in _UNREACHABLE)


@dataclasses.dataclass(frozen=True)
class Cluster:
    """What the preflight learnt: the brokers that are up."""

    metadata: ClusterMetadata

    @property
    def brokers(self) -> int:
        return len(self.metadata.brokers)


#: (host, port) -> why Python's TLS refused the broker's certificate, or None.
CertificateProbe = Callable[[str, int], "str | None"]


def diagnose(
    reports: Sequence[Report], settings: Settings, probe: CertificateProbe
) -> ConnectError | None:
    """The failure that no retry cures among `reports`, as the error to raise; None
    while every report may still go away (a broker starting, a refused connection)."""
    bootstrap = settings.kafka_bootstrap_servers
    protocol = settings.kafka_security_protocol
    for report in reports:
        reason, at = report.reason, report.server or bootstrap
        if "Unsupported SASL mechanism" in reason:
            offered = reason.rpartition("supported mechanisms: ")[2]
            return ConnectError(
                f"Kafka at {at} does not accept SASL mechanism"
                f" {settings.kafka_sasl_mechanism} (KAFKA_SASL_MECHANISM); it offers"
                f" {offered}"
            )
        if "Authentication failed" in reason or "SASL authentication error" in reason:
            wrong = "invalid credentials" in reason
            return ConnectError(
                f"Kafka at {at} refused the SASL login of user"
                f" {settings.kafka_sasl_username!r} ({settings.kafka_sasl_mechanism}): "
                + (
                    "wrong username or password (KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD)"
                    if wrong
                    else reason
                )
            )
        if "connecting to a PLAINTEXT broker listener" in reason:
            return ConnectError(
                f"Kafka at {at} does not speak TLS (a PLAINTEXT listener?) but"
                f" KAFKA_SECURITY_PROTOCOL={protocol}"
            )
        if "certificate verify failed" in reason:
            return ConnectError(_certificate_failure(at, settings, probe) or reason)
        if "SSL handshake failed" in reason:
            return ConnectError(f"the TLS handshake with Kafka at {at} failed: {reason}")
        if "APIVERSION_QUERY" in reason or (
            "closed by peer" in reason and not protocol.endswith("SSL")
        ):
            return ConnectError(
                f"Kafka at {at} closed the connection before answering: it may require"
                f" TLS or SASL (KAFKA_SECURITY_PROTOCOL={protocol})"
            )
    return None


def _certificate_failure(
    at: str, settings: Settings, probe: CertificateProbe
) -> str | None:
    host, _, port = at.rpartition(":")
    why = probe(host, int(port))
    if why is None:
        return None
    ca = settings.kafka_ssl_ca_location
    trusted = f"KAFKA_SSL_CA_LOCATION={ca}" if ca else "the system's trusted CAs"
    if "mismatch" in why:
        return (
            f"the TLS certificate of Kafka at {at} is not valid for the name {host!r}"
            f" ({why}); reach the brokers by a name their certificates list, or set"
            " KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM=none"
        )
    return (
        f"the TLS certificate of Kafka at {at} is not trusted ({why}): it is not signed"
        f" by a CA in {trusted}"
    )


def probe_certificate(settings: Settings) -> CertificateProbe:
    """A probe that runs a TLS handshake with one broker and returns why its
    certificate was refused (None: it was not, or the broker did not answer)."""

    def probe(host: str, port: int) -> str | None:
        context = clients.ssl_context(settings)
        if context is None:
            return None
        try:
            with (
                socket.create_connection((host, port), timeout=PROBE_SECONDS) as raw,
                context.wrap_socket(raw, server_hostname=host),
            ):
                return None
        except ssl.SSLCertVerificationError as exc:
            return str(exc.verify_message)
        except OSError:
            return None

    return probe


class _Captured(logging.Handler):
    """librdkafka's log lines and error callbacks during the preflight."""

    def __init__(self) -> None:
        super().__init__()
        self.reports: list[Report] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        # "FAIL [rdkafka#producer-1] [thrd:...]: host:port/bootstrap: reason"
        if text.startswith(("FAIL", "ERROR")) and "]: " in text:
            self.reports.append(Report.parse(text.split("]: ", 1)[1]))

    def error(self, error: KafkaError) -> None:
        if error.code() != KafkaError._ALL_BROKERS_DOWN:
            self.reports.append(Report.parse(error.str()))


def connect(
    settings: Settings,
    timeout: float = PREFLIGHT_SECONDS,
    unreachable_after: float = UNREACHABLE_SECONDS,
) -> Cluster:
    """The cluster's metadata, or ConnectError (one line) once it is clear that these
    settings cannot connect: at once for a refused login or certificate, after
    `unreachable_after` seconds when no broker answers, after `timeout` at most."""
    clients.ssl_context(settings)  # a bad CA, certificate or key file: say so first
    captured = _Captured()
    logger = logging.getLogger(f"{clients.LIBRDKAFKA_LOGGER}.preflight")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(captured)
    began = time.monotonic()
    admin = clients.admin(settings, {"error_cb": captured.error, "logger": logger})
    probe = probe_certificate(settings)
    try:
        while True:
            try:
                return Cluster(admin.list_topics(timeout=1.0))
            except KafkaException as exc:
                last = Report(None, clients.kafka_reason(exc))
            admin.poll(0)  # serves the error callback and the log lines
            failure = diagnose(captured.reports, settings, probe)
            if failure is not None:
                raise failure
            waited = time.monotonic() - began
            seen = captured.reports or [last]
            if waited >= timeout or (
                waited >= unreachable_after and all(r.unreachable for r in seen)
            ):
                raise UnreachableError(
                    f"cannot reach Kafka at {settings.kafka_bootstrap_servers}:"
                    f" {seen[-1].reason}"
                )
    finally:
        logger.removeHandler(captured)
