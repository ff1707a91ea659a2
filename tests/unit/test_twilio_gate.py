"""The account gate (streams/dialers/twilio/gate.py): open, closed by an error about the
account, one probe at a time after a growing backoff, open again when Twilio accepts."""

from __future__ import annotations

import asyncio
import time

import pytest

from streams import metrics
from streams.dialers.twilio import gate as gate_module
from streams.dialers.twilio.gate import AccountGate, Passage


@pytest.fixture(autouse=True)
def quick_probes(monkeypatch):
    monkeypatch.setattr(gate_module, "PROBE_FIRST_SECONDS", 0.05)
    monkeypatch.setattr(gate_module, "PROBE_MAX_SECONDS", 0.2)


def test_a_closed_gate_lets_one_probe_through_and_opens_on_acceptance():
    async def scenario() -> None:
        gate, stop = AccountGate(), asyncio.Event()
        assert await gate.enter(None, stop) is Passage.OPEN
        gate.refused("Twilio error 20003")
        assert gate.closed and metrics.DIALER_ACCOUNT_PAUSED._value.get() == 1
        started = time.monotonic()
        probe = await gate.enter(None, stop)
        assert probe is Passage.PROBE and time.monotonic() - started >= 0.04
        waiting = asyncio.ensure_future(gate.enter(None, stop))
        await asyncio.sleep(0.1)
        assert not waiting.done(), "one probe at a time"
        gate.accepted()
        assert await asyncio.wait_for(waiting, 1) is Passage.OPEN
        assert not gate.closed and metrics.DIALER_ACCOUNT_PAUSED._value.get() == 0

    asyncio.run(scenario())


def test_refusals_back_off_longer_and_an_inconclusive_probe_is_followed_by_another():
    async def scenario() -> None:
        gate, stop = AccountGate(), asyncio.Event()
        gate.refused("first")
        assert await gate.enter(None, stop) is Passage.PROBE
        gate.refused("again")  # the probe was refused too: twice the wait
        started = time.monotonic()
        assert await gate.enter(None, stop) is Passage.PROBE
        assert time.monotonic() - started >= 0.09
        gate.inconclusive(Passage.PROBE)  # a 5xx: says nothing about the account
        assert await asyncio.wait_for(gate.enter(None, stop), 1) is Passage.PROBE
        assert gate.closed

    asyncio.run(scenario())


def test_a_dial_waits_no_later_than_its_deadline_nor_past_a_stop():
    async def scenario() -> None:
        gate, stop = AccountGate(), asyncio.Event()
        gate.refused("closed")
        assert await gate.enter(None, stop) is Passage.PROBE
        assert await gate.enter(time.monotonic() + 0.05, stop) is None
        stop.set()
        assert await gate.enter(None, stop) is None

    asyncio.run(scenario())
