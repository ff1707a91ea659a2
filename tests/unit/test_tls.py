"""The local cluster's throwaway CA and broker key store (streams/devtools/tls.py)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from streams.devtools import tls
from streams.devtools.private_files import write_private


def _certificates(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def test_the_broker_certificate_is_signed_by_the_ca_for_localhost_only(
    tmp_path: Path,
) -> None:
    files = tls.TlsFiles(tmp_path)
    files.write()
    (ca,) = _certificates(files.ca.read_bytes())
    (broker,) = _certificates(files.keystore.read_bytes())
    broker.verify_directly_issued_by(ca)
    names = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # No IP address: a client reaching the broker as 127.0.0.1 meets a hostname mismatch.
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == []
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True


def test_the_key_store_holds_the_key_of_its_certificate_and_only_its_owner_reads_it(
    tmp_path: Path,
) -> None:
    files = tls.TlsFiles(tmp_path)
    files.write()
    pem = files.keystore.read_bytes()
    key = load_pem_private_key(pem, password=None)
    (certificate,) = _certificates(pem)
    assert key.public_key() == certificate.public_key()
    assert pem.index(b"PRIVATE KEY") < pem.index(b"CERTIFICATE")
    assert files.keystore.stat().st_mode & 0o777 == 0o600


def test_certificates_are_renewed_when_missing_or_close_to_expiry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = tls.TlsFiles(tmp_path)
    assert files.needs_renewal()
    files.write()
    assert not files.needs_renewal()
    monkeypatch.setattr(tls, "VALIDITY", datetime.timedelta(days=3))
    files.write()
    assert files.needs_renewal()


def test_private_files_replace_a_readable_file_with_an_owner_only_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "secret"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, "new")
    assert path.read_text() == "new"
    assert path.stat().st_mode & 0o777 == 0o600
