"""Why a connect or a request failed, in the words of the technician who must fix it.

`describe` is the one place that turns an exception into the reason shown in
`link_down`, in `edge-agent read` (`cannot connect: ...`) and in /healthz: it
names the cause and the file, setting or server list that fixes it, and the
server's StatusCode in brackets, never a traceback or an exception's class.

- BadSecurityChecksFailed or a BadCertificate... code, on a secure channel: the
  server does not accept this gateway's certificate; the reason names cert.der
  (its path and fingerprint) for the server's operator to trust.
- BadUserAccessDenied, BadIdentityToken...: the server refuses the user of
  username_file (or, with none, an anonymous session).
- BadSecurityModeRejected, BadSecurityPolicyRejected: the policy and mode are
  refused (security.NoEndpoint lists the pairs the server offers).
- BadTooManySessions: the server holds as many sessions as it allows.

`read_channel_faults` works around asyncua 2.1, which cannot read a server's
refusal of OpenSecureChannel (see there).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asyncua import Client, ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import nodeid_from_binary, struct_from_binary
from cryptography.hazmat.primitives.serialization import Encoding

from edge_agent.credentials import CredentialFileError, resolve_path
from edge_agent.drivers.opcua.config import OpcuaDevice, Security
from edge_agent.drivers.opcua.quality import status_name
from edge_agent.drivers.opcua.security import fingerprint, load_certificate

__all__ = ["ChannelRefused", "describe", "read_channel_faults"]

_CODES = ua.StatusCodes
OUR_CERTIFICATE = frozenset(
    {
        _CODES.BadSecurityChecksFailed,
        _CODES.BadCertificateInvalid,
        _CODES.BadCertificateUntrusted,
        _CODES.BadCertificateUriInvalid,
        _CODES.BadCertificateUseNotAllowed,
        _CODES.BadCertificateTimeInvalid,
        _CODES.BadCertificateIssuerTimeInvalid,
        _CODES.BadCertificateRevoked,
        _CODES.BadCertificateIssuerRevoked,
        _CODES.BadCertificateRevocationUnknown,
        _CODES.BadCertificateIssuerRevocationUnknown,
        _CODES.BadCertificateIssuerUseNotAllowed,
        _CODES.BadCertificateHostNameInvalid,
        _CODES.BadCertificatePolicyCheckFailed,
    }
)
"""What a server answers when it will not take this gateway's certificate."""
USER = frozenset(
    {
        _CODES.BadUserAccessDenied,
        _CODES.BadIdentityTokenRejected,
        _CODES.BadIdentityTokenInvalid,
        _CODES.BadUserSignatureInvalid,
    }
)
"""What a server answers when it will not take the user (or an anonymous session)."""
SECURITY_REJECTED = frozenset({_CODES.BadSecurityModeRejected, _CODES.BadSecurityPolicyRejected})
"""What a server answers to a policy or mode it does not offer."""
_SESSIONS = frozenset({_CODES.BadTooManySessions, _CODES.BadMaxConnectionsReached})


class ChannelRefused(Exception):
    """The server refused the secure channel with an answer asyncua cannot read."""


