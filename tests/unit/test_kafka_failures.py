"""Every command that uses Kafka fails in one line, with exit status 2, well within 30 s
when no broker answers (the preflight; causes that need a TLS listener are in
tests/unit/test_preflight.py)."""

from __future__ import annotations

import socket
import time

import pytest

from streams import cli
from streams.dialers.twilio.ledger import Ledger

TWILIO = {
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "TWILIO_AUTH_TOKEN": "token",
    "TWILIO_FROM_NUMBER": "+14155550100",
    "PUBLIC_BASE_URL": "https://dialer.example.com",
}
COMMANDS = [
    ["worker"],
    ["dialer", "--simulate"],
    ["dialer"],
    ["topics", "create"],
    ["lag"],
    ["business", "set-limit", "A", "2"],
    ["produce-leads", "--count", "1"],
    ["ledger", "active"],
]


def closed_port() -> int:
    with socket.socket() as sock:  # bound, never listening: nothing answers there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_no_broker_is_one_line_and_exit_2(command, monkeypatch, capsys, tmp_path):
    port = closed_port()
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("DATABASE_URL", ledger_url)
    Ledger(ledger_url).migrate()  # `ledger active` reads it before Kafka
    for var, value in TWILIO.items():
        monkeypatch.setenv(var, value)
    began = time.monotonic()
    assert cli.main(command) == 2
    took = time.monotonic() - began
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()
    assert line.startswith("streams: error: ") and f"127.0.0.1:{port}" in line, line
    assert "Connection refused" in line, line
    assert took < 15, f"took {took:.1f} s"
