"""A throwaway certificate authority and broker certificate for a local TLS listener.

Why: `streams broker start --security sasl_ssl` must serve TLS on a machine with neither
keytool nor openssl. Kafka reads PEM key stores and trust stores, so Python's
`cryptography` makes everything the broker and its clients need. The broker certificate
names only ``localhost`` (no IP address), so a client bootstrapping through 127.0.0.1
meets a real hostname mismatch, which tests of that failure rely on.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from streams.devtools.private_files import write_private

#: How long the local certificates are valid; a local cluster is made anew long before.
VALIDITY = datetime.timedelta(days=365)

#: Certificates this close to expiry are made anew when the whole cluster starts.
RENEW_BEFORE = datetime.timedelta(days=7)

#: The names the broker certificate is valid for.
BROKER_HOSTNAMES = ("localhost",)

_CLOCK_SKEW = datetime.timedelta(minutes=5)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = _now()
    return builder.not_valid_before(now - _CLOCK_SKEW).not_valid_after(now + VALIDITY)


@dataclass(frozen=True)
class Authority:
    """A certificate authority that exists only to sign one local cluster's certificates."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, common_name: str = "streams local CA") -> Authority:
        key = _private_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        )
        return cls(key, _validity(builder).sign(key, hashes.SHA256()))

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(self, hostnames: Sequence[str]) -> tuple[bytes, bytes]:
        """A new key and a certificate for ``hostnames`` signed by this authority, as PEM,
        usable by a broker both as a server and as a client of the other brokers."""
        key = _private_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
            )
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(name) for name in hostnames]),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        certificate = _validity(builder).sign(self.key, hashes.SHA256())
        return _key_pem(key), certificate.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class TlsFiles:
    """Where a cluster's TLS material lives."""

    directory: Path

    @property
    def ca(self) -> Path:
        """The CA certificate: the brokers' trust store and the clients' ssl.ca.location."""
        return self.directory / "ca.pem"

    @property
    def keystore(self) -> Path:
        """The brokers' private key followed by their certificate, one PEM key store."""
        return self.directory / "broker-keystore.pem"

    def write(self, hostnames: Sequence[str] = BROKER_HOSTNAMES) -> None:
        """A new CA and broker certificate, replacing any there; the key store is private
        to this user."""
        authority = Authority.create()
        key_pem, certificate_pem = authority.issue(hostnames)
        self.directory.mkdir(parents=True, exist_ok=True)
        write_private(self.keystore, key_pem + certificate_pem)
        self.ca.write_bytes(authority.certificate_pem)

    def needs_renewal(self) -> bool:
        """Whether the files are missing or the broker certificate expires soon."""
        try:
            pem = self.keystore.read_bytes()
            self.ca.stat()
        except FileNotFoundError:
            return True
        certificate = x509.load_pem_x509_certificate(pem[pem.index(b"-----BEGIN CERT") :])
        return certificate.not_valid_after_utc - _now() < RENEW_BEFORE
