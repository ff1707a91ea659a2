"""The Kafka security settings: from variables or a client properties file, validated
at start in one line naming the setting, and the password never printed."""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import pytest

from streams import cli, metrics
from streams.settings import ConfigError, Settings, settings_environment

PASSWORD = "hunter2-d0nt-print-me"
TLS = Path(__file__).resolve().parents[1] / "support" / "tls"

SASL_SSL = {
    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "streams",
    "KAFKA_SASL_PASSWORD": PASSWORD,
    "KAFKA_SSL_CA_LOCATION": str(TLS / "ca.pem"),
}


def closed_port() -> int:
    with socket.socket() as sock:  # bound, never listening: nothing answers there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_plaintext_by_default_with_hostname_verification_on():
    settings = Settings.from_env({})
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert settings.kafka_ssl_endpoint_identification_algorithm == "https"
    assert settings.topic_replication_factor is None  # the cluster's default


def test_sasl_ssl_from_variables():
    settings = Settings.from_env({**SASL_SSL, "KAFKA_SECURITY_PROTOCOL": "sasl_ssl"})
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert settings.kafka_sasl_password == PASSWORD


def test_a_client_properties_file_gives_what_no_variable_sets(tmp_path):
    config = tmp_path / "client.properties"
    config.write_text(
        "bootstrap.servers=b1:9093,b2:9093\n"
        "security.protocol=SASL_SSL\n"
        "sasl.mechanism=SCRAM-SHA-256\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule"
        f' required username="from-file" password="{PASSWORD}";\n'
        f"ssl.ca.location={TLS / 'ca.pem'}\n"
        "linger.ms=100\n"
    )
    settings = Settings.from_env(
        {"KAFKA_CLIENT_CONFIG": str(config), "KAFKA_SASL_USERNAME": "from-variable"}
    )
    assert settings.kafka_bootstrap_servers == "b1:9093,b2:9093"
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-256"
    assert settings.kafka_sasl_username == "from-variable"  # a set variable wins
    assert settings.kafka_sasl_password == PASSWORD
    assert settings.kafka_ssl_ca_location == str(TLS / "ca.pem")


def test_the_password_from_a_file_wins_over_the_properties_file(tmp_path):
    config = tmp_path / "client.properties"
    config.write_text(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
        "sasl.username=u\nsasl.password=old\n"
    )
    secret = tmp_path / "password"
    secret.write_text(f"{PASSWORD}\n")  # as `echo` or a Secret's editor leaves it
    settings = Settings.from_env(
        {"KAFKA_CLIENT_CONFIG": str(config), "KAFKA_SASL_PASSWORD_FILE": str(secret)}
    )
    assert settings.kafka_sasl_password == PASSWORD


