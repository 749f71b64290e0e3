"""Certificates: this gateway's own, and the trust list the server's must be on.

Invariants:
- With a security policy, the server's certificate is checked before the
  secure channel is opened: it must be in the trust list (a file in
  `trust_dir` or `trust_files`, compared byte for byte), or be issued by a CA
  certificate there, and be within its validity dates. Anything else is
  refused (`Untrusted`, with the certificate's SHA-256 fingerprint in the
  message so a technician can compare it with the server's).
- `trust_on_first_use` trusts only when the trust list is empty: the first
  certificate seen is logged with its fingerprint and stored in `trust_dir`;
  a later, different certificate is refused like any unknown one.
- The certificate fetched with GetEndpoints is the one the channel is opened
  with, and asyncua checks the session's server certificate against it
  ("Server certificate mismatch"), so a second server cannot slip in between.
"""

from __future__ import annotations

import hashlib
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto import cert_gen, security_policies
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from structlog.typing import FilteringBoundLogger

from edge_agent.credentials import resolve_path
from edge_agent.drivers.opcua.config import Security

_POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128Sha256RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256Sha256RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
_MODES = {
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}
_CERT_SUFFIXES = (".der", ".pem", ".crt", ".cer")
APPLICATION_URI = "urn:edge-agent:{host}"
"""The client's application URI when its certificate names none: urn:edge-agent:HOST."""


class Untrusted(Exception):
    """The server's certificate is not trusted; the message says what to do."""


class NoEndpoint(Exception):
    """The server offers no endpoint with the configured policy and mode; the message lists
    those it offers, spelled as in the config."""


class CertificateFileError(Exception):
    """This gateway's certificate or key cannot be read; the message says which and why."""


def fingerprint(der: bytes) -> str:
    """SHA-256 of the DER certificate as AB:CD:..., the form UaExpert and servers show."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def load_certificate(data: bytes) -> x509.Certificate:
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def resolve(configured: str) -> Path:
    """A configured path -> a real one: absolute as is, relative inside $CREDENTIALS_DIRECTORY."""
    return resolve_path(configured)


def trusted_certificates(security: Security) -> list[x509.Certificate]:
    """Every certificate of the trust list; a missing trust_dir is an empty one."""
    files = [resolve(f) for f in security.trust_files]
    if security.trust_dir is not None:
        directory = resolve(security.trust_dir)
        if directory.is_dir():
            files += sorted(p for p in directory.iterdir() if p.suffix.lower() in _CERT_SUFFIXES)
    return [load_certificate(path.read_bytes()) for path in files]


def check_server(der: bytes, security: Security, log: FilteringBoundLogger) -> None:
    """Accept the server certificate `der` or raise Untrusted; trust it on first use if allowed."""
    cert = load_certificate(der)
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise Untrusted(
            f"the server certificate (SHA-256 {fingerprint(der)}) is valid from "
            f"{cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d} "
            "only: have the server's certificate renewed (or the gateway's clock checked)"
        )
    trusted = trusted_certificates(security)
    if any(_trusts(anchor, cert) for anchor in trusted):
        return
    if security.trust_on_first_use and not trusted and security.trust_dir is not None:
        _store(der, cert, resolve(security.trust_dir))
        log.warning(
            "server_certificate_trusted_on_first_use",
            fingerprint=fingerprint(der),
            subject=cert.subject.rfc4514_string(),
            stored=str(resolve(security.trust_dir)),
        )
        return
    raise Untrusted(
        f"the server certificate {cert.subject.rfc4514_string()!r} (SHA-256 "
        f"{fingerprint(der)}) is not in the trust list: compare the fingerprint with the "
        f"one the server shows, then copy its certificate into {_trust_place(security)}"
    )


def _trust_place(security: Security) -> str:
    """Where a trusted certificate goes: trust_dir's path, else a note on trust_files."""
    if security.trust_dir is not None:
        return f"{resolve(security.trust_dir)} (trust_dir)"
    return "a file listed in trust_files"


