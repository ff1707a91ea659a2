"""Every Kafka client of the project is configured and built here, and only here.

The worker's Faust app (whose consumer, producer and topic creation run on aiokafka),
its changelog producer (aiokafka), and every confluent-kafka producer, consumer and
admin client of the CLI, the dialers, the ops commands, the devtools, the test harness
and the benchmarks take their brokers and security from `Settings` through one function
per client library: `librdkafka_config`, `aiokafka_config`, `faust_app`. A secured
cluster so needs its settings in one place, mapped once per library, and
`tests/unit/test_clients.py` fails on a client built anywhere else.

Every producer partitions with `murmur2_random` (the contract's partitioner), waits for
all in-sync replicas and is idempotent. librdkafka's log lines go to the
`streams.kafka.librdkafka` logger; a `quiet` client drops them, for commands whose
failures reach the caller as exceptions and would be buried under a refused
connection logged once a second.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from streams.errors import StreamsError
from streams.settings import Settings
from streams.topics import PARTITIONER, STATUS_LINGER_MS

if TYPE_CHECKING:
    import faust
    from aiokafka import AIOKafkaProducer

LIBRDKAFKA_LOGGER = "streams.kafka.librdkafka"


class ClientConfigError(StreamsError):
    """A security file cannot be used as given; the message names the setting."""


def kafka_reason(exc: object) -> str:
    """The one-line reason of a KafkaException (or of the KafkaError it carries)."""
    err = exc.args[0] if isinstance(exc, Exception) and exc.args else exc
    return err.str() if hasattr(err, "str") else str(exc)


def _quiet_logger() -> logging.Logger:
    logger = logging.getLogger(f"{LIBRDKAFKA_LOGGER}.quiet")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def librdkafka_config(
    settings: Settings, overrides: Mapping[str, Any] | None = None, *, quiet: bool = False
) -> dict[str, Any]:
    """confluent-kafka settings: the brokers and security, by librdkafka's names, then
    `overrides`."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "security.protocol": settings.kafka_security_protocol,
        "logger": _quiet_logger() if quiet else logging.getLogger(LIBRDKAFKA_LOGGER),
    }
    if quiet:
        config["error_cb"] = lambda _error: None
    if settings.kafka_security_protocol.startswith("SASL_"):
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = settings.kafka_sasl_username
        config["sasl.password"] = settings.kafka_sasl_password
    if settings.kafka_security_protocol.endswith("SSL"):
        config["ssl.endpoint.identification.algorithm"] = (
            settings.kafka_ssl_endpoint_identification_algorithm
        )
        optional = {
            "ssl.ca.location": settings.kafka_ssl_ca_location,
            "ssl.certificate.location": settings.kafka_ssl_certificate_location,
            "ssl.key.location": settings.kafka_ssl_key_location,
            "ssl.key.password": settings.kafka_ssl_key_password,
        }
        config.update({key: value for key, value in optional.items() if value})
    config.update(overrides or {})
    return config


def producer_config(
    settings: Settings, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What every producer we ship starts from: murmur2 partitioning like Faust and
    Java, acks from every in-sync replica, idempotence, a short linger."""
    defaults = {
        "partitioner": PARTITIONER,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
    }
    return librdkafka_config(settings, {**defaults, **(overrides or {})})


def producer(settings: Settings, overrides: Mapping[str, Any] | None = None) -> Producer:
    return Producer(producer_config(settings, overrides))


def status_producer_config(settings: Settings) -> dict[str, Any]:
    """A dialer's `calls.status` producer: sends at once (a status frees a slot)."""
    return producer_config(settings, {"linger.ms": STATUS_LINGER_MS})


def status_producer(settings: Settings) -> Producer:
    return Producer(status_producer_config(settings))


def consumer(
    settings: Settings,
    group_id: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    quiet: bool = False,
) -> Consumer:
    options = {"group.id": group_id, **(overrides or {})}
    return Consumer(librdkafka_config(settings, options, quiet=quiet))


def admin(
    settings: Settings, overrides: Mapping[str, Any] | None = None, *, quiet: bool = True
) -> AdminClient:
    """An admin client; quiet unless asked, since its requests report their errors."""
    return AdminClient(librdkafka_config(settings, overrides, quiet=quiet))


def admin_from_config(config: Mapping[str, Any]) -> AdminClient:
    """A quiet admin client from librdkafka settings as given: the local cluster
    tooling describes each node's listener that way, not as `Settings`."""
    quiet: dict[str, Any] = {"logger": _quiet_logger(), "error_cb": lambda _error: None}
    return AdminClient({**quiet, **config})


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the Python clients (aiokafka, and the preflight's probe), or
    None without TLS: the CA file (else the system's CAs), hostname verification unless
    `none`, and this client's certificate for mutual TLS."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    try:
        context = ssl.create_default_context(cafile=settings.kafka_ssl_ca_location)
    except (ssl.SSLError, ValueError) as exc:
        raise ClientConfigError(
            f"KAFKA_SSL_CA_LOCATION ({settings.kafka_ssl_ca_location}) holds no usable"
            f" PEM certificate: {exc}"
        ) from None
    context.check_hostname = settings.kafka_ssl_endpoint_identification_algorithm == "https"
    certificate = settings.kafka_ssl_certificate_location
    if certificate is not None:
        try:
            context.load_cert_chain(
                certificate,
                settings.kafka_ssl_key_location,
                password=settings.kafka_ssl_key_password,
            )
        except (ssl.SSLError, ValueError) as exc:
            raise ClientConfigError(
                f"KAFKA_SSL_CERTIFICATE_LOCATION ({certificate}) and"
                f" KAFKA_SSL_KEY_LOCATION ({settings.kafka_ssl_key_location}) are not a"
                " PEM certificate and its key (or KAFKA_SSL_KEY_PASSWORD is wrong):"
                f" {exc}"
            ) from None
    return context


def aiokafka_config(settings: Settings) -> dict[str, Any]:
    """aiokafka settings: the brokers and security, by aiokafka's names."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        config["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL_"):
        config["sasl_mechanism"] = settings.kafka_sasl_mechanism
        config["sasl_plain_username"] = settings.kafka_sasl_username
        config["sasl_plain_password"] = settings.kafka_sasl_password
    return config


def aiokafka_producer(settings: Settings, **options: Any) -> AIOKafkaProducer:
    """An idempotent aiokafka producer waiting for every in-sync replica."""
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(
        **aiokafka_config(settings), acks="all", enable_idempotence=True, **options
    )


def faust_credentials(settings: Settings) -> Any:
    """Faust's `broker_credentials`: what its aiokafka driver maps back to aiokafka's
    security settings (faust.transport.drivers.aiokafka.credentials_to_aiokafka_auth)."""
    import faust

    context = ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def faust_app(
    settings: Settings, app_id: str, replication_factor: int, **options: Any
) -> faust.App:
    """A Faust app on the `kafka://` transport whose internal topics (the tables'
    changelogs, the assignor's leader topic) get `replication_factor` replicas, and
    whose producer waits for every in-sync replica."""
    import faust

    return faust.App(
        app_id,
        broker=f"kafka://{settings.kafka_bootstrap_servers}",
        broker_credentials=faust_credentials(settings),
        topic_replication_factor=replication_factor,
        producer_acks=-1,
        **options,
    )
