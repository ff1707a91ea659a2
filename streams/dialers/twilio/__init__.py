"""The Twilio dialer (`streams dialer`): `dialer` wires the parts and maps them."""

from streams.dialers.twilio.dialer import DialerError, TwilioDialer

__all__ = ["DialerError", "TwilioDialer"]
