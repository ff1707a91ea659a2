"""The Twilio account the dialer runs on, and every request the dialer sends it.

`TwilioApi` is the one way to Twilio: each request is bounded by
`TWILIO_REQUEST_TIMEOUT_SECONDS` (`asyncio.wait_for`), because the library's
`AsyncTwilioHttpClient(timeout=...)` hands aiohttp no per-request limit (twilio-python
issue 925): without this, one connection Twilio never answers would hold its caller
forever.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import urllib.parse
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client
from twilio.rest.api.v2010.account.call import CallInstance

from streams.settings import ConfigError, Settings

T = TypeVar("T")

#: Hosts of Twilio's own API: against them, Twilio must be able to reach our webhooks.
TWILIO_API_HOST_SUFFIX = "twilio.com"


@dataclasses.dataclass(frozen=True)
class TwilioAccount:
    """The Twilio settings, each one present (`Settings.require_twilio` insists)."""

    account_sid: str
    auth_token: str
    from_number: str
    public_base_url: str
    api_base_url: str | None
    request_timeout: float = 15.0
    previous_auth_token: str | None = None
    #: SharedKey id -> secret, for callbacks signed by a webhook rule.
    shared_keys: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioAccount:
        """Raises `ConfigError` naming the first Twilio setting missing or unusable."""
        settings.require_twilio()
        account_sid, auth_token, from_number, public_base_url = (
            settings.twilio_account_sid,
            settings.twilio_auth_token,
            settings.twilio_from_number,
            settings.public_base_url,
        )
        assert account_sid and auth_token and from_number and public_base_url
        if talks_to_twilio(settings.twilio_api_base_url):
            check_public_base_url(public_base_url)
        keys = settings.twilio_webhook_shared_keys
        return cls(
            account_sid=account_sid,
            auth_token=auth_token,
            from_number=from_number,
            public_base_url=public_base_url,
            api_base_url=settings.twilio_api_base_url,
            request_timeout=settings.twilio_request_timeout_seconds,
            previous_auth_token=settings.twilio_auth_token_previous,
            shared_keys=dict(pair.split(":", 1) for pair in keys.split(","))
            if keys
            else {},
        )


def talks_to_twilio(api_base_url: str | None) -> bool:
    """Whether the REST API is Twilio's own (not a test double)."""
    if api_base_url is None:
        return True
    host = urllib.parse.urlsplit(api_base_url).hostname or ""
    return host == TWILIO_API_HOST_SUFFIX or host.endswith("." + TWILIO_API_HOST_SUFFIX)


def check_public_base_url(url: str) -> None:
    """Twilio calls our webhooks at this URL: https, at a public DNS name."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "https":
        raise ConfigError(
            f"PUBLIC_BASE_URL must be an https URL Twilio can reach, got {url!r}"
        )
    try:
        ipaddress.ip_address(host)
        is_ip = True
    except ValueError:
        is_ip = False
    if is_ip or "." not in host or host.endswith((".local", ".internal", ".localhost")):
        raise ConfigError(
            f"PUBLIC_BASE_URL must name a public DNS host Twilio can reach, got {host!r}"
        )


def twilio_client(account: TwilioAccount) -> tuple[Client, AsyncTwilioHttpClient]:
    """A client of the account (at its API base URL when set), and its HTTP session,
    which the caller closes."""
    http = AsyncTwilioHttpClient(timeout=account.request_timeout)
    client = Client(account.account_sid, account.auth_token, http_client=http)
    if account.api_base_url:
        client.api.base_url = account.api_base_url
    return client, http


class TwilioApi:
    """The requests the dialer sends Twilio, each bounded in time (module doc); a
    request that takes longer raises `asyncio.TimeoutError`."""

    def __init__(self, client: Client, timeout: float):
        self.client = client
        self.timeout = timeout

    async def _bounded(self, request: Awaitable[T]) -> T:
        return await asyncio.wait_for(request, self.timeout)

    async def create(self, params: Mapping[str, Any]) -> CallInstance:
        return await self._bounded(self.client.calls.create_async(**params))

    async def fetch(self, call_sid: str) -> CallInstance:
        return await self._bounded(self.client.calls(call_sid).fetch_async())

    async def update_status(self, call_sid: str, status: str) -> CallInstance:
        """Hang up (`completed`) or cancel (`canceled`) a call; Twilio's answer is the
        call as it is now."""
        return await self._bounded(self.client.calls(call_sid).update_async(status=status))

    async def calls_to(self, to: str, from_number: str, limit: int) -> list[CallInstance]:
        """The newest calls to `to` from our number."""
        return await self._bounded(
            self.client.calls.list_async(
                to=to, from_=from_number, limit=limit, page_size=limit
            )
        )

    async def calls_in(
        self, status: str, from_number: str, limit: int
    ) -> list[CallInstance]:
        """The newest calls from our number in this status."""
        return await self._bounded(
            self.client.calls.list_async(
                from_=from_number, status=status, limit=limit, page_size=limit
            )
        )
