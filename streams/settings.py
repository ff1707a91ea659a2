"""Every setting, read once from the environment and validated at start.

This is the one home of configuration: the worker, the dialer, the CLI and the tests
all build a `Settings` here, and a bad value stops the process with one clear line
(`ConfigError`) before anything touches Kafka.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from streams.errors import StreamsError
from streams.kafka.properties import PropertiesError, client_properties
from streams.limiter_table import Rules
from streams.topics import CallingWindow, RetryPolicy, known_zone

log = logging.getLogger(__name__)

#: The rule the whole project exists for: no business has more calls than this in flight.
DEFAULT_MAX_OUTBOUND_CALLS_PER_BUSINESS = 3

TABLE_STORES = ("memory://", "rocksdb://")
#: librdkafka's and the Java client's names; only these security setups are supported.
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
ENDPOINT_IDENTIFICATION = ("https", "none")
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


def _choice(choices: tuple[str, ...], upper: bool = False) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.upper() if upper else raw.lower()
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def _readable_file(name: str, raw: str) -> str:
    """A path that exists and that this process may read (checked once, at start)."""
    try:
        with open(raw, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {raw}: {exc.strerror}") from None
    return raw


def _zone(name: str, raw: str) -> str:
    if not known_zone(raw):
        raise ConfigError(
            f"{name} must be an IANA time zone like Europe/Paris, got {raw!r}"
        )
    return raw


def _secret(name: str, raw: str) -> str:
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


def _shared_keys(name: str, raw: str) -> str:
    pairs = [pair.strip() for pair in raw.split(",") if pair.strip()]
    if not pairs or not all(re.fullmatch(r"[^:\s]+:\S+", pair) for pair in pairs):
        raise ConfigError(f"{name} must be KEY_ID:SECRET[,KEY_ID:SECRET...]")
    return ",".join(pairs)


def _database_url(name: str, raw: str) -> str:
    if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", raw):
        raise ConfigError(f"{name} must be a sqlite:// or postgresql:// URL, got {raw!r}")
    return raw


def _port(name: str, raw: str) -> int:
    port = _int(name, raw, 1)
    if port > 65535:
        raise ConfigError(f"{name} must be a TCP port (1-65535), got {port}")
    return port


def _setting(default: Any, doc: str, secret: bool = False) -> Any:
    """A settings field with its one-line description, which docs/settings.md shows; a
    secret one stays out of the settings' repr (and so out of logs and tracebacks)."""
    return dataclasses.field(default=default, metadata={"doc": doc}, repr=not secret)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated settings; `_ENVIRONMENT` names the environment variable of each field."""

    kafka_bootstrap_servers: str = _setting(
        "localhost:9092", "Kafka brokers, `host:port[,host:port...]`"
    )
    # How every Kafka client connects (streams/kafka/clients.py); librdkafka's names.
    kafka_client_config: str | None = _setting(
        None,
        "a Kafka client properties file (as Kafka's tools take with"
        " `--command-config`, or a managed service hands out): `bootstrap.servers`,"
        " `security.protocol`, `sasl.*` (also a `sasl.jaas.config` line), `ssl.*`"
        " locations; a `KAFKA_*` variable that is set wins over the file's key",
    )
    kafka_security_protocol: str = _setting(
        "PLAINTEXT", "`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`"
    )
    kafka_sasl_mechanism: str | None = _setting(
        None,
        "`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`; required with a `SASL_*` protocol",
    )
    kafka_sasl_username: str | None = _setting(
        None, "SASL user; required with a `SASL_*` protocol"
    )
    kafka_sasl_password: str | None = _setting(
        None,
        "SASL password; or `KAFKA_SASL_PASSWORD_FILE` (never both); never printed",
        secret=True,
    )
    kafka_sasl_password_file: str | None = _setting(
        None,
        "a file holding the SASL password (a mounted Kubernetes Secret); one trailing"
        " newline is ignored",
    )
    kafka_ssl_ca_location: str | None = _setting(
        None,
        "PEM file of the CA(s) that signed the brokers' certificates; unset: the"
        " system's trusted CAs",
    )
    kafka_ssl_certificate_location: str | None = _setting(
        None, "mutual TLS: this client's PEM certificate (with `KAFKA_SSL_KEY_LOCATION`)"
    )
    kafka_ssl_key_location: str | None = _setting(
        None, "mutual TLS: this client's PEM private key"
    )
    kafka_ssl_key_password: str | None = _setting(
        None, "mutual TLS: the password of an encrypted private key", secret=True
    )
    kafka_ssl_endpoint_identification_algorithm: str = _setting(
        "https",
        "`https`: a broker's certificate must name the host it is reached at; `none`"
        " turns that check off (the CA check stays)",
    )
    topic_replication_factor: int | None = _setting(
        None,
        "replication factor of every topic we create (the contract's, the tick topic,"
        " Faust's changelog and internal topics); unset: the cluster's"
        " `default.replication.factor`. The worker refuses to start on a topic with"
        " fewer replicas",
    )
    max_outbound_calls_per_business: int = _setting(
        DEFAULT_MAX_OUTBOUND_CALLS_PER_BUSINESS,
        "calls in flight per business, unless `business.control` sets its own"
        " (`streams business set-limit`)",
    )
    topic_prefix: str = _setting(
        "",
        "prefix of every topic name and of the workers' and dialers' consumer groups"
        " (letters, digits, `.`, `_`, `-`)",
    )
    topic_partitions: int = _setting(
        8,
        "partitions of the topics we create (a topic added to existing ones takes"
        " their count)",
    )
    dial_deadline_seconds: float = _setting(
        30.0, "`dial_by` = grant time + this; no dialer places a call after `dial_by`"
    )
    dial_ack_timeout_seconds: float = _setting(
        5.0,
        "resend a dial that got no status after this (same `dial_id` and `dial_by`);"
        " shorter than `DIAL_DEADLINE_SECONDS`",
    )
    ring_timeout_seconds: float = _setting(
        30.0, "longest ring the dialer allows (Twilio `timeout`); part of every lease"
    )
    call_time_limit_seconds: float = _setting(
        600.0,
        "longest call the dialer allows (Twilio `time_limit`); part of every lease",
    )
    lease_grace_seconds: float = _setting(60.0, "added to every lease")
    orphan_status_hold_seconds: float = _setting(
        120.0,
        "how long a status for a dial the worker does not know is held (it may come"
        " before the grant replayed after a crash), then dead-lettered",
    )
    max_dial_attempts: int = _setting(
        3,
        "attempts per lead when the dialer refuses stale commands (`canceled`,"
        " `dial-deadline-passed`)",
    )
    lead_retention_seconds: float = _setting(
        7 * 24 * 3600.0,
        "how long a finished lead's record is kept to refuse its id again (7 days);"
        " then it is forgotten",
    )
    calling_hours: str | None = _setting(
        None,
        "default calling window of a business without its own (`streams business"
        " set-window`), like `09:00-20:00`; unset: calls at any hour",
    )
    calling_days: str = _setting(
        "mon-sun", "days of the default calling window, like `mon-fri` or `mon,wed,fri`"
    )
    calling_timezone: str = _setting(
        "UTC",
        "zone the default calling window is judged in, for leads without a `timezone`",
    )
    retry_on: str | None = _setting(
        None,
        "call statuses a business without its own retry policy (`streams business"
        " set-retry`) retries, like `busy,no-answer`; unset: no retries",
    )
    retry_delays: str = _setting(
        "10m,1h",
        "delays before the default retries (the last repeats), like `10m,1h`; attempts"
        " in all: `MAX_DIAL_ATTEMPTS`",
    )
    tick_interval_seconds: float = _setting(
        1.0, "how often each partition gets a tick (the worker's clock)"
    )
    table_store: str = _setting(
        "rocksdb://",
        "Faust store: `rocksdb://` keeps the table on disk in `STREAMS_DATA_DIR` across"
        " restarts; `memory://` (tests) holds it all in RAM (about 1.2 KB per finished"
        " lead kept for `LEAD_RETENTION_SECONDS`: GBs for a busy week) and replays the"
        " whole changelog at every start",
    )
    worker_web_port: int = _setting(
        6066,
        "worker's web server (`/businesses/`, `/counters/`, `/ready/`, `/metrics`)",
    )
    app_id: str = _setting(
        "call-limiter",
        "Faust app id: the workers' consumer group and the changelog's name (prefixed)",
    )
    worker_instance_id: str | None = _setting(
        None,
        "Kafka static membership: unique per worker and stable across its restarts (a"
        " pod name), so a restarted worker takes its partitions back at once instead"
        " of after the 15 s session timeout; keep its web address (host,"
        " `WORKER_WEB_PORT`) stable too, Faust's assignor insists on it",
    )
    data_dir: str = _setting(".streams-data", "Faust data dir (RocksDB files)")
    decision_log_level: str = _setting(
        "info",
        "the worker's line per decision (lead waiting, dial granted, outcome...):"
        " `info` logs each (about 7 µs of the worker's core per line), `debug` logs"
        " each at DEBUG and one INFO line a second counting them by kind; problems"
        " are WARNING lines either way",
    )
    # The Twilio dialer's settings; `require_twilio()` insists on the ones without default.
    twilio_account_sid: str | None = _setting(
        None, "Twilio dialer: account (`AC` + 32 hex digits); required"
    )
    twilio_auth_token: str | None = _setting(
        None, "Twilio dialer: REST auth and webhook signatures; required"
    )
    twilio_from_number: str | None = _setting(
        None, "Twilio dialer: caller id, an E.164 number of the account; required"
    )
    public_base_url: str | None = _setting(
        None,
        "Twilio dialer: the https URL Twilio reaches the dialer's web port at; required",
    )
    twilio_api_base_url: str | None = _setting(
        None,
        "Twilio dialer: REST API root; unset, the library's own"
        " (`https://api.twilio.com`); tests point it at a fake",
    )
    twilio_cps: float = _setting(
        1.0,
        "Twilio dialer: the account's calls per second, shared by all"
        " `TWILIO_DIALER_INSTANCES` (each takes its share)",
    )
    twilio_dialer_instances: int = _setting(
        1, "Twilio dialer: how many dialers share the account's `TWILIO_CPS`"
    )
    twilio_request_timeout_seconds: float = _setting(
        15.0, "Twilio dialer: the longest one REST request to Twilio may take"
    )
    twilio_list_settle_seconds: float = _setting(
        10.0,
        "Twilio dialer: how long Twilio's call list may take to show a call a failed"
        " create made, before it is looked for (twice) and dialed again",
    )
    twilio_auth_token_previous: str | None = _setting(
        None,
        "Twilio dialer: the auth token being rotated out; webhooks signed with it are"
        " accepted too while it is set",
    )
    twilio_webhook_shared_keys: str | None = _setting(
        None,
        "Twilio dialer: `KEY_ID:SECRET[,KEY_ID:SECRET...]`, the SharedKeys of webhook"
        " rules that sign our callbacks (`X-Twilio-Webhooks-Signature-Settings`)",
    )
    twilio_voice_url: str | None = _setting(
        None,
        "Twilio dialer: what an answered call does, as a URL Twilio fetches TwiML from",
    )
    twilio_twiml: str | None = _setting(
        None,
        "Twilio dialer: or that TwiML inline (`<Response>...</Response>`); neither:"
        " a one-second pause",
    )
    database_url: str = _setting(
        "sqlite:///streams-ledger.db",
        "Twilio dialer's ledger (and `streams ledger`): `sqlite:///FILE` or"
        " `postgresql://user:pw@host/db`",
    )
    dialer_web_port: int = _setting(
        8080, "Twilio dialer's web server (`/twilio/status`, `/healthz`, `/metrics`)"
    )
    reconcile_after_seconds: float = _setting(
        30.0,
        "Twilio dialer: fetch a live call from Twilio after this long without news",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `environ` (default: the process environment)."""
        env = os.environ if environ is None else environ
        given = {
            var: raw.strip()
            for var, _ in _ENVIRONMENT.values()
            if (raw := env.get(var)) is not None and raw.strip() != ""
        }
        names = {var: var for var in given}
        for var, (value, name) in _kafka_sources(given).items():
            given[var], names[var] = value, name
        values: dict[str, Any] = {}
        for field_name, (var, parse) in _ENVIRONMENT.items():
            if var in given:
                values[field_name] = parse(names[var], given[var])
        settings = cls(**values)
        _check_kafka_security(settings, names)
        if settings.twilio_voice_url and settings.twilio_twiml:
            raise ConfigError(
                "set TWILIO_VOICE_URL or TWILIO_TWIML, not both: an answered"
                " call runs one voice flow"
            )
        settings.default_window()
        settings.default_retry()
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

    def default_window(self) -> CallingWindow | None:
        """The calling window of businesses without their own (None: any hour)."""
        if self.calling_hours is None:
            return None
        try:
            return CallingWindow.parse(
                self.calling_hours, self.calling_days, self.calling_timezone
            )
        except ValueError as exc:
            raise ConfigError(f"CALLING_HOURS/DAYS/TIMEZONE: {exc}") from None

    def default_retry(self) -> RetryPolicy | None:
        """The retry policy of businesses without their own (None: no retries)."""
        if self.retry_on is None:
            return None
        try:
            return RetryPolicy.parse(
                self.retry_on, self.retry_delays, self.max_dial_attempts
            )
        except ValueError as exc:
            raise ConfigError(f"RETRY_ON/RETRY_DELAYS: {exc}") from None

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
            window=self.default_window(),
            retry=self.default_retry(),
        )


