"""tests/support/waiting.py: the one wait-until loop of the suite."""

from __future__ import annotations

import itertools

import pytest

from tests.support.waiting import NeverHolds, eventually


def test_returns_the_first_truthy_result() -> None:
    calls = itertools.count()
    assert eventually(lambda: next(calls) >= 3 and "ready", interval=0) == "ready"
    assert next(calls) == 4


def test_retries_assertions_and_os_errors_until_the_check_passes() -> None:
    attempts = iter([AssertionError("not yet"), ConnectionRefusedError(), None])

    def check() -> bool:
        failure = next(attempts)
        if failure is not None:
            raise failure
        return True

    assert eventually(check, interval=0) is True


def test_past_the_timeout_the_checks_last_complaint_is_raised() -> None:
    calls = itertools.count()

    def check() -> bool:
        raise AssertionError(f"complaint {next(calls)}")

    with pytest.raises(AssertionError, match=r"complaint (\d+)") as failed:
        eventually(check, timeout=0.05, interval=0.01)
    assert failed.value.args[0] == f"complaint {next(calls) - 1}"


def test_a_check_that_only_returned_falsy_is_named() -> None:
    with pytest.raises(
        AssertionError, match=r"^drained did not hold within 0s \(last: \[\]\)"
    ):
        eventually(lambda: [], timeout=0, what="drained")
    with pytest.raises(
        AssertionError, match=r"^<lambda> did not hold within 0s \(last: 0\)"
    ):
        eventually(lambda: 0, timeout=0)


def test_never_holds_and_other_errors_end_the_wait_at_once() -> None:
    calls = itertools.count()

    def exited() -> bool:
        next(calls)
        raise NeverHolds("the worker exited 1")

    with pytest.raises(NeverHolds, match="exited 1"):
        eventually(exited, timeout=30)
    assert next(calls) == 1

    def broken() -> bool:
        raise KeyError("bug in the check")

    with pytest.raises(KeyError):
        eventually(broken, timeout=30)
