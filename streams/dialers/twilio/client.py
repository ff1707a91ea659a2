"""The Twilio account the dialer runs on, and the `twilio` library's async REST client."""

from __future__ import annotations

import dataclasses

from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from streams.settings import Settings

#: One Twilio REST request may take this long.
REQUEST_TIMEOUT_SECONDS = 15.0


@dataclasses.dataclass(frozen=True)
class TwilioAccount:
    """The Twilio settings, each one present (`Settings.require_twilio` insists)."""

    account_sid: str
    auth_token: str
    from_number: str
    public_base_url: str
    api_base_url: str | None

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioAccount:
        """Raises `ConfigError` naming the first Twilio setting missing."""
        settings.require_twilio()
        account_sid, auth_token, from_number, public_base_url = (
            settings.twilio_account_sid,
            settings.twilio_auth_token,
            settings.twilio_from_number,
            settings.public_base_url,
        )
        assert account_sid and auth_token and from_number and public_base_url
        return cls(
            account_sid=account_sid,
            auth_token=auth_token,
            from_number=from_number,
            public_base_url=public_base_url,
            api_base_url=settings.twilio_api_base_url,
        )


def twilio_client(account: TwilioAccount) -> tuple[Client, AsyncTwilioHttpClient]:
    """A client of the account (at its API base URL when set), and its HTTP session,
    which the caller closes."""
    http = AsyncTwilioHttpClient(timeout=REQUEST_TIMEOUT_SECONDS)
    client = Client(account.account_sid, account.auth_token, http_client=http)
    if account.api_base_url:
        client.api.base_url = account.api_base_url
    return client, http
