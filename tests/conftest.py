"""Shared pytest setup: the ``integration`` marker and one Kafka broker per test session."""

from __future__ import annotations

import os

import pytest
from hypothesis import Phase, settings

from streams.devtools.broker import Broker
from tests.support.deployment import free_port

# The 3-node cluster fixtures, plaintext and SASL_SSL, for any test that asks for them.
pytest_plugins = ("tests.support.cluster",)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "integration: needs a Kafka broker (started on free local ports unless STREAMS_TEST_BOOTSTRAP is set)",
    )


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory):
    """A broker shared by the whole session, on its own ports and a fresh data dir, so tests
    never see a developer's topics nor leave any behind.

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
        yield Broker(host=host, port=int(port))
        return
    broker = Broker(
        port=free_port(),
        controller_port=free_port(),
        data_dir=tmp_path_factory.mktemp("kafka"),
    )
    if not broker.start():
        pytest.fail(
            f"something already answers on {broker.bootstrap}; stop it, or reuse it with "
            f"STREAMS_TEST_BOOTSTRAP={broker.bootstrap}",
            pytrace=False,
        )
    try:
        yield broker
    finally:
        broker.stop()


# `--hypothesis-profile=fail-fast` reports the first counterexample without shrinking it:
# handy when checking that a deliberately broken rule is caught.
settings.register_profile("fail-fast", phases=[Phase.explicit, Phase.reuse, Phase.generate])


@pytest.fixture(scope="session")
def postgres_url():
    """A SQLAlchemy URL of a throwaway PostgreSQL database (Debian's package), for the
    session; skipped when PostgreSQL is not installed, except in CI where it must be."""
    from tests.support.postgres import postgres_or_skip

    server = postgres_or_skip()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path):
    """The dialer's ledger database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    from tests.support.postgres import fresh_database

    return fresh_database(request.getfixturevalue("postgres_url"))


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'ledger.db'}"
