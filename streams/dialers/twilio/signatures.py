"""Whether a status callback really comes from Twilio: its `X-Twilio-Signature`, checked
with the library's `RequestValidator` against the URL Twilio called.

* The URL is our `PUBLIC_BASE_URL` + the status path + the query string: behind a proxy
  the Host header and path prefix we see may differ from what Twilio signed. The query
  is tried as received and, since a proxy may re-encode it (`%3A` for `:`, `%20` for
  `+`), as we wrote it: our own encoding of the parameters it carries.
* The form goes to the validator as the multidict it is: a repeated key is signed as
  each of its values (a plain dict of lists makes the validator raise).
* The secret: the account's auth token, or the one being rotated out
  (`TWILIO_AUTH_TOKEN_PREVIOUS`) while both may sign; a callback carrying
  `X-Twilio-Webhooks-Signature-Settings: key=ID,algorithm=HMAC_SHA256` was signed by a
  webhook rule with that SharedKey (`TWILIO_WEBHOOK_SHARED_KEYS`) and that algorithm
  (https://www.twilio.com/docs/usage/webhooks/webhook-shared-keys).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

from multidict import MultiDictProxy
from twilio.request_validator import RequestValidator, get_signature_algorithm

from streams.dialers.twilio.create import STATUS_PATH

#: The query parameters of our status callback, in the order we write them.
CALLBACK_QUERY = ("dial_id", "business_id", "lead_id")


def form_params(form: MultiDictProxy[Any]) -> dict[str, Any]:
    """A callback's form as one value per key (the last of a repeated one), for reading."""
    return {key: form.getall(key)[-1] for key in form.keys()}


def shared_key_id(settings_header: str) -> str | None:
    """The SharedKey id named by `X-Twilio-Webhooks-Signature-Settings`."""
    for part in settings_header.split(","):
        name, separator, value = part.partition("=")
        if separator and name.strip() == "key" and value.strip():
            return value.strip()
    return None


class SignatureCheck:
    """Checks callbacks signed for our status URL (module doc)."""

    def __init__(
        self,
        auth_token: str,
        public_base_url: str,
        *,
        previous_auth_token: str | None = None,
        shared_keys: Mapping[str, str] | None = None,
    ):
        self.public_base_url = public_base_url
        self._tokens = [
            RequestValidator(token) for token in (auth_token, previous_auth_token) if token
        ]
        self._shared = {
            key: RequestValidator(secret) for key, secret in (shared_keys or {}).items()
        }

    def signed_urls(self, raw_query: str) -> list[str]:
        """The URLs Twilio may have signed, given the query string as received."""
        base = f"{self.public_base_url}{STATUS_PATH}"
        urls = [base + (f"?{raw_query}" if raw_query else "")]
        pairs = urllib.parse.parse_qsl(raw_query, keep_blank_values=True)
        ours = [(k, v) for name in CALLBACK_QUERY for k, v in pairs if k == name]
        others = [(k, v) for k, v in pairs if k not in CALLBACK_QUERY]
        if pairs:
            urls.append(f"{base}?{urllib.parse.urlencode(ours + others)}")
        return list(dict.fromkeys(urls))

    def valid(
        self,
        raw_query: str,
        params: MultiDictProxy[Any] | Mapping[str, Any],
        signature: str,
        settings_header: str = "",
    ) -> bool:
        if not signature:
            return False
        if settings_header:
            key = shared_key_id(settings_header)
            validator = self._shared.get(key or "")
            if validator is None:
                return False
            validators = [validator]
            algorithm = get_signature_algorithm(settings_header)
        else:
            validators, algorithm = self._tokens, None
        return any(
            validator.validate(url, params, signature, algorithm)
            for url in self.signed_urls(raw_query)
            for validator in validators
        )
