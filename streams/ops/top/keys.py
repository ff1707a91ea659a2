"""Single key presses from a terminal, for `streams top`'s sort keys and q."""

from __future__ import annotations

import os
import select
import termios
import threading
import tty
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO


class Keys:
    """Single key presses from a terminal's stdin, in a thread (cbreak mode: no Enter,
    no echo; Ctrl-C still interrupts). Does nothing when stdin is not a terminal."""

    def __init__(self, stream: TextIO | None, on_key: Callable[[str], None]) -> None:
        self.stream = stream
        self.on_key = on_key
        self._saved: list[Any] | None = None
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Keys:
        try:
            if self.stream is None or not self.stream.isatty():
                return self
            fd = self.stream.fileno()
            self._saved = termios.tcgetattr(fd)
            tty.setcbreak(fd)
        except (OSError, ValueError, AttributeError):
            return self
        self._fd = fd
        self._thread = threading.Thread(
            target=self._run, args=(fd,), name="streams-top-keys", daemon=True
        )
        self._thread.start()
        return self

    def _run(self, fd: int) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([fd], [], [], 0.2)
                if ready:
                    data = os.read(fd, 32)
                    if not data:
                        return
                    for char in data.decode(errors="ignore"):
                        self.on_key(char)
            except (OSError, ValueError):
                return

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1)
        if self._fd is not None and self._saved is not None:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