def describe(exc: BaseException, device: OpcuaDevice) -> str:
    """The reason for `exc`, for a log line, `edge-agent read` and /healthz."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ua.UaStatusCodeError):
        return _status(exc.code, device)
    if isinstance(exc, ChannelRefused) and device.security.secure:
        certificate = _path(device.security.certificate or "")
        return (
            "the server refused the secure channel, most often because it does not trust "
            f"this gateway's certificate: have the server's operator trust {certificate}"
            f"{_fingerprint(certificate)}; on many servers it waits among the rejected "
            "certificates, to be moved to the trusted ones"
        )
    return str(exc) or type(exc).__name__


def _status(code: int, device: OpcuaDevice) -> str:
    name = status_name(code)
    masked = code & 0xFFFF0000
    if masked in OUR_CERTIFICATE and device.security.secure:
        return _certificate_refused(name, device.security)
    if masked in USER:
        return _user_refused(name, device)
    if masked in SECURITY_REJECTED:
        return (
            f"the server refuses security policy {device.security.policy} with mode "
            f"{device.security.mode} ({name}): set security.policy and security.mode to a pair "
            "the server offers, or enable this one on the server"
        )
    if masked in _SESSIONS:
        return (
            f"the server holds as many sessions as it allows ({name}): sessions of other "
            "clients, or of this gateway's earlier connects, which the server frees when they "
            "time out; raise the server's session limit or close sessions there"
        )
    return f"the server answered {name}"


def _certificate_refused(name: str, security: Security) -> str:
    certificate = _path(security.certificate or "")
    fix = (
        "check the clocks of the gateway and the server, or make a new certificate with "
        "`edge-agent opcua-cert`"
        if "TimeInvalid" in name
        else "on many servers it waits among the rejected certificates, to be moved to the "
        "trusted ones"
    )
    return (
        f"the server does not accept this gateway's certificate ({name}): have the server's "
        f"operator trust {certificate}{_fingerprint(certificate)}; {fix}"
    )


def _user_refused(name: str, device: OpcuaDevice) -> str:
    if device.username_file is None or device.password_file is None:
        return (
            f"the server refuses an anonymous session ({name}): it wants a user; set "
            "username_file and password_file"
        )
    user, password = _path(device.username_file), _path(device.password_file)
    return (
        f"the server refuses the user of {user} ({name}): check the user name there and the "
        f"password in {password}, and that the server lets this user log in by user name on "
        "this endpoint"
    )


def _path(configured: str) -> str:
    try:
        return str(resolve_path(configured))
    except CredentialFileError:
        return configured


def _fingerprint(path: str) -> str:
    with contextlib.suppress(OSError, ValueError):
        der = load_certificate(Path(path).read_bytes()).public_bytes(Encoding.DER)
        return f" (SHA-256 {fingerprint(der)})"
    return ""


def read_channel_faults(client: Client) -> None:
    """Have `client` report a refused OpenSecureChannel with the server's StatusCode.

    asyncua 2.1 reads the answer to OpenSecureChannel as an OpenSecureChannelResponse
    only. A server that answers with a ServiceFault (node-opcua does, with
    BadSecurityChecksFailed, when it does not trust the client's certificate) breaks
    that parser; the request's future has its answer already, so `connect()` ends in
    a bare AssertionError. This keeps the answers to OpenSecureChannel and turns that
    AssertionError into ua.UaStatusCodeError(the fault's StatusCode), or ChannelRefused
    when the answer cannot be read either. It reaches into asyncua's socket protocol
    (`_send_request`): the one place the driver does.
    """
    uaclient = client.uaclient
    original = uaclient.open_secure_channel

    async def open_secure_channel(params: ua.OpenSecureChannelParameters) -> Any:
        protocol = uaclient.protocol
        if protocol is None:
            return await original(params)
        answers: list[asyncio.Future[Any]] = []
        errors: list[ua.ErrorMessage] = []
        send: Callable[..., asyncio.Future[Any]] = protocol._send_request
        process: Callable[[Any], None] = protocol._process_received_message

        def keep(request: Any, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
            future = send(request, *args, **kwargs)
            if isinstance(request, ua.OpenSecureChannelRequest):
                answers.append(future)
            return future

        def watch(message: Any) -> None:
            # node-opcua 2.163 refuses with an Error message (ERRF) whose header asyncua
            # misreads (the channel id as a Good StatusCode): it only logs and disconnects.
            if isinstance(message, ua.ErrorMessage):
                errors.append(message)
            process(message)

        protocol._send_request = keep
        protocol._process_received_message = watch
        try:
            return await original(params)
        except AssertionError:
            for future in answers:
                code = _fault(future)
                if code is not None:
                    raise ua.UaStatusCodeError(code) from None
            raise ChannelRefused(_UNREADABLE) from None
        except Exception:
            if errors:
                raise ChannelRefused(_UNREADABLE) from None
            raise
        finally:
            protocol._send_request = send
            protocol._process_received_message = process

    uaclient.open_secure_channel = open_secure_channel


def _fault(future: asyncio.Future[Any]) -> int | None:
    """The StatusCode of a ServiceFault answer, else None."""
    if not future.done() or future.cancelled() or future.exception() is not None:
        return None
    body = future.result()
    if not isinstance(body, Buffer):
        return None
    try:
        data = body.copy()
        kind = nodeid_from_binary(data)
        if kind.NamespaceIndex != 0 or kind.Identifier != _FAULT:
            return None
        code = struct_from_binary(ua.ResponseHeader, data).ServiceResult.value
    except Exception:  # an answer we cannot read either: ChannelRefused says so
        return None
    return code if isinstance(code, int) and code & 0x80000000 else None


_FAULT = ua.ObjectIds.ServiceFault_Encoding_DefaultBinary
_UNREADABLE = (
    "the server refused the secure channel with an answer the OPC UA library cannot read; "
    "most often it does not trust this gateway's certificate"
)
