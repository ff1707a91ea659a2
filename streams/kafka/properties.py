"""What a Kafka client properties file says (`KAFKA_CLIENT_CONFIG`), as our settings.

Managed services (Confluent Cloud, MSK, Aiven, Redpanda Cloud) hand out their
connection settings as such a file, and Kafka's own tools take it with
`--command-config`: the Java properties syntax, the Java client's or librdkafka's key
names, and often the credentials inside a JAAS line (`sasl.jaas.config`). Pure: text in,
environment variables out; `streams.settings` reads the file and validates the values.
"""

from __future__ import annotations

import dataclasses
import re

#: client property -> the environment variable it stands for (either spelling).
PROPERTY_VARIABLES = {
    "bootstrap.servers": "KAFKA_BOOTSTRAP_SERVERS",
    "security.protocol": "KAFKA_SECURITY_PROTOCOL",
    "sasl.mechanism": "KAFKA_SASL_MECHANISM",
    "sasl.mechanisms": "KAFKA_SASL_MECHANISM",
    "sasl.username": "KAFKA_SASL_USERNAME",
    "sasl.password": "KAFKA_SASL_PASSWORD",
    "ssl.ca.location": "KAFKA_SSL_CA_LOCATION",
    "ssl.certificate.location": "KAFKA_SSL_CERTIFICATE_LOCATION",
    "ssl.key.location": "KAFKA_SSL_KEY_LOCATION",
    "ssl.key.password": "KAFKA_SSL_KEY_PASSWORD",
    "ssl.endpoint.identification.algorithm": "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM",
}
#: Keys about key stores we cannot use as they are: the file must say PEM.
_TRUSTSTORE_KEYS = ("ssl.truststore.location", "ssl.truststore.type")
_KEYSTORE_KEYS = ("ssl.keystore.location", "ssl.keystore.type")
#: Where a JAAS line keeps its credentials, per login module; other modules (Kerberos,
#: OAuth) are mechanisms we do not support.
_LOGIN_MODULES = {
    "org.apache.kafka.common.security.plain.PlainLoginModule",
    "org.apache.kafka.common.security.scram.ScramLoginModule",
}

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


class PropertiesError(ValueError):
    """The file cannot be used; the message is one line naming the key or line."""


