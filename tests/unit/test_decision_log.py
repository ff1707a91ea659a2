"""The worker's decision lines (streams/shell/decision_log.py) and their formatter."""

from __future__ import annotations

import logging

import pytest

from streams.limiter_table import Note
from streams.settings import ConfigError, Settings
from streams.shell.decision_log import DecisionLog
from streams.worker import WORKER_LOG_FORMAT, PlainFormatter

GRANTED = Note("dial-granted", "A", "L1", "lead L1 of A: granted dial A:L1:1")
EXPIRED = Note("lease-expired", "A", "L2", "lead L2 of A: lease expired")


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records]


def test_at_info_every_decision_is_a_line_of_its_own(caplog):
    decisions = DecisionLog(logging.getLogger("test.decisions"), "info")
    with caplog.at_level(logging.INFO, "test.decisions"):
        decisions.note(GRANTED)
        decisions.note(EXPIRED)
        decisions.summary(1.0)
    assert _lines(caplog) == [
        (logging.INFO, GRANTED.message),
        (logging.WARNING, EXPIRED.message),
    ], "no summary: every decision was a line already"


def test_at_debug_a_second_of_decisions_is_one_info_line_and_problems_stay(caplog):
    decisions = DecisionLog(logging.getLogger("test.decisions"), "debug")
    with caplog.at_level(logging.INFO, "test.decisions"):
        for _ in range(3):
            decisions.note(GRANTED)
        decisions.note(EXPIRED)
        decisions.summary(1.0)
        decisions.summary(1.0)  # nothing decided since: no line
    assert _lines(caplog) == [
        (logging.WARNING, EXPIRED.message),
        (logging.INFO, "decisions in the last 1 s: 3 dial-granted, 1 lease-expired"),
    ]
    with caplog.at_level(logging.DEBUG, "test.decisions"):
        caplog.clear()
        decisions.note(GRANTED)
    assert _lines(caplog) == [(logging.DEBUG, GRANTED.message)]


def test_the_decision_log_level_is_a_validated_setting():
    assert Settings.from_env({}).decision_log_level == "info"
    assert Settings.from_env({"DECISION_LOG_LEVEL": "DEBUG"}).decision_log_level == "debug"
    with pytest.raises(ConfigError, match="DECISION_LOG_LEVEL must be one of info, debug"):
        Settings.from_env({"DECISION_LOG_LEVEL": "verbose"})


def test_the_worker_s_formatter_writes_what_logging_s_own_would():
    plain, reference = PlainFormatter(), logging.Formatter(WORKER_LOG_FORMAT)
    for created in (1_700_000_000.0, 1_700_000_000.25, 1_700_000_000.999, 1_700_000_061.5):
        record = logging.LogRecord("streams.app", logging.INFO, "", 0, "m %s", ("x",), None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert plain.format(record) == reference.format(record)
