"""Every Kafka client is built in streams/kafka/clients.py, and each library gets the
same brokers and security from the settings there."""

from __future__ import annotations

import ast
import dataclasses
import ssl
from pathlib import Path

import pytest

from streams.kafka import clients
from streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]
#: Where the project builds clients: the package, the benchmarks, the test harness.
SCANNED = [REPO / "streams", REPO / "bench", REPO / "tests" / "support"]
HOME = REPO / "streams" / "kafka" / "clients.py"
#: Constructors of Kafka clients in confluent-kafka, aiokafka and Faust.
CLIENT_CLASSES = frozenset(
    {
        "Producer",
        "Consumer",
        "AdminClient",
        "SerializingProducer",
        "DeserializingConsumer",
        "AIOKafkaProducer",
        "AIOKafkaConsumer",
        "AIOKafkaClient",
        "App",
    }
)
CLIENT_MODULES = ("confluent_kafka", "aiokafka", "faust")
TLS = REPO / "tests" / "support" / "tls"


def client_calls(source: str) -> list[tuple[int, str]]:
    """(line, name) of every call that builds a Kafka client in `source`: by its name,
    through a module (`faust.App(...)`), or under an alias it was imported as."""
    tree = ast.parse(source)
    aliases = set(CLIENT_CLASSES)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            CLIENT_MODULES
        ):
            aliases |= {
                a.asname for a in node.names if a.name in CLIENT_CLASSES and a.asname
            }
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = (
            func.id
            if isinstance(func, ast.Name)
            else func.attr
            if isinstance(func, ast.Attribute)
            else None
        )
        if name in aliases:
            found.append((node.lineno, name))
    return found


def test_no_client_is_built_outside_the_clients_module():
    stray = [
        f"{path.relative_to(REPO)}:{line}: {name}(...)"
        for root in SCANNED
        for path in sorted(root.rglob("*.py"))
        if path != HOME
        for line, name in client_calls(path.read_text(encoding="utf-8"))
    ]
    assert not stray, "build it with streams.kafka.clients instead:\n" + "\n".join(stray)


def imports_a_client_library(source: str) -> bool:
    return any(
        (
            isinstance(node, ast.ImportFrom)
            and (node.module or "").startswith(CLIENT_MODULES)
        )
        or (
            isinstance(node, ast.Import)
            and any(alias.name.startswith(CLIENT_MODULES) for alias in node.names)
        )
        for node in ast.walk(ast.parse(source))
    )


def test_the_scan_reaches_every_module_that_talks_to_kafka():
    """The local cluster tooling, its test fixtures and the benchmarks included: any
    module outside the tests themselves that imports a client library is scanned."""
    scanned = {path for root in SCANNED for path in root.rglob("*.py")}
    for name in [
        "streams/devtools/broker.py",
        "streams/devtools/cluster.py",
        "streams/devtools/cluster_node.py",
        "tests/support/cluster.py",
        "tests/support/deployment.py",
        "bench/latency.py",
    ]:
        assert REPO / name in scanned, name
    test_code = [REPO / "tests" / "unit", REPO / "tests" / "integration", REPO / ".venv"]
    unscanned = [
        str(path.relative_to(REPO))
        for path in REPO.rglob("*.py")
        if path not in scanned
        and not any(path.is_relative_to(root) for root in test_code)
        and imports_a_client_library(path.read_text(encoding="utf-8"))
    ]
    assert not unscanned, f"add to SCANNED: {unscanned}"


def test_the_walk_finds_every_way_of_building_a_client():
    source = """
import faust
from confluent_kafka import Producer as P
from aiokafka import AIOKafkaConsumer

faust.App("id")
P({})
AIOKafkaConsumer()
confluent_kafka.admin.AdminClient({})
self.app.Table("t")
"""
    assert client_calls(source) == [
        (6, "App"),
        (7, "P"),
        (8, "AIOKafkaConsumer"),
        (9, "AdminClient"),
    ]
    assert {name for _, name in client_calls(HOME.read_text())} >= {
        "Producer",
        "Consumer",
        "AdminClient",
        "AIOKafkaProducer",
        "App",
    }


# -- the same connection in each library ----------------------------------------------

