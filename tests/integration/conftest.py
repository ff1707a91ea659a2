"""Fixtures of the integration tests: an isolated deployment on the session's broker."""

from __future__ import annotations

import pytest

from tests.support.deployment import Deployment


@pytest.fixture
def deployment(kafka_broker, tmp_path):
    """Own topics (unique prefix), app id and data dirs; its processes stopped after."""
    deployment = Deployment(kafka_broker.bootstrap, tmp_path)
    deployment.create_topics()
    yield deployment
    deployment.close()
