"""Every setting, read once from the environment and validated at start.

This is the one home of configuration: the worker, the dialer, the CLI and the tests
all build a `Settings` here, and a bad value stops the process with one clear line
(`ConfigError`) before anything touches Kafka.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping

from streams.errors import StreamsError
from streams.limiter_table import Rules

#: The rule the whole project exists for: each business stays below this many calls.
DEFAULT_MAX_OUTBOUND_CALLS_PER_BUSINESS = 3

TABLE_STORES = ("memory://", "rocksdb://")
_TOPIC_PREFIX_RE = re.compile(r"^[A-Za-z0-9._-]*$")


class ConfigError(StreamsError, ValueError):
    """A setting is missing or malformed; the message is one line naming it."""


def _int(name: str, raw: str, minimum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(name: str, raw: str, minimum: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value >= minimum:  # also rejects NaN
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _bootstrap(name: str, raw: str) -> str:
    servers = [s.strip() for s in raw.split(",") if s.strip()]
    if not servers or not all(re.fullmatch(r"[^\s:]+:\d{1,5}", s) for s in servers):
        raise ConfigError(f"{name} must be host:port[,host:port...], got {raw!r}")
    return ",".join(servers)


def _prefix(name: str, raw: str) -> str:
    if not _TOPIC_PREFIX_RE.match(raw):
        raise ConfigError(
            f"{name} may only hold letters, digits, '.', '_' and '-', got {raw!r}"
        )
    return raw


def _store(name: str, raw: str) -> str:
    if raw not in TABLE_STORES:
        raise ConfigError(f"{name} must be one of {', '.join(TABLE_STORES)}, got {raw!r}")
    return raw


def _account_sid(name: str, raw: str) -> str:
    if not re.fullmatch(r"AC[0-9a-fA-F]{32}", raw):
        raise ConfigError(f"{name} must look like AC followed by 32 hex digits")
    return raw


def _e164(name: str, raw: str) -> str:
    if not re.fullmatch(r"\+[1-9][0-9]{1,14}", raw):
        raise ConfigError(f"{name} must be an E.164 number like +14155550100, got {raw!r}")
    return raw


def _url(name: str, raw: str, keep_slash: bool = False) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/[^\s]*)?", raw):
        raise ConfigError(f"{name} must be an http(s) URL, got {raw!r}")
    return raw if keep_slash else raw.rstrip("/")


def _twiml(name: str, raw: str) -> str:
    if not re.fullmatch(r"<Response\b.*</Response>|<Response\b[^>]*/>", raw, re.DOTALL):
        raise ConfigError(
            f"{name} must be a TwiML document, <Response>...</Response>, got {raw[:40]!r}"
        )
    return raw


def _database_url(name: str, raw: str) -> str:
    if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", raw):
        raise ConfigError(f"{name} must be a sqlite:// or postgresql:// URL, got {raw!r}")
    return raw


def _port(name: str, raw: str) -> int:
    port = _int(name, raw, 1)
    if port > 65535:
        raise ConfigError(f"{name} must be a TCP port (1-65535), got {port}")
    return port


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated settings; field metadata names the environment variable of each."""

    kafka_bootstrap_servers: str = "localhost:9092"
    max_outbound_calls_per_business: int = DEFAULT_MAX_OUTBOUND_CALLS_PER_BUSINESS
    topic_prefix: str = ""
    topic_partitions: int = 8
    dial_deadline_seconds: float = 30.0
    dial_ack_timeout_seconds: float = 5.0
    ring_timeout_seconds: float = 30.0
    call_time_limit_seconds: float = 600.0
    lease_grace_seconds: float = 60.0
    orphan_status_hold_seconds: float = 120.0
    max_dial_attempts: int = 3
    lead_retention_seconds: float = 7 * 24 * 3600.0
    tick_interval_seconds: float = 1.0
    table_store: str = "memory://"
    worker_web_port: int = 6066
    app_id: str = "call-limiter"
    #: Kafka static group membership (KIP-345): a worker restarted under the same id
    #: gets its partitions back at once instead of after the session timeout. Unique
    #: per worker and stable across its restarts (the pod name of a StatefulSet).
    worker_instance_id: str | None = None
    data_dir: str = ".streams-data"
    # The Twilio dialer's settings; `require_twilio()` insists on the ones without default.
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from_number: str | None = None
    public_base_url: str | None = None
    twilio_api_base_url: str | None = None
    twilio_cps: float = 1.0
    #: What an answered call does: Twilio fetches TwiML from this URL, or runs this
    #: TwiML; one of the two (neither: a one-second pause, for demos and tests).
    twilio_voice_url: str | None = None
    twilio_twiml: str | None = None
    database_url: str = "sqlite:///streams-ledger.db"
    dialer_web_port: int = 8080
    reconcile_after_seconds: float = 30.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `environ` (default: the process environment)."""
        env = os.environ if environ is None else environ
        values = {}
        for field_name, (var, parse) in _ENVIRONMENT.items():
            raw = env.get(var)
            if raw is not None and raw.strip() != "":
                values[field_name] = parse(var, raw.strip())
        settings = cls(**values)
        if settings.twilio_voice_url and settings.twilio_twiml:
            raise ConfigError(
                "set TWILIO_VOICE_URL or TWILIO_TWIML, not both: an answered"
                " call runs one voice flow"
            )
        if settings.dial_ack_timeout_seconds >= settings.dial_deadline_seconds:
            raise ConfigError(
                "DIAL_ACK_TIMEOUT_SECONDS must be shorter than"
                " DIAL_DEADLINE_SECONDS, or a lost dial is never resent"
            )
        return settings

    def require_twilio(self) -> Settings:
        """Stop the dialer before any call when a Twilio setting is missing."""
        for field_name in (
            "twilio_account_sid",
            "twilio_auth_token",
            "twilio_from_number",
            "public_base_url",
        ):
            if getattr(self, field_name) is None:
                raise ConfigError(
                    f"{_ENVIRONMENT[field_name][0]} is required by the"
                    " Twilio dialer (or run `streams dialer --simulate`)"
                )
        return self

    def rules(self) -> Rules:
        """The limiter core's rules, built from these settings."""
        return Rules(
            limit=self.max_outbound_calls_per_business,
            dial_deadline=self.dial_deadline_seconds,
            ack_timeout=self.dial_ack_timeout_seconds,
            ring_timeout=self.ring_timeout_seconds,
            call_time_limit=self.call_time_limit_seconds,
            lease_grace=self.lease_grace_seconds,
            orphan_hold=self.orphan_status_hold_seconds,
            max_attempts=self.max_dial_attempts,
            lead_retention=self.lead_retention_seconds,
        )


