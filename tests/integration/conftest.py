"""Fixtures of the integration tests: an isolated deployment on the run's broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.devtools.broker import Broker
from tests.support.deployment import Deployment


@pytest.fixture
def deployment(kafka_broker: Broker, tmp_path: Path) -> Iterator[Deployment]:
    """Own topics (unique prefix), app id and data dirs; its processes stopped after."""
    deployment = Deployment(kafka_broker.bootstrap, tmp_path)
    deployment.create_topics()
    yield deployment
    deployment.close()