SASL_SSL = Settings(
    kafka_bootstrap_servers="b1:9093,b2:9093",
    kafka_security_protocol="SASL_SSL",
    kafka_sasl_mechanism="SCRAM-SHA-512",
    kafka_sasl_username="streams",
    kafka_sasl_password="pw",
    kafka_ssl_ca_location=str(TLS / "ca.pem"),
)


def test_plaintext_clients_get_no_security_settings():
    config = clients.librdkafka_config(Settings(kafka_bootstrap_servers="h:1"))
    assert config["bootstrap.servers"] == "h:1"
    assert config["security.protocol"] == "PLAINTEXT"
    assert not any(key.startswith(("sasl.", "ssl.")) for key in config)
    assert clients.aiokafka_config(Settings(kafka_bootstrap_servers="h:1")) == {
        "bootstrap_servers": "h:1",
        "security_protocol": "PLAINTEXT",
    }


def test_librdkafka_gets_sasl_ssl_by_its_own_names():
    config = clients.librdkafka_config(SASL_SSL, {"client.id": "x"})
    assert {k: v for k, v in config.items() if k.startswith(("sasl.", "ssl.", "sec"))} == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "streams",
        "sasl.password": "pw",
        "ssl.ca.location": str(TLS / "ca.pem"),
        "ssl.endpoint.identification.algorithm": "https",
    }
    assert config["client.id"] == "x"


def test_every_producer_waits_for_all_replicas_idempotently_with_murmur2():
    for config in (
        clients.producer_config(SASL_SSL),
        clients.status_producer_config(SASL_SSL),
    ):
        assert config["partitioner"] == "murmur2_random"
        assert config["acks"] == "all" and config["enable.idempotence"] is True
        assert config["security.protocol"] == "SASL_SSL"


def test_aiokafka_gets_scram_and_a_verifying_tls_context():
    config = clients.aiokafka_config(SASL_SSL)
    context = config.pop("ssl_context")
    assert config == {
        "bootstrap_servers": "b1:9093,b2:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "streams",
        "sasl_plain_password": "pw",
    }
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "streams test CA"),),)
    ]


def test_hostname_verification_can_be_turned_off_but_not_the_ca_check():
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_endpoint_identification_algorithm="none",
    )
    context = clients.ssl_context(settings)
    assert context is not None
    assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert clients.librdkafka_config(settings)["ssl.endpoint.identification.algorithm"] == (
        "none"
    )


def test_mutual_tls_loads_an_encrypted_key_with_its_password():
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_ca_location=str(TLS / "ca.pem"),
        kafka_ssl_certificate_location=str(TLS / "server.pem"),
        kafka_ssl_key_location=str(TLS / "client-encrypted.key"),
        kafka_ssl_key_password="key-secret",
    )
    assert clients.ssl_context(settings) is not None
    config = clients.librdkafka_config(settings)
    assert config["ssl.key.password"] == "key-secret"
    with pytest.raises(clients.ClientConfigError, match="KAFKA_SSL_KEY_PASSWORD is wrong"):
        clients.ssl_context(dataclasses.replace(settings, kafka_ssl_key_password="wrong"))


def test_a_ca_file_without_a_certificate_is_named():
    settings = Settings(
        kafka_security_protocol="SSL", kafka_ssl_ca_location=str(TLS / "README.md")
    )
    with pytest.raises(clients.ClientConfigError, match="KAFKA_SSL_CA_LOCATION"):
        clients.ssl_context(settings)


def test_faust_gets_credentials_its_driver_maps_back_to_the_same_aiokafka_settings():
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    for settings in (
        SASL_SSL,
        Settings(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="PLAIN",
            kafka_sasl_username="u",
            kafka_sasl_password="p",
        ),
        Settings(kafka_security_protocol="SSL", kafka_ssl_ca_location=str(TLS / "ca.pem")),
        Settings(),
    ):
        mapped = dict(credentials_to_aiokafka_auth(clients.faust_credentials(settings)))
        ours = clients.aiokafka_config(settings)
        ours.pop("bootstrap_servers")
        assert mapped.keys() == ours.keys() | ({"ssl_context"} & mapped.keys())
        for key, value in ours.items():
            if key != "ssl_context":
                assert mapped[key] == value, key


def test_the_faust_app_replicates_its_internal_topics_as_told():
    app = clients.faust_app(SASL_SSL, "app-id", 3)
    assert app.conf.topic_replication_factor == 3
    assert app.conf.producer_acks == -1
    assert app.conf.broker_credentials.username == "streams"