def bad(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    message = str(raised.value)
    assert "\n" not in message and PASSWORD not in message
    return message


def test_unknown_protocol_and_mechanism_name_the_variable():
    assert bad({"KAFKA_SECURITY_PROTOCOL": "TLS"}) == (
        "KAFKA_SECURITY_PROTOCOL must be one of PLAINTEXT, SSL, SASL_PLAINTEXT,"
        " SASL_SSL, got 'TLS'"
    )
    assert bad({**SASL_SSL, "KAFKA_SASL_MECHANISM": "GSSAPI"}).startswith(
        "KAFKA_SASL_MECHANISM must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"
    )
    assert bad({"KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM": "off"}).startswith(
        "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM must be one of https, none"
    )


def test_a_bad_value_from_the_file_names_the_file(tmp_path):
    config = tmp_path / "client.properties"
    config.write_text("security.protocol=SASL_SSSL\n")
    assert bad({"KAFKA_CLIENT_CONFIG": str(config)}).startswith(
        f"KAFKA_SECURITY_PROTOCOL from KAFKA_CLIENT_CONFIG ({config}) must be one of"
    )


@pytest.mark.parametrize("missing", ["KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"])
def test_sasl_needs_a_username_and_a_password(missing):
    env = {k: v for k, v in SASL_SSL.items() if k != missing}
    assert bad(env) == f"{missing} is required with KAFKA_SECURITY_PROTOCOL=SASL_SSL"


def test_settings_the_protocol_would_ignore_are_refused():
    assert bad({"KAFKA_SASL_USERNAME": "u"}) == (
        "KAFKA_SASL_USERNAME is set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT uses no SASL"
        " (SASL_SSL or SASL_PLAINTEXT?)"
    )
    plaintext_sasl = {**SASL_SSL, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}
    assert bad(plaintext_sasl).startswith(
        "KAFKA_SSL_CA_LOCATION is set but KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT uses"
        " no TLS"
    )
    certificate_only = {
        **SASL_SSL,
        "KAFKA_SSL_CERTIFICATE_LOCATION": str(TLS / "server.pem"),
    }
    assert bad(certificate_only) == "mutual TLS needs KAFKA_SSL_KEY_LOCATION too"


def test_files_that_cannot_be_read_are_named(tmp_path):
    missing = tmp_path / "nope.pem"
    assert bad({**SASL_SSL, "KAFKA_SSL_CA_LOCATION": str(missing)}) == (
        f"KAFKA_SSL_CA_LOCATION: cannot read {missing}: No such file or directory"
    )
    assert bad({"KAFKA_CLIENT_CONFIG": str(missing)}) == (
        f"KAFKA_CLIENT_CONFIG: cannot read {missing}: No such file or directory"
    )
    env = {k: v for k, v in SASL_SSL.items() if k != "KAFKA_SASL_PASSWORD"}
    assert bad({**env, "KAFKA_SASL_PASSWORD_FILE": str(missing)}) == (
        f"KAFKA_SASL_PASSWORD_FILE: cannot read {missing}: No such file or directory"
    )
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert bad({**env, "KAFKA_SASL_PASSWORD_FILE": str(empty)}) == (
        f"KAFKA_SASL_PASSWORD_FILE ({empty}) is empty"
    )
    if os.geteuid() != 0:  # root reads any file
        unreadable = tmp_path / "unreadable"
        unreadable.write_text(PASSWORD)
        unreadable.chmod(0)
        assert "Permission denied" in bad(
            {**env, "KAFKA_SASL_PASSWORD_FILE": str(unreadable)}
        )


def test_a_password_and_a_password_file_are_refused(tmp_path):
    secret = tmp_path / "password"
    secret.write_text(PASSWORD)
    assert bad({**SASL_SSL, "KAFKA_SASL_PASSWORD_FILE": str(secret)}) == (
        "set KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE, not both"
    )


def test_the_replication_factor_is_a_positive_integer():
    assert (
        Settings.from_env({"TOPIC_REPLICATION_FACTOR": "3"}).topic_replication_factor == 3
    )
    assert bad({"TOPIC_REPLICATION_FACTOR": "0"}).startswith(
        "TOPIC_REPLICATION_FACTOR must be at least 1"
    )


# -- never printed ---------------------------------------------------------------------


def test_the_settings_repr_hides_the_passwords():
    settings = Settings.from_env(
        {
            **SASL_SSL,
            "KAFKA_SSL_CERTIFICATE_LOCATION": str(TLS / "server.pem"),
            "KAFKA_SSL_KEY_LOCATION": str(TLS / "client-encrypted.key"),
            "KAFKA_SSL_KEY_PASSWORD": "key-secret",
        }
    )
    shown = repr(settings)
    assert "streams" in shown and PASSWORD not in shown and "key-secret" not in shown


def test_help_never_shows_the_password(monkeypatch, capsys):
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", PASSWORD)
    for command in ([], ["worker"], ["lag"], ["dialer"]):
        with pytest.raises(SystemExit):
            cli.main([*command, "--help"])
    out = capsys.readouterr().out
    assert "KAFKA_SASL_PASSWORD=" in out and PASSWORD not in out


def test_a_failing_command_names_the_cause_without_the_password(monkeypatch, capsys):
    for var, value in SASL_SSL.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{closed_port()}")
    assert cli.main(["business", "show", "A"]) == 2
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()
    assert line.startswith("streams: error: cannot reach Kafka at 127.0.0.1:")
    assert PASSWORD not in captured.out + captured.err


def test_the_metrics_page_never_shows_the_password():
    from streams.app import Limiter

    limiter = Limiter(Settings.from_env(SASL_SSL), 1)
    credentials = limiter.app.conf.broker_credentials
    assert PASSWORD not in repr(credentials)
    body, _ = metrics.metrics_text()
    assert PASSWORD.encode() not in body


def test_another_process_gets_the_values_not_the_files_they_came_from(tmp_path):
    secret = tmp_path / "password"
    secret.write_text(PASSWORD)
    env = {k: v for k, v in SASL_SSL.items() if k != "KAFKA_SASL_PASSWORD"}
    settings = Settings.from_env({**env, "KAFKA_SASL_PASSWORD_FILE": str(secret)})
    exported = settings_environment(settings)
    assert exported["KAFKA_SASL_PASSWORD_FILE"] == exported["KAFKA_CLIENT_CONFIG"] == ""
    # The user's own variables, overridden by the export, still give the same settings.
    again = Settings.from_env({**env, "KAFKA_SASL_PASSWORD_FILE": str(secret), **exported})
    assert again == dataclasses.replace(settings, kafka_sasl_password_file=None)
