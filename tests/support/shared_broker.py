"""One Kafka broker for a whole test run, however many pytest-xdist workers share it.

A broker takes seconds to start and a gigabyte of heap, and tests are already isolated
from each other by topic prefix and app id, so every worker process uses the same one.
It starts lazily, when the first test that needs it asks (so a run of unit tests needs
no Java), under a file lock in a directory every worker of the run knows: the worker
holding the lock starts it and writes where it listens, the others read that. The
process that runs the session (the xdist controller, or pytest itself without xdist)
stops it once every worker has finished.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from streams.devtools.broker import Broker, BrokerError
from tests.support.ports import free_port


class SharedBrokerError(RuntimeError):
    """The run's broker could not be started; every worker reports the same cause."""


class SharedBroker:
    """The broker of the test run whose shared directory is `run_dir`."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.state_file = run_dir / "kafka-broker.json"
        self.data_dir = run_dir / "kafka"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "kafka-broker.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_state(self) -> dict[str, object] | None:
        try:
            state: dict[str, object] = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        return state

    def _broker(self, state: dict[str, object]) -> Broker:
        port, controller_port = state["port"], state["controller_port"]
        assert isinstance(port, int) and isinstance(controller_port, int), state
        return Broker(port=port, controller_port=controller_port, data_dir=self.data_dir)

    def acquire(self) -> Broker:
        """The running broker of this run, started here if no worker has started it yet.

        A failed start is recorded too: the other workers fail at once with its cause
        instead of each trying again for the whole startup timeout."""
        with self._locked():
            state = self._read_state()
            if state is not None:
                if "error" in state:
                    raise SharedBrokerError(str(state["error"]))
                return self._broker(state)
            broker = Broker(
                port=free_port(), controller_port=free_port(), data_dir=self.data_dir
            )
            try:
                if not broker.start():
                    raise BrokerError(
                        f"something already answers on {broker.bootstrap}; stop it, or"
                        f" reuse it with STREAMS_TEST_BOOTSTRAP={broker.bootstrap}"
                    )
            except BrokerError as exc:
                self.state_file.write_text(json.dumps({"error": str(exc)}))
                raise SharedBrokerError(str(exc)) from None
            self.state_file.write_text(
                json.dumps({"port": broker.port, "controller_port": broker.controller_port})
            )
            return broker

    def stop(self) -> None:
        """Stop the broker if one was started; its data dir and log stay."""
        if not self.run_dir.exists():
            return
        with self._locked():
            state = self._read_state()
            if state is not None and "error" not in state:
                self._broker(state).stop()
            self.state_file.unlink(missing_ok=True)
