"""Per-business outbound call limiter on Kafka: a Faust worker around a pure core."""

__version__ = "0.1.0"
