"""A dial command from a `calls.dial` message, checked before any dialer acts on it.

`DialCommand.decode` does not check field types, and a field of the wrong type would
only fail later, with the command half-handled (its ledger row written, say).
"""

from __future__ import annotations

from confluent_kafka import Message

from streams.topics import DialCommand, InvalidRecord

#: The fields a dialer needs as non-empty strings.
TEXT_FIELDS = ("dial_id", "lead_id", "business_id", "phone", "dial_by")


def decode_command(message: Message) -> DialCommand:
    """The message's dial command with usable fields, or InvalidRecord."""
    value = message.value()
    if value is None:
        raise InvalidRecord("a dial command without a value")
    try:
        command = DialCommand.decode(value, message.key())
    except InvalidRecord:
        raise
    except (ValueError, TypeError, AttributeError) as exc:  # e.g. a non-string dial_by
        raise InvalidRecord(f"unreadable dial command: {exc}") from None
    for name in TEXT_FIELDS:
        field = getattr(command, name)
        if not isinstance(field, str) or not field:
            raise InvalidRecord(f"{name} must be a non-empty string, got {field!r}")
    if not isinstance(command.attempt, int) or isinstance(command.attempt, bool):
        raise InvalidRecord(f"attempt must be an integer, got {command.attempt!r}")
    return command