def _trusts(anchor: x509.Certificate, cert: x509.Certificate) -> bool:
    if anchor == cert:
        return True
    if anchor.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(anchor)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _store(der: bytes, cert: x509.Certificate, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    label = "".join(c if c.isalnum() else "-" for c in str(names[0].value)) if names else "server"
    (directory / f"{label}-{fingerprint(der).replace(':', '')[:16].lower()}.der").write_bytes(der)


async def secure(client: Client, security: Security, log: FilteringBoundLogger) -> None:
    """Set up `client`'s secure channel: find the endpoint, check its certificate, load ours."""
    policy, mode = _POLICIES[security.policy], _MODES[security.mode]
    endpoints = await client.connect_and_get_server_endpoints()
    offered = [e for e in endpoints if e.SecurityPolicyUri == policy.URI and e.SecurityMode == mode]
    if not offered:
        raise NoEndpoint(no_endpoint(f"{security.policy}/{security.mode}", endpoints))
    server_der = first_certificate(offered[0].ServerCertificate or b"")
    check_server(server_der, security, log)
    certificate = resolve(security.certificate or "")  # Security._consistent: a policy has both
    key = resolve(security.private_key or "")
    try:
        client.application_uri = application_uri(load_certificate(certificate.read_bytes()))
        await client.set_security(
            policy, str(certificate), str(key), server_certificate=server_der, mode=mode
        )
    except (OSError, ValueError) as exc:
        raise CertificateFileError(
            f"cannot use this gateway's certificate {certificate} and key {key}: "
            f"{getattr(exc, 'strerror', None) or exc}; make them with `edge-agent opcua-cert`"
        ) from None


def no_endpoint(wanted: str, endpoints: list[ua.EndpointDescription]) -> str:
    """Why `wanted` (None or POLICY/MODE) cannot be used, with the pairs the server offers."""
    offered = sorted({spelled(e) for e in endpoints})
    return (
        f"the server offers no endpoint {wanted}: set security.policy and security.mode to one "
        f"it offers: {', '.join(offered) or 'none'}"
    )


def spelled(endpoint: ua.EndpointDescription) -> str:
    """An endpoint's policy and mode as the config spells them: None, Basic256Sha256/Sign.

    A policy the driver does not speak (Basic128Rsa15, Basic256: deprecated) keeps the
    last part of its URI, with `(not supported)`."""
    uri = endpoint.SecurityPolicyUri
    if endpoint.SecurityMode == ua.MessageSecurityMode.None_ or uri.endswith("#None"):
        return "None"
    names = {cls.URI: name for name, cls in _POLICIES.items()}
    policy = names.get(uri) or f"{uri.rsplit('#', 1)[-1]} (not supported)"
    return f"{policy}/{endpoint.SecurityMode.name}"


def first_certificate(der: bytes) -> bytes:
    """The leaf of a DER chain: servers may send their CA certificates after it."""
    length = int.from_bytes(der[2:4], "big") + 4  # a DER SEQUENCE with a two-byte length
    return der[:length]


def application_uri(cert: x509.Certificate) -> str:
    """The URI in the certificate's subjectAltName: servers check the client's against it."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return APPLICATION_URI.format(host=socket.gethostname())
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else APPLICATION_URI.format(host=socket.gethostname())


def make_client_certificate(
    cert_path: Path, key_path: Path, *, host: str, uri: str | None = None, days: int = 3650
) -> x509.Certificate:
    """A new key and self-signed client certificate (DER), for the server operator to trust.

    The key is written with mode 0600 before any byte of it; an existing key or
    certificate is never overwritten (FileExistsError).
    """
    uri = uri or APPLICATION_URI.format(host=host)
    key = cert_gen.generate_private_key()
    cert: x509.Certificate = cert_gen.generate_self_signed_app_certificate(
        key,
        uri,
        {"organizationName": "edge-agent"},
        [x509.UniformResourceIdentifier(uri), x509.DNSName(host)],
        extended=[ExtendedKeyUsageOID.CLIENT_AUTH],
        days=days,
    )
    for path in (cert_path, key_path):
        if path.exists():
            raise FileExistsError(f"{path} exists: remove it first, or choose another name")
        path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(cert_gen.dump_private_key_as_pem(key))
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    return cert
