"""Topic creation waits until the broker lists what it created, and the worker's
replication checks, on a stand-in for the admin client's metadata."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from streams.kafka import admin
from streams.settings import Settings
from streams.topics import ALL_TOPICS, changelog_topic, topic_name

SETTINGS = Settings(topic_prefix="t.", app_id="app")
CHANGELOG = changelog_topic("t.", "app")


def topic(partitions: int = 4, replicas: int = 3, leader: int = 1) -> SimpleNamespace:
    return SimpleNamespace(
        error=None,
        partitions={
            p: SimpleNamespace(leader=leader, replicas=list(range(replicas)))
            for p in range(partitions)
        },
    )


def metadata(topics: dict[str, SimpleNamespace], brokers: int = 3) -> SimpleNamespace:
    return SimpleNamespace(topics=topics, brokers=dict.fromkeys(range(brokers)))


class Listings:
    """An admin client whose metadata answers come from `answers`, one per call."""

    def __init__(self, answers: Iterator[SimpleNamespace]) -> None:
        self.answers = answers

    def list_topics(self, timeout: float = -1) -> Any:
        return next(self.answers)


def all_topics(replicas: int = 3, changelog_replicas: int | None = None) -> dict:
    found = {topic_name(base, "t."): topic(replicas=replicas) for base in ALL_TOPICS}
    found[CHANGELOG] = topic(replicas=changelog_replicas or replicas)
    return found


def test_creation_returns_once_every_topic_is_listed_with_its_leaders(monkeypatch):
    created = ["t.leads.requests", CHANGELOG]
    answers = iter(
        [
            metadata({}),
            metadata({"t.leads.requests": topic(leader=-1)}),  # no leader elected yet
            metadata({"t.leads.requests": topic(), CHANGELOG: topic()}),
        ]
    )
    monkeypatch.setattr(admin.clients, "admin", lambda settings: Listings(answers))
    monkeypatch.setattr(admin.time, "sleep", lambda seconds: None)
    admin._wait_listed(SETTINGS, created)
    assert next(answers, None) is None  # it asked until the third answer, not longer


def test_creation_that_never_shows_fails_in_one_line(monkeypatch):
    clock = itertools.count(step=10.0)
    monkeypatch.setattr(admin.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(admin.time, "sleep", lambda seconds: None)
    answers = itertools.repeat(metadata({}))
    monkeypatch.setattr(admin.clients, "admin", lambda settings: Listings(answers))
    with pytest.raises(admin.TopicsError) as raised:
        admin._wait_listed(SETTINGS, ["t.calls.dial", "t.leads.requests"])
    assert str(raised.value) == (
        "Kafka at localhost:9092 created but did not list t.calls.dial,"
        " t.leads.requests within 30 s"
    )


def checked(monkeypatch, topics: dict, factor: int, brokers: int, **settings: Any):
    answers = itertools.repeat(metadata(topics, brokers))
    monkeypatch.setattr(admin.clients, "admin", lambda settings: Listings(answers))
    return admin.check_replication(
        Settings(topic_prefix="t.", app_id="app", **settings), factor, brokers
    )


def test_topics_with_enough_replicas_pass_quietly(monkeypatch):
    assert checked(monkeypatch, all_topics(replicas=3), 3, 3) == []
    assert checked(monkeypatch, all_topics(replicas=1), 1, 1) == []


def test_a_topic_with_fewer_replicas_than_the_setting_stops_the_worker(monkeypatch):
    topics = all_topics(replicas=3)
    topics["t.calls.status"] = topic(replicas=1)
    with pytest.raises(admin.TopicsError) as raised:
        checked(monkeypatch, topics, 3, 3, topic_replication_factor=3)
    assert str(raised.value) == (
        "topic(s) with fewer replicas than TOPIC_REPLICATION_FACTOR=3: t.calls.status=1;"
        " raise their replication (kafka-reassign-partitions) or lower the setting"
    )
    with pytest.raises(admin.TopicsError, match="the cluster's default.replication"):
        checked(monkeypatch, topics, 3, 3)


def test_a_single_replica_changelog_on_several_brokers_is_warned_about(monkeypatch):
    warnings = checked(monkeypatch, all_topics(replicas=1), 1, 3)
    assert warnings == [
        f"the changelog {CHANGELOG} has a single replica on a cluster of 3 brokers:"
        " losing that broker's disk loses every business's state (set"
        " TOPIC_REPLICATION_FACTOR=3)"
    ]
