"""`edge-agent opcua-cert`: the client certificate a technician hands to the server's operator."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from edge_agent.cli import EX_OK, EX_USAGE, main
from edge_agent.drivers.opcua.security import application_uri


def test_it_writes_a_der_certificate_and_a_private_key_only_its_owner_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert, key = tmp_path / "opcua" / "cert.der", tmp_path / "opcua" / "key.pem"
    code = main(["opcua-cert", "--cert", str(cert), "--key", str(key), "--host", "gw-mine1"])
    assert code == EX_OK
    certificate = x509.load_der_x509_certificate(cert.read_bytes())
    assert application_uri(certificate) == "urn:edge-agent:gw-mine1"
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert "SHA-256 fingerprint: " in capsys.readouterr().out


def test_it_never_overwrites_an_existing_key(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("the key in use\n")
    assert main(["opcua-cert", "--cert", str(tmp_path / "c.der"), "--key", str(key)]) == EX_USAGE
    assert key.read_text() == "the key in use\n"