def _kafka_sources(given: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Values the client properties file and the password file give, for variables the
    environment does not set: variable -> (value, what to call it in an error)."""
    found: dict[str, tuple[str, str]] = {}
    path = given.get("KAFKA_CLIENT_CONFIG")
    if path is not None:
        name = f"KAFKA_CLIENT_CONFIG ({path})"
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
            properties = client_properties(text)
        except OSError as exc:
            raise ConfigError(
                f"KAFKA_CLIENT_CONFIG: cannot read {path}: {exc.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(f"{name}: not UTF-8 text") from None
        except PropertiesError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        if properties.ignored:
            log.info(
                "%s: ignoring %s (the project sets its own)",
                name,
                ", ".join(properties.ignored),
            )
        for var, value in properties.variables.items():
            secret = var in _SECRET_VARIABLES
            found[var] = (value if secret else value.strip(), f"{var} from {name}")
    password_file = given.get("KAFKA_SASL_PASSWORD_FILE")
    if password_file is not None:
        if "KAFKA_SASL_PASSWORD" in given:
            raise ConfigError(
                "set KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE, not both"
            )
        found["KAFKA_SASL_PASSWORD"] = (
            _password_from(password_file),
            f"KAFKA_SASL_PASSWORD_FILE ({password_file})",
        )
    return {var: value for var, value in found.items() if var not in given}


def _password_from(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as exc:
        raise ConfigError(
            f"KAFKA_SASL_PASSWORD_FILE: cannot read {path}: {exc.strerror}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"KAFKA_SASL_PASSWORD_FILE ({path}): not UTF-8 text") from None
    password = text[:-1] if text.endswith("\n") else text
    password = password[:-1] if password.endswith("\r") else password
    if not password:
        raise ConfigError(f"KAFKA_SASL_PASSWORD_FILE ({path}) is empty")
    return password


def _check_kafka_security(settings: Settings, names: Mapping[str, str]) -> None:
    """The security settings fit together: SASL has what it needs, nothing is set that
    the chosen protocol would silently ignore."""

    def name(field_name: str) -> str:
        var = _ENVIRONMENT[field_name][0]
        return names.get(var, var)

    protocol = settings.kafka_security_protocol
    sasl_fields = ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
    tls_fields = (
        "kafka_ssl_ca_location",
        "kafka_ssl_certificate_location",
        "kafka_ssl_key_location",
        "kafka_ssl_key_password",
    )
    if protocol.startswith("SASL_"):
        for field_name in sasl_fields:
            if getattr(settings, field_name) is None:
                raise ConfigError(
                    f"{name(field_name)} is required with"
                    f" KAFKA_SECURITY_PROTOCOL={protocol}"
                )
    else:
        for field_name in sasl_fields:
            if getattr(settings, field_name) is not None:
                raise ConfigError(
                    f"{name(field_name)} is set but KAFKA_SECURITY_PROTOCOL={protocol}"
                    " uses no SASL (SASL_SSL or SASL_PLAINTEXT?)"
                )
    if not protocol.endswith("SSL"):
        for field_name in tls_fields:
            if getattr(settings, field_name) is not None:
                raise ConfigError(
                    f"{name(field_name)} is set but KAFKA_SECURITY_PROTOCOL={protocol}"
                    " uses no TLS (SSL or SASL_SSL?)"
                )
    certificate = settings.kafka_ssl_certificate_location
    key = settings.kafka_ssl_key_location
    if (certificate is None) != (key is None):
        missing = (
            "kafka_ssl_key_location" if key is None else "kafka_ssl_certificate_location"
        )
        raise ConfigError(f"mutual TLS needs {name(missing)} too")
    if settings.kafka_ssl_key_password is not None and key is None:
        raise ConfigError(
            f"{name('kafka_ssl_key_password')} is set without KAFKA_SSL_KEY_LOCATION"
        )


_Parser = Callable[[str, str], object]

#: field -> (environment variable, parser), in the order `--help` and docs/settings.md
#: list them.
_ENVIRONMENT: dict[str, tuple[str, _Parser]] = {
    "kafka_bootstrap_servers": ("KAFKA_BOOTSTRAP_SERVERS", _bootstrap),
    "kafka_client_config": ("KAFKA_CLIENT_CONFIG", _readable_file),
    "kafka_security_protocol": (
        "KAFKA_SECURITY_PROTOCOL",
        _choice(SECURITY_PROTOCOLS, upper=True),
    ),
    "kafka_sasl_mechanism": ("KAFKA_SASL_MECHANISM", _choice(SASL_MECHANISMS, upper=True)),
    "kafka_sasl_username": ("KAFKA_SASL_USERNAME", lambda n, r: r),
    "kafka_sasl_password": ("KAFKA_SASL_PASSWORD", _secret),
    "kafka_sasl_password_file": ("KAFKA_SASL_PASSWORD_FILE", _readable_file),
    "kafka_ssl_ca_location": ("KAFKA_SSL_CA_LOCATION", _readable_file),
    "kafka_ssl_certificate_location": ("KAFKA_SSL_CERTIFICATE_LOCATION", _readable_file),
    "kafka_ssl_key_location": ("KAFKA_SSL_KEY_LOCATION", _readable_file),
    "kafka_ssl_key_password": ("KAFKA_SSL_KEY_PASSWORD", _secret),
    "kafka_ssl_endpoint_identification_algorithm": (
        "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM",
        _choice(ENDPOINT_IDENTIFICATION),
    ),
    "topic_replication_factor": ("TOPIC_REPLICATION_FACTOR", lambda n, r: _int(n, r, 1)),
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
    "calling_hours": ("CALLING_HOURS", lambda n, r: r),
    "calling_days": ("CALLING_DAYS", lambda n, r: r),
    "calling_timezone": ("CALLING_TIMEZONE", _zone),
    "retry_on": ("RETRY_ON", lambda n, r: r),
    "retry_delays": ("RETRY_DELAYS", lambda n, r: r),
    "tick_interval_seconds": ("TICK_INTERVAL_SECONDS", lambda n, r: _float(n, r, 0.05)),
    "table_store": ("TABLE_STORE", _store),
    "worker_web_port": ("WORKER_WEB_PORT", _port),
    "app_id": ("STREAMS_APP_ID", _prefix),
    "worker_instance_id": ("WORKER_INSTANCE_ID", _prefix),
    "data_dir": ("STREAMS_DATA_DIR", lambda n, r: r),
    "decision_log_level": ("DECISION_LOG_LEVEL", _choice(("info", "debug"))),
    "twilio_account_sid": ("TWILIO_ACCOUNT_SID", _account_sid),
    "twilio_auth_token": ("TWILIO_AUTH_TOKEN", lambda n, r: r),
    "twilio_from_number": ("TWILIO_FROM_NUMBER", _e164),
    "public_base_url": ("PUBLIC_BASE_URL", _url),
    "twilio_api_base_url": ("TWILIO_API_BASE_URL", _url),
    "twilio_cps": ("TWILIO_CPS", lambda n, r: _float(n, r, 0.01)),
    "twilio_dialer_instances": ("TWILIO_DIALER_INSTANCES", lambda n, r: _int(n, r, 1)),
    "twilio_request_timeout_seconds": (
        "TWILIO_REQUEST_TIMEOUT_SECONDS",
        lambda n, r: _float(n, r, 0.5),
    ),
    "twilio_list_settle_seconds": (
        "TWILIO_LIST_SETTLE_SECONDS",
        lambda n, r: _float(n, r, 0.0),
    ),
    "twilio_auth_token_previous": ("TWILIO_AUTH_TOKEN_PREVIOUS", lambda n, r: r),
    "twilio_webhook_shared_keys": ("TWILIO_WEBHOOK_SHARED_KEYS", _shared_keys),
    "twilio_voice_url": ("TWILIO_VOICE_URL", lambda n, r: _url(n, r, keep_slash=True)),
    "twilio_twiml": ("TWILIO_TWIML", _twiml),
    "database_url": ("DATABASE_URL", _database_url),
    "dialer_web_port": ("DIALER_WEB_PORT", _port),
    "reconcile_after_seconds": ("RECONCILE_AFTER_SECONDS", lambda n, r: _float(n, r, 1.0)),
}


def environment_variables() -> dict[str, str]:
    """Environment variable -> default value, for `--help` texts."""
    defaults = Settings()
    return {
        var: "" if getattr(defaults, field) is None else str(getattr(defaults, field))
        for field, (var, _) in _ENVIRONMENT.items()
    }


#: Where the password can be read from, and the variables that hold secrets.
_SECRET_VARIABLES = {"KAFKA_SASL_PASSWORD", "KAFKA_SSL_KEY_PASSWORD"}
#: Variables whose files gave other settings their values.
_SOURCE_VARIABLES = ("KAFKA_CLIENT_CONFIG", "KAFKA_SASL_PASSWORD_FILE")


def settings_environment(settings: Settings) -> dict[str, str]:
    """The environment variables that reproduce `settings` in another process. Every
    value goes as itself, so the files some came from are cleared (empty: unset):
    read again, they could no longer agree (a password both given and in a file)."""
    values = {var: getattr(settings, field) for field, (var, _) in _ENVIRONMENT.items()}
    exported = {var: str(value) for var, value in values.items() if value is not None}
    return {**exported, **dict.fromkeys(_SOURCE_VARIABLES, "")}


#: docs/settings.md holds the table between these lines; `python -m streams.settings
#: --write docs/settings.md` rewrites it there, and a unit test fails when they differ.
TABLE_BEGIN = (
    "<!-- settings table: generated by `python -m streams.settings`; do not edit -->"
)
TABLE_END = "<!-- end of settings table -->"


def _shown_default(value: object) -> str:
    if value is None:
        return "—"
    if value == "":
        return "empty"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def settings_markdown() -> str:
    """The settings table in markdown: variable, default and meaning of each."""
    fields = {field.name: field for field in dataclasses.fields(Settings)}
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for field_name, (var, _) in _ENVIRONMENT.items():
        field = fields[field_name]
        doc = field.metadata["doc"].replace("|", "\\|")
        rows.append(f"| `{var}` | {_shown_default(field.default)} | {doc} |")
    return "\n".join(rows) + "\n"


def with_settings_table(document: str) -> str:
    """`document` with the text between its table markers replaced by the current table."""
    begin, end = document.find(TABLE_BEGIN), document.find(TABLE_END)
    if begin < 0 or end < begin:
        raise ConfigError(f"no settings table markers ({TABLE_BEGIN} ... {TABLE_END})")
    head = document[: begin + len(TABLE_BEGIN)]
    return f"{head}\n{settings_markdown()}{document[end:]}"


def main(argv: list[str] | None = None) -> int:
    """Print the settings table, or rewrite it in a document between its markers."""
    parser = argparse.ArgumentParser(
        prog="python -m streams.settings",
        description="Print the settings table (markdown) generated from this module.",
    )
    parser.add_argument(
        "--write",
        metavar="FILE",
        help="rewrite the table between its markers in FILE (docs/settings.md)",
    )
    args = parser.parse_args(argv)
    if args.write is None:
        print(settings_markdown(), end="")
        return 0
    try:
        with open(args.write, encoding="utf-8") as file:
            document = file.read()
        updated = with_settings_table(document)
    except (OSError, ConfigError) as exc:
        parser.exit(2, f"{args.write}: {exc}\n")
    if updated != document:
        with open(args.write, "w", encoding="utf-8") as file:
            file.write(updated)
        print(f"{args.write}: settings table rewritten")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
