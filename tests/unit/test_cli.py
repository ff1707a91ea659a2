"""Bad command-line arguments end in one line naming the cause, exit 2."""

from __future__ import annotations

import pytest

from streams.cli import main


@pytest.mark.parametrize(
    ("argv", "cause"),
    [
        (["worker", "--bogus"], "unrecognized arguments: --bogus"),
        (["business", "set-limit"], "the following arguments are required"),
        (
            ["business", "set-limit", "biz-1", "three"],
            "limit must be an integer, got 'three'",
        ),
        (["no-such-command"], "invalid choice: 'no-such-command'"),
    ],
)
def test_bad_arguments_fail_in_one_line_with_exit_2(
    argv: list[str], cause: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert cause in err
    assert "--help" in err
