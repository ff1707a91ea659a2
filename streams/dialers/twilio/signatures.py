"""Whether a status callback really comes from Twilio: its `X-Twilio-Signature`, checked
with the library's `RequestValidator` against the URL Twilio called.

That URL is our `PUBLIC_BASE_URL` + the status path + the query string as received:
behind a proxy, the Host header and path prefix we see may differ from what Twilio
signed, the query may not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from multidict import MultiDictProxy
from twilio.request_validator import RequestValidator

from streams.dialers.twilio.create import STATUS_PATH


def form_params(form: MultiDictProxy[Any]) -> dict[str, Any]:
    """A callback's form as the validator takes it: a repeated key maps to its list."""
    params: dict[str, Any] = {}
    for key in form.keys():
        values = form.getall(key)
        params[key] = values if len(values) > 1 else values[0]
    return params


class SignatureCheck:
    """Checks callbacks signed with the account's auth token for our status URL."""

    def __init__(self, auth_token: str, public_base_url: str):
        self.public_base_url = public_base_url
        self._validator = RequestValidator(auth_token)

    def signed_url(self, raw_query: str) -> str:
        """The URL Twilio signed, given the query string as received."""
        return f"{self.public_base_url}{STATUS_PATH}" + (
            f"?{raw_query}" if raw_query else ""
        )

    def valid(self, raw_query: str, params: Mapping[str, Any], signature: str) -> bool:
        return bool(signature) and self._validator.validate(
            self.signed_url(raw_query), params, signature
        )
