"""`streams business`: the actions and what the command prints."""

from __future__ import annotations

import io

from streams.ops.control import command
from streams.ops.control.model import CHANGES
from streams.ops.control.view import control_line, worker_text
from streams.settings import Settings
from streams.topics import BusinessControl


def test_actions_change_only_their_field():
    start = BusinessControl("A", 4, False)
    assert CHANGES["set-limit"](start, 2) == BusinessControl("A", 2, False)
    assert CHANGES["reset-limit"](start, None) == BusinessControl("A", None, False)
    assert CHANGES["pause"](start, None) == BusinessControl("A", 4, True)
    assert CHANGES["resume"](BusinessControl("A", 4, True), None) == start
    assert "show" not in CHANGES


def test_what_the_command_prints():
    assert control_line(BusinessControl("A"), 3) == "business A: limit 3 (default), running"
    assert control_line(BusinessControl("A", 0, True), 3) == "business A: limit 0, paused"
    assert worker_text(None, 6066) == "(no worker answering on localhost:6066)"
    assert worker_text({"waiting": 6}, 6066) == '{\n  "waiting": 6\n}'


def test_a_change_writes_the_whole_configuration(monkeypatch):
    written: list[BusinessControl] = []
    current = BusinessControl("A", 2, False)
    monkeypatch.setattr(command, "current_control", lambda settings, bid: current)
    monkeypatch.setattr(
        command, "write_control", lambda settings, control: written.append(control)
    )
    out = io.StringIO()
    assert command.run_business(Settings(), "pause", "A", out=out) == 0
    assert written == [BusinessControl("A", 2, True)]
    assert out.getvalue() == "business A: limit 2, paused\n"
