"""Fault injection for tests (streams/shell/faults.py): off unless asked for."""

from __future__ import annotations

import pytest

from streams.errors import StreamsError
from streams.shell.faults import FAULTS_ENV, Faults


def test_no_variable_no_faults():
    faults = Faults.from_env({}, "p.")
    assert not faults.fires("p.leads.requests", 0, 0, "drop")


def test_each_fault_fires_once_for_its_topic_offset_and_kind():
    faults = Faults.from_env(
        {FAULTS_ENV: "leads.requests:2:drop,calls.status:0:raise"}, "p."
    )
    assert not faults.fires("p.leads.requests", 0, 2, "raise")
    assert not faults.fires("leads.requests", 0, 2, "drop"), "under the prefix only"
    assert faults.fires("p.leads.requests", 1, 2, "drop")
    assert not faults.fires("p.leads.requests", 1, 2, "drop"), "once"
    with pytest.raises(RuntimeError, match=FAULTS_ENV):
        faults.raise_if_due("p.calls.status", 0, 0)
    faults.raise_if_due("p.calls.status", 0, 0)


@pytest.mark.parametrize("spec", ["leads.requests:2:explode", "leads.requests:two:drop"])
def test_a_bad_fault_is_one_line_naming_the_variable(spec):
    with pytest.raises(StreamsError, match=f"^{FAULTS_ENV}: "):
        Faults.from_env({FAULTS_ENV: spec}, "")
