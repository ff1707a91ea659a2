"""`streams produce-leads` on bad input and an unreachable broker: one line, exit 2."""

from __future__ import annotations

import socket

import pytest

from streams import cli
from streams.devtools.leads import lead_source, produce_leads
from streams.errors import StreamsError
from streams.settings import Settings


def closed_port() -> int:
    with socket.socket() as sock:  # bound, never listening: nothing answers there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    [line] = capsys.readouterr().err.strip().splitlines()
    return line


def test_a_missing_file_is_one_line(tmp_path, capsys):
    assert cli.main(["produce-leads", "--file", str(tmp_path / "nope.jsonl")]) == 2
    assert error_line(capsys) == (
        f"streams: error: cannot read {tmp_path / 'nope.jsonl'}: No such file or directory"
    )


@pytest.mark.parametrize(
    "content, reason",
    [
        (b'{"lead_id": "L1"}\n\n[1, 2]\n', "leads.jsonl:3: not a JSON object"),
        (b'{"lead_id": "L1"}\n{lead\n', "leads.jsonl:2: not JSON: "),
        (b"\xff\xfe{}\n", "leads.jsonl: not UTF-8 text (invalid start byte)"),
    ],
)
def test_a_bad_line_is_named(tmp_path, content, reason):
    path = tmp_path / "leads.jsonl"
    path.write_bytes(content)
    with pytest.raises(StreamsError) as raised:
        list(lead_source(str(path), 1, 1, "r", None))
    assert str(raised.value).startswith(f"{tmp_path}/{reason}")


def test_generated_leads_need_a_count_and_businesses(capsys):
    assert cli.main(["produce-leads", "--count", "0"]) == 2
    assert error_line(capsys) == (
        "streams: error: --count and --businesses must be at least 1"
    )


def test_leads_the_broker_never_took_are_not_reported_sent():
    settings = Settings(kafka_bootstrap_servers=f"127.0.0.1:{closed_port()}")
    leads = lead_source(None, 2, 1, "r", 1)
    with pytest.raises(StreamsError, match="2 of 2 leads were not delivered within 0.5 s"):
        produce_leads(settings, leads, progress=False, flush_timeout=0.5)
