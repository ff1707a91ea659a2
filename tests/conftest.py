"""Shared pytest setup: markers applied by what a test needs, one Kafka broker per run.

Tests may run in parallel (pytest-xdist, `make test`): the broker is shared by every
worker process (tests/support/shared_broker.py), while topics, app ids, ports and data
dirs are per test (tests/support/deployment.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import Phase, settings

from streams.devtools.broker import Broker
from tests.support.shared_broker import SharedBroker, SharedBrokerError

#: Where the processes of one run (the controller and its xdist workers) share the broker.
RUN_DIR_ENV = "STREAMS_TEST_RUN_DIR"

#: Fixtures that start a local program other than Kafka: a test using one is `component`.
COMPONENT_FIXTURES = frozenset({"postgres_url", "promtool"})

#: Fixtures that start a 3-node cluster: such a test is `cluster`, run in CI's cluster step.
CLUSTER_FIXTURES = frozenset({"kafka_cluster", "kafka_cluster_sasl_ssl", "faulty_cluster"})

#: The broker's log, when a failed run keeps it for a post-mortem.
_KEPT_BROKER_LOG = pytest.StashKey[Path]()


def _is_xdist_worker() -> bool:
    return "PYTEST_XDIST_WORKER" in os.environ


def _shared_broker() -> SharedBroker:
    return SharedBroker(Path(os.environ[RUN_DIR_ENV]))


# The 3-node cluster fixtures, plaintext and SASL_SSL, for any test that asks for them.
pytest_plugins = ("tests.support.cluster",)


def pytest_configure(config: pytest.Config) -> None:
    if not _is_xdist_worker():
        # Set before xdist spawns its workers, which inherit the environment; created
        # only if a test needs the broker.
        run_dir = Path(tempfile.gettempdir()) / f"streams-tests-{uuid.uuid4().hex[:12]}"
        os.environ[RUN_DIR_ENV] = str(run_dir)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """integration: uses the broker; cluster: a 3-node cluster; component: PostgreSQL or
    promtool; unit: none of these."""
    for item in items:
        needs = set(getattr(item, "fixturenames", ()))
        if "kafka_broker" in needs:
            item.add_marker(pytest.mark.integration)
        if needs & CLUSTER_FIXTURES:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.cluster)
        if needs & COMPONENT_FIXTURES:
            item.add_marker(pytest.mark.component)
        if not any(item.get_closest_marker(m) for m in ("integration", "component")):
            item.add_marker(pytest.mark.unit)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The run's broker stops when the whole run is over: without xdist this process ran
    every test, with xdist every worker has finished by now. Its log is kept when
    something failed."""
    if _is_xdist_worker():
        return
    shared = _shared_broker()
    shared.stop()
    if exitstatus == pytest.ExitCode.OK or not shared.data_dir.exists():
        shutil.rmtree(shared.run_dir, ignore_errors=True)
    else:
        session.config.stash[_KEPT_BROKER_LOG] = shared.data_dir / "broker.log"


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    kept = config.stash.get(_KEPT_BROKER_LOG, None)
    if kept is not None:
        terminalreporter.write_line(f"the test broker's log is kept: {kept}")


@pytest.fixture(scope="session")
def kafka_broker() -> Broker:
    """The run's broker, on its own ports and a fresh data dir, so tests never see a
    developer's topics nor leave any behind; started by the first test that needs it.

    Set ``STREAMS_TEST_BOOTSTRAP=host:port`` to use an already running broker instead (for
    example a CI service, or a broker kept up between quick reruns); it is left running.
    """
    external = os.environ.get("STREAMS_TEST_BOOTSTRAP")
    if external:
        host, _, port = external.split(",")[0].rpartition(":")
        if not host or not port.isdigit():
            pytest.fail(
                f"STREAMS_TEST_BOOTSTRAP must be host:port, got {external!r}", pytrace=False
            )
        return Broker(host=host, port=int(port))
    try:
        return _shared_broker().acquire()
    except SharedBrokerError as exc:
        pytest.fail(f"the test broker did not start: {exc}", pytrace=False)


# `--hypothesis-profile=fail-fast` reports the first counterexample without shrinking it:
# handy when checking that a deliberately broken rule is caught.
settings.register_profile("fail-fast", phases=[Phase.explicit, Phase.reuse, Phase.generate])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of a throwaway PostgreSQL database (Debian's package), for the
    session; skipped when PostgreSQL is not installed, except in CI where it must be."""
    from tests.support.postgres import postgres_or_skip

    server = postgres_or_skip()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.component)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The dialer's ledger database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    from tests.support.postgres import fresh_database

    return fresh_database(request.getfixturevalue("postgres_url"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"