@dataclasses.dataclass(frozen=True)
class ClientProperties:
    """What the file gives: environment variables, and the keys this project ignores
    (it sets its own timeouts, acks and client ids)."""

    variables: dict[str, str]
    ignored: tuple[str, ...]


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, logical line): a line ending in an odd number of
    backslashes goes on with the next, whose leading blanks are dropped."""
    lines: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.lstrip() if pending is not None else raw
        if pending is None and (not line.strip() or line.lstrip()[0] in "#!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:
            start, head = pending if pending is not None else (number, "")
            pending = (start, head + line[:-1])
            continue
        if pending is not None:
            lines.append((pending[0], pending[1] + line))
            pending = None
        else:
            lines.append((number, line))
    if pending is not None:
        lines.append(pending)
    return lines


def _unescape(text: str, number: int) -> str:
    out: list[str] = []
    chars = iter(range(len(text)))
    for i in chars:
        char = text[i]
        if char != "\\" or i + 1 == len(text):
            out.append(char)
            continue
        escaped = text[i + 1]
        next(chars)
        if escaped == "u":
            digits = text[i + 2 : i + 6]
            if not re.fullmatch(r"[0-9a-fA-F]{4}", digits):
                raise PropertiesError(f"line {number}: malformed \\u escape")
            out.append(chr(int(digits, 16)))
            for _ in range(4):
                next(chars)
        else:
            out.append(_ESCAPES.get(escaped, escaped))
    return "".join(out)


def parse_properties(text: str) -> dict[str, str]:
    """The key/value pairs of a Java properties document (java.util.Properties.load):
    `key=value`, `key: value` or `key value`, `#`/`!` comments, continued lines and
    backslash escapes. A repeated key keeps its last value."""
    found: dict[str, str] = {}
    for number, line in _logical_lines(text):
        line = line.lstrip()
        end = 0
        while end < len(line) and line[end] not in "=: \t\f":
            end += 2 if line[end] == "\\" else 1
        key = line[:end]
        rest = line[end:].lstrip(" \t\f")
        if rest[:1] in ("=", ":"):
            rest = rest[1:].lstrip(" \t\f")
        found[_unescape(key, number)] = _unescape(rest, number)
    return found


def jaas_credentials(value: str) -> tuple[str, str]:
    """(username, password) from a `sasl.jaas.config` line such as
    `org.apache.kafka.common.security.plain.PlainLoginModule required
    username="key" password="secret";` (single or double quotes, as Kafka accepts)."""
    match = re.match(r"\s*([\w.$]+)\s+(required|requisite|sufficient|optional)\b", value)
    if match is None:
        raise PropertiesError("sasl.jaas.config: expected `LoginModule required k=v ...;`")
    module = match.group(1)
    if module not in _LOGIN_MODULES:
        raise PropertiesError(
            f"sasl.jaas.config: login module {module} is not supported"
            " (PlainLoginModule or ScramLoginModule)"
        )
    options: dict[str, str] = {}
    rest = value[match.end() :]
    option = re.compile(
        r"""\s*([\w.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s;]+)"""
    )
    while True:
        found = option.match(rest)
        if found is None:
            break
        name, raw = found.groups()
        if raw[:1] in "\"'":
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        options[name] = raw
        rest = rest[found.end() :]
    if rest.strip() not in ("", ";"):
        raise PropertiesError("sasl.jaas.config: cannot read the options after the module")
    missing = [name for name in ("username", "password") if name not in options]
    if missing:
        raise PropertiesError(f"sasl.jaas.config: no {' or '.join(missing)} option")
    return options["username"], options["password"]


def _pem_store(properties: dict[str, str], keys: tuple[str, str]) -> str | None:
    location, kind = (properties.get(key) for key in keys)
    if location is None:
        return None
    if (kind or "JKS").upper() != "PEM":
        raise PropertiesError(
            f"{keys[0]}: only PEM stores can be used ({keys[1]}={kind or 'JKS'});"
            " convert it to PEM files and use ssl.ca.location (or"
            " ssl.certificate.location and ssl.key.location)"
        )
    return location


def client_properties(text: str) -> ClientProperties:
    """The settings a client properties file gives, by environment variable.

    Explicit `sasl.username`/`sasl.password` win over a JAAS line's; a PEM trust store
    stands for `ssl.ca.location`, a PEM key store (key and certificate in one file) for
    both `ssl.certificate.location` and `ssl.key.location`. Java's way of turning
    hostname verification off, an empty `ssl.endpoint.identification.algorithm`, is
    `none`.
    """
    properties = parse_properties(text)
    variables: dict[str, str] = {}
    jaas = properties.get("sasl.jaas.config")
    if jaas is not None:
        username, password = jaas_credentials(jaas)
        variables["KAFKA_SASL_USERNAME"] = username
        variables["KAFKA_SASL_PASSWORD"] = password
    truststore = _pem_store(properties, _TRUSTSTORE_KEYS)
    if truststore is not None:
        variables["KAFKA_SSL_CA_LOCATION"] = truststore
    keystore = _pem_store(properties, _KEYSTORE_KEYS)
    if keystore is not None:
        variables["KAFKA_SSL_CERTIFICATE_LOCATION"] = keystore
        variables["KAFKA_SSL_KEY_LOCATION"] = keystore
    for key, value in properties.items():
        variable = PROPERTY_VARIABLES.get(key)
        if variable is not None:
            variables[variable] = value
    algorithm = "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM"
    if algorithm in variables and not variables[algorithm].strip():
        variables[algorithm] = "none"
    used = {*PROPERTY_VARIABLES, "sasl.jaas.config", *_TRUSTSTORE_KEYS, *_KEYSTORE_KEYS}
    ignored = tuple(sorted(key for key in properties if key not in used))
    return ClientProperties(variables, ignored)
