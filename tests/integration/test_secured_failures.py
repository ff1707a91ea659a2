"""Every command against the SASL_SSL cluster with one thing wrong in its client
settings (the password, the CA, the host the certificate names) stops within 30 s with
one line naming that cause and exit status 2, where librdkafka alone would retry."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from streams.devtools.cluster import Cluster
from tests.support.deployment import free_port

REPO = Path(__file__).resolve().parents[2]
OTHER_CA = REPO / "tests" / "support" / "tls" / "other-ca.pem"
#: The commands that reach Kafka, each as an operator would start it.
COMMANDS = {
    "worker": ["worker"],
    "simulated dialer": ["dialer", "--simulate"],
    "topics create": ["topics", "create"],
    "lag": ["lag"],
    "business pause": ["business", "pause", "A"],
    "produce-leads": ["produce-leads", "--count", "1", "--businesses", "1"],
}
#: A limit a failing command must stay within.
FAIL_WITHIN_SECONDS = 30


def run(
    cluster: Cluster, args: list[str], tmp_path: Path, **env: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    environ = {
        **os.environ,
        "KAFKA_CLIENT_CONFIG": str(cluster.client_properties_file),
        "TOPIC_PREFIX": f"secured{uuid.uuid4().hex[:8]}.",
        "STREAMS_DATA_DIR": str(tmp_path / "data"),
        "WORKER_WEB_PORT": str(free_port()),
        **env,
    }
    for variable in ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SECURITY_PROTOCOL"):
        if variable not in env:
            environ.pop(variable, None)  # the file's, not the test session's broker
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env=environ,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=FAIL_WITHIN_SECONDS + 30,
    )
    return done, time.monotonic() - began


def by_ip_address(cluster: Cluster) -> str:
    """The cluster's bootstrap as 127.0.0.1: its certificates name localhost only."""
    return cluster.client_config()["bootstrap.servers"].replace("localhost", "127.0.0.1")


def wrong_settings(cluster: Cluster) -> dict[str, tuple[dict[str, str], str]]:
    """One wrong thing each: the variables that set it, what the line must say."""
    return {
        "wrong password": (
            {"KAFKA_SASL_PASSWORD": "not-the-password"},
            "wrong username or password",
        ),
        "untrusted CA": ({"KAFKA_SSL_CA_LOCATION": str(OTHER_CA)}, "not trusted"),
        "hostname mismatch": (
            {"KAFKA_BOOTSTRAP_SERVERS": by_ip_address(cluster)},
            "is not valid for the name '127.0.0.1'",
        ),
    }


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("wrong", ["wrong password", "untrusted CA", "hostname mismatch"])
def test_a_wrong_client_setting_stops_each_command_in_one_line(
    kafka_cluster_sasl_ssl: Cluster, tmp_path: Path, command: str, wrong: str
) -> None:
    env, cause = wrong_settings(kafka_cluster_sasl_ssl)[wrong]
    done, took = run(kafka_cluster_sasl_ssl, COMMANDS[command], tmp_path, **env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert took < FAIL_WITHIN_SECONDS, f"{command} took {took:.1f} s to fail"
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert cause in lines[0], lines[0]
    password = kafka_cluster_sasl_ssl.client_config()["sasl.password"]
    assert password not in done.stdout + done.stderr


def test_the_same_command_with_the_files_settings_as_they_are_works(
    kafka_cluster_sasl_ssl: Cluster, tmp_path: Path
) -> None:
    """The control: the failures above come from the one wrong setting."""
    done, _took = run(kafka_cluster_sasl_ssl, COMMANDS["topics create"], tmp_path)
    assert done.returncode == 0, done.stderr