_Parser = Callable[[str, str], object]

#: field -> (environment variable, parser). The README's settings table mirrors this.
_ENVIRONMENT: dict[str, tuple[str, _Parser]] = {
    "kafka_bootstrap_servers": ("KAFKA_BOOTSTRAP_SERVERS", _bootstrap),
    "max_outbound_calls_per_business": (
        "MAX_OUTBOUND_CALLS_PER_BUSINESS",
        lambda n, r: _int(n, r, 1),
    ),
    "topic_prefix": ("TOPIC_PREFIX", _prefix),
    "topic_partitions": ("TOPIC_PARTITIONS", lambda n, r: _int(n, r, 1)),
    "dial_deadline_seconds": ("DIAL_DEADLINE_SECONDS", lambda n, r: _float(n, r, 1.0)),
    "dial_ack_timeout_seconds": (
        "DIAL_ACK_TIMEOUT_SECONDS",
        lambda n, r: _float(n, r, 0.1),
    ),
    "ring_timeout_seconds": ("RING_TIMEOUT_SECONDS", lambda n, r: _float(n, r, 1.0)),
    "call_time_limit_seconds": ("CALL_TIME_LIMIT_SECONDS", lambda n, r: _float(n, r, 1.0)),
    "lease_grace_seconds": ("LEASE_GRACE_SECONDS", lambda n, r: _float(n, r, 0.0)),
    "orphan_status_hold_seconds": (
        "ORPHAN_STATUS_HOLD_SECONDS",
        lambda n, r: _float(n, r, 1.0),
    ),
    "max_dial_attempts": ("MAX_DIAL_ATTEMPTS", lambda n, r: _int(n, r, 1)),
    "lead_retention_seconds": ("LEAD_RETENTION_SECONDS", lambda n, r: _float(n, r, 1.0)),
    "tick_interval_seconds": ("TICK_INTERVAL_SECONDS", lambda n, r: _float(n, r, 0.05)),
    "table_store": ("TABLE_STORE", _store),
    "worker_web_port": ("WORKER_WEB_PORT", _port),
    "app_id": ("STREAMS_APP_ID", _prefix),
    "worker_instance_id": ("WORKER_INSTANCE_ID", _prefix),
    "data_dir": ("STREAMS_DATA_DIR", lambda n, r: r),
    "twilio_account_sid": ("TWILIO_ACCOUNT_SID", _account_sid),
    "twilio_auth_token": ("TWILIO_AUTH_TOKEN", lambda n, r: r),
    "twilio_from_number": ("TWILIO_FROM_NUMBER", _e164),
    "public_base_url": ("PUBLIC_BASE_URL", _url),
    "twilio_api_base_url": ("TWILIO_API_BASE_URL", _url),
    "twilio_cps": ("TWILIO_CPS", lambda n, r: _float(n, r, 0.01)),
    "twilio_voice_url": ("TWILIO_VOICE_URL", lambda n, r: _url(n, r, keep_slash=True)),
    "twilio_twiml": ("TWILIO_TWIML", _twiml),
    "database_url": ("DATABASE_URL", _database_url),
    "dialer_web_port": ("DIALER_WEB_PORT", _port),
    "reconcile_after_seconds": ("RECONCILE_AFTER_SECONDS", lambda n, r: _float(n, r, 1.0)),
}


def environment_variables() -> dict[str, str]:
    """Environment variable -> default value, for `--help` texts and the README."""
    defaults = Settings()
    return {
        var: "" if getattr(defaults, field) is None else str(getattr(defaults, field))
        for field, (var, _) in _ENVIRONMENT.items()
    }


def settings_environment(settings: Settings) -> dict[str, str]:
    """The environment variables that reproduce `settings` in another process."""
    values = {var: getattr(settings, field) for field, (var, _) in _ENVIRONMENT.items()}
    return {var: str(value) for var, value in values.items() if value is not None}
