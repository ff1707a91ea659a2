"""Per-business outbound call limiter on Kafka: a Faust worker around a pure state machine."""

__version__ = "0.1.0"
