"""The preflight names why Kafka cannot be used, in one line, from what librdkafka
reports; certificates are judged again by a real TLS handshake (here with a local TLS
server standing in for a broker)."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.kafka import preflight
from streams.kafka.preflight import ConnectError, Report, UnreachableError, diagnose
from streams.settings import Settings

TLS = Path(__file__).resolve().parents[1] / "support" / "tls"
SASL = Settings(
    kafka_bootstrap_servers="localhost:9093",
    kafka_security_protocol="SASL_SSL",
    kafka_sasl_mechanism="SCRAM-SHA-512",
    kafka_sasl_username="streams",
    kafka_sasl_password="pw",
)


def never_probed(host: str, port: int) -> str | None:
    raise AssertionError("no certificate to look at")


def message(text: str, settings: Settings = SASL, probe=never_probed) -> str | None:
    failure = diagnose([Report.parse(text)], settings, probe)
    return None if failure is None else str(failure)


def test_reports_are_split_into_the_broker_and_the_reason():
    report = Report.parse(
        "sasl_ssl://localhost:49091/bootstrap: SASL authentication error: Authentication"
        " failed (after 308ms in state AUTH_REQ)"
    )
    assert report == Report(
        "localhost:49091", "SASL authentication error: Authentication failed"
    )
    assert Report.parse("1/1 brokers are down") == Report(None, "1/1 brokers are down")


def test_a_wrong_password_names_the_user_and_the_settings():
    assert message(
        "sasl_ssl://localhost:9093/bootstrap: SASL authentication error: Authentication"
        " failed during authentication due to invalid credentials with SASL mechanism"
        " SCRAM-SHA-512 (after 308ms in state AUTH_REQ)"
    ) == (
        "Kafka at localhost:9093 refused the SASL login of user 'streams'"
        " (SCRAM-SHA-512): wrong username or password (KAFKA_SASL_USERNAME,"
        " KAFKA_SASL_PASSWORD)"
    )


def test_a_mechanism_the_broker_does_not_offer():
    assert message(
        "sasl_ssl://localhost:9093/bootstrap: SASL PLAIN mechanism handshake failed:"
        " Broker: Unsupported SASL mechanism: broker's supported mechanisms:"
        " SCRAM-SHA-512,SCRAM-SHA-256 (after 301ms in state AUTH_HANDSHAKE)"
    ) == (
        "Kafka at localhost:9093 does not accept SASL mechanism SCRAM-SHA-512"
        " (KAFKA_SASL_MECHANISM); it offers SCRAM-SHA-512,SCRAM-SHA-256"
    )


def test_the_wrong_protocol_either_way():
    assert message(
        "sasl_ssl://localhost:9092/bootstrap: SSL handshake failed: Disconnected: SSL"
        " connection closed by peer: connecting to a PLAINTEXT broker listener? (after"
        " 8ms in state SSL_HANDSHAKE)"
    ) == (
        "Kafka at localhost:9092 does not speak TLS (a PLAINTEXT listener?) but"
        " KAFKA_SECURITY_PROTOCOL=SASL_SSL"
    )
    assert message(
        "localhost:9093/bootstrap: Disconnected: connection closed by peer: receive 0"
        " after POLLIN (after 1ms in state APIVERSION_QUERY)",
        Settings(kafka_bootstrap_servers="localhost:9093"),
    ) == (
        "Kafka at localhost:9093 closed the connection before answering: it may require"
        " TLS or SASL (KAFKA_SECURITY_PROTOCOL=PLAINTEXT)"
    )


def test_a_refused_connection_may_still_go_away():
    assert (
        message(
            "sasl_ssl://localhost:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed:"
            " Connection refused (after 0ms in state CONNECT)"
        )
        is None
    )
    assert Report.parse(
        "localhost:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused"
    ).unreachable


# -- certificates, against a local TLS server ------------------------------------------


@pytest.fixture
def tls_server() -> Iterator[int]:
    """A TLS server with a certificate for `localhost` only, signed by ca.pem; it
    completes handshakes and hangs up. Yields its port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(TLS / "server.pem", TLS / "server.key")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(2)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    listener.close()


def tls_settings(host: str, port: int, ca: str = "ca.pem") -> Settings:
    return Settings(
        kafka_bootstrap_servers=f"{host}:{port}",
        kafka_security_protocol="SSL",
        kafka_ssl_ca_location=str(TLS / ca),
    )


def test_the_probe_tells_a_hostname_mismatch_from_an_untrusted_ca(tls_server):
    port = tls_server
    assert (
        preflight.probe_certificate(tls_settings("localhost", port))("localhost", port)
        is None
    )
    mismatch = preflight.probe_certificate(tls_settings("127.0.0.1", port))
    assert "mismatch" in (mismatch("127.0.0.1", port) or "")
    untrusted = preflight.probe_certificate(tls_settings("localhost", port, "other-ca.pem"))
    assert "unable to get local issuer certificate" in (untrusted("localhost", port) or "")


def connect_error(settings: Settings) -> tuple[str, float]:
    began = time.monotonic()
    with pytest.raises(ConnectError) as raised:
        preflight.connect(settings)
    return str(raised.value), time.monotonic() - began


def test_a_hostname_mismatch_fails_at_once_in_one_line(tls_server):
    line, took = connect_error(tls_settings("127.0.0.1", tls_server))
    assert line == (
        f"the TLS certificate of Kafka at 127.0.0.1:{tls_server} is not valid for the"
        " name '127.0.0.1' (IP address mismatch, certificate is not valid for"
        " '127.0.0.1'.); reach the brokers by a name their certificates list, or set"
        " KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM=none"
    )
    assert took < preflight.UNREACHABLE_SECONDS


def test_an_untrusted_ca_fails_at_once_in_one_line(tls_server):
    line, took = connect_error(tls_settings("localhost", tls_server, "other-ca.pem"))
    assert line == (
        f"the TLS certificate of Kafka at localhost:{tls_server} is not trusted (unable"
        " to get local issuer certificate): it is not signed by a CA in"
        f" KAFKA_SSL_CA_LOCATION={TLS / 'other-ca.pem'}"
    )
    assert took < preflight.UNREACHABLE_SECONDS


def test_no_broker_at_all_fails_after_the_unreachable_wait():
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        began = time.monotonic()
        with pytest.raises(UnreachableError) as raised:
            preflight.connect(
                Settings(kafka_bootstrap_servers=f"127.0.0.1:{port}"), unreachable_after=1
            )
    assert str(raised.value) == (
        f"cannot reach Kafka at 127.0.0.1:{port}: Connect to ipv4#127.0.0.1:{port}"
        " failed: Connection refused"
    )
    assert 1 <= time.monotonic() - began < 5
