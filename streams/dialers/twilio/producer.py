"""The `calls.status` producer of the Twilio dialer: records keyed by business_id with
the `murmur2_random` partitioner, polled by a thread of its own, each `produce()`
resolving once the broker has acknowledged the record."""

from __future__ import annotations

import asyncio
import threading

from confluent_kafka import KafkaError, KafkaException, Message

from streams.kafka import clients
from streams.settings import Settings
from streams.topics import CALLS_STATUS, CallStatus, record_key, topic_name


class StatusProducer:
    """Hands call statuses to Kafka; `produce()` resolves on delivery."""

    def __init__(self, settings: Settings):
        self.topic = topic_name(CALLS_STATUS, settings.topic_prefix)
        self.producer = clients.status_producer(settings)
        self._running = True
        self._thread = threading.Thread(
            target=self._poll, name="dialer-producer", daemon=True
        )
        self._thread.start()

    def _poll(self) -> None:
        while self._running:
            self.producer.poll(0.1)

    def produce(self, status: CallStatus) -> asyncio.Future[None]:
        """Hand the record to the producer now (order per dial = call order); the
        future resolves on delivery."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def resolve(err: KafkaError | None) -> None:
            if future.done():
                return
            if err is None:
                future.set_result(None)
            else:
                future.set_exception(KafkaException(err))

        def delivered(err: KafkaError | None, _message: Message) -> None:
            loop.call_soon_threadsafe(resolve, err)

        while True:
            try:
                self.producer.produce(
                    self.topic,
                    key=record_key(status.business_id),
                    value=status.encode(),
                    on_delivery=delivered,
                )
                return future
            except BufferError:  # local queue full: let deliveries drain
                self.producer.poll(0.05)

    def check(self, timeout: float = 2.0) -> None:
        """Raise unless the broker answers a metadata request for our topic."""
        metadata = self.producer.list_topics(self.topic, timeout=timeout)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            raise KafkaException(topic.error if topic else f"no topic {self.topic}")

    def close(self, timeout: float = 10.0) -> int:
        """Deliver what is queued (within `timeout`); return how many were not."""
        remaining = self.producer.flush(timeout)
        self._running = False
        self._thread.join(5)
        return remaining
