"""Reading a Kafka client properties file (KAFKA_CLIENT_CONFIG) as managed services and
Kafka's own tools write them."""

from __future__ import annotations

import pytest

from streams.kafka.properties import (
    PropertiesError,
    client_properties,
    jaas_credentials,
    parse_properties,
)

#: The Java client file Confluent Cloud hands out (its key and secret are made up; the
#: JAAS line continued on a second line, as Java properties allow).
CONFLUENT_CLOUD_JAVA = r"""
# Required connection configs for Kafka producer, consumer, and admin
bootstrap.servers=pkc-abc12.us-east-1.aws.confluent.cloud:9092
security.protocol=SASL_SSL
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required \
    username='KEY123' password='s3cr=t;"x';
sasl.mechanism=PLAIN
# Required for correctness in Apache Kafka clients prior to 2.6
client.dns.lookup=use_all_dns_ips

# Best practice for higher availability in Apache Kafka clients prior to 3.0
session.timeout.ms=45000

# Best practice for Kafka producer to prevent data loss
acks=all
"""

#: The librdkafka flavour of the same (sasl.mechanisms, plain username/password).
CONFLUENT_CLOUD_LIBRDKAFKA = """\
bootstrap.servers=pkc-abc12.us-east-1.aws.confluent.cloud:9092
security.protocol=SASL_SSL
sasl.mechanisms=PLAIN
sasl.username=KEY123
sasl.password=secret
session.timeout.ms=45000
"""


def test_the_java_properties_syntax():
    text = (
        "# comment\n"
        "! also a comment\n"
        "   \n"
        "a=1\n"
        "b : 2\n"
        "c 3\n"
        "d=  spaced value  \n"
        "e=line one \\\n"
        "    and two\n"
        "f\\=g=escaped key\n"
        "h=tab\\there \\u0041\n"
        "i=ends in a backslash\\\\\n"
        "j=\n"
        "a=last wins\n"
    )
    assert parse_properties(text) == {
        "a": "last wins",
        "b": "2",
        "c": "3",
        "d": "spaced value  ",
        "e": "line one and two",
        "f=g": "escaped key",
        "h": "tab\there A",
        "i": "ends in a backslash\\",
        "j": "",
    }


def test_a_malformed_unicode_escape_names_its_line():
    with pytest.raises(PropertiesError, match="line 2: malformed"):
        parse_properties("a=1\nb=\\u12\n")


def test_credentials_from_a_jaas_line_in_either_quotes():
    plain = (
        'org.apache.kafka.common.security.plain.PlainLoginModule required username="u"'
        ' password="p w";'
    )
    assert jaas_credentials(plain) == ("u", "p w")
    scram = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required"
        " username='alice' password='a\\'b';"
    )
    assert jaas_credentials(scram) == ("alice", "a'b")


@pytest.mark.parametrize(
    "line, message",
    [
        ("not jaas at all", "expected `LoginModule required"),
        (
            "com.sun.security.auth.module.Krb5LoginModule required useKeyTab=true;",
            "Krb5LoginModule is not supported",
        ),
        (
            "org.apache.kafka.common.security.plain.PlainLoginModule required"
            ' username="u";',
            "no password option",
        ),
        (
            "org.apache.kafka.common.security.plain.PlainLoginModule required"
            ' username="u" password="p" @;',
            "cannot read the options",
        ),
    ],
)
def test_a_jaas_line_that_cannot_be_used_says_why(line, message):
    with pytest.raises(PropertiesError, match=message):
        jaas_credentials(line)


def test_a_confluent_cloud_java_file():
    found = client_properties(CONFLUENT_CLOUD_JAVA)
    assert found.variables == {
        "KAFKA_BOOTSTRAP_SERVERS": "pkc-abc12.us-east-1.aws.confluent.cloud:9092",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": "KEY123",
        "KAFKA_SASL_PASSWORD": 's3cr=t;"x',
    }
    assert found.ignored == ("acks", "client.dns.lookup", "session.timeout.ms")


def test_a_librdkafka_file():
    found = client_properties(CONFLUENT_CLOUD_LIBRDKAFKA)
    assert found.variables["KAFKA_SASL_MECHANISM"] == "PLAIN"
    assert found.variables["KAFKA_SASL_USERNAME"] == "KEY123"
    assert found.variables["KAFKA_SASL_PASSWORD"] == "secret"


def test_explicit_credentials_win_over_the_jaas_line():
    text = (
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule"
        ' required username="jaas" password="jaas-pw";\n'
        "sasl.username=explicit\n"
    )
    variables = client_properties(text).variables
    assert variables["KAFKA_SASL_USERNAME"] == "explicit"
    assert variables["KAFKA_SASL_PASSWORD"] == "jaas-pw"


def test_pem_stores_stand_for_the_locations_and_java_turns_hostnames_off_with_empty():
    text = (
        "ssl.truststore.type=PEM\n"
        "ssl.truststore.location=/etc/kafka/ca.pem\n"
        "ssl.keystore.type=PEM\n"
        "ssl.keystore.location=/etc/kafka/client.pem\n"
        "ssl.endpoint.identification.algorithm=\n"
    )
    variables = client_properties(text).variables
    assert variables == {
        "KAFKA_SSL_CA_LOCATION": "/etc/kafka/ca.pem",
        "KAFKA_SSL_CERTIFICATE_LOCATION": "/etc/kafka/client.pem",
        "KAFKA_SSL_KEY_LOCATION": "/etc/kafka/client.pem",
        "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM": "none",
    }


def test_a_jks_trust_store_is_refused_with_what_to_do():
    with pytest.raises(PropertiesError, match="only PEM stores.*ssl.truststore.type=JKS"):
        client_properties("ssl.truststore.location=/etc/kafka/truststore.jks\n")
