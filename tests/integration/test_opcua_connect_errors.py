"""A connect that fails says why in the technician's words, the same in the log line, in
/healthz and in `edge-agent read`: which certificate to trust and where, which credential
files to check, which policy and mode pairs the server offers. Never a traceback, an
exception's class (AssertionError) or asyncua's spelling (None/None_).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from opcua_helpers import device, tag
from opcua_sim import (
    LIMITED_SESSIONS,
    Sim,
    opcua_sim_fixture,  # noqa: F401  # registers the fixture opcua_sim
)
from snapshots import healthy
from structlog.testing import capture_logs

from edge_agent.drivers.opcua.config import OpcuaDevice
from edge_agent.drivers.opcua.driver import OpcuaDriver
from edge_agent.drivers.opcua.security import fingerprint, make_client_certificate
from edge_agent.poller import Poller
from edge_agent.service.health import HealthLimits, judge

pytestmark = pytest.mark.asyncio(loop_scope="session")

COUNTER = [tag("V.COUNT", "s=Vent.COUNT")]


async def reason_everywhere(config: OpcuaDevice) -> str:
    """The reason of the failed connect, once its log line, /healthz and `edge-agent read`
    were found to say the same, without a traceback."""
    driver = OpcuaDriver(config)
    poller = Poller(driver, 1.0, on_poll=lambda *_: None, on_missed=lambda *_: None)
    try:
        with capture_logs() as logs:
            await poller._poll()
            poller.note_link()
    finally:
        await driver.close()
    [down] = [e for e in logs if e["event"] == "link_down"]
    assert down["exc_info"] is None
    reason: str = down["reason"]
    snapshot = dataclasses.replace(healthy(), devices=(poller.snapshot(time.monotonic()),))
    assert judge(snapshot, HealthLimits()).reasons == [f"device ua-test down for 0 s: {reason}"]
    survey = await OpcuaDriver(config).read_all()
    assert survey.failure == f"cannot connect: {reason}"
    for word in ("Error", "Exception", "Traceback", "None_", "opcfoundation.org"):
        assert word not in reason
    return reason


def trusting_secure(sim: Sim, directory: Path) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    certificate = sim.simulator["secure"].certificate
    assert certificate is not None
    (directory / "secure.der").write_bytes(certificate)
    return {"trust_dir": str(directory)}


def secured(sim: Sim, server: str, pair: str, cert: Path, key: Path, **fields: Any) -> OpcuaDevice:
    policy, mode = pair.split("/")
    security = {"policy": policy, "mode": mode, "certificate": str(cert), "private_key": str(key)}
    return device(sim.endpoint(server), COUNTER, security={**security, **fields})


@pytest.mark.parametrize(
    ("answer", "at_channel", "code"),
    [
        (None, False, "BadCertificateUntrusted"),  # asyncua, at CreateSession
        (ua.StatusCodes.BadSecurityChecksFailed, True, "BadSecurityChecksFailed"),  # node-opcua
    ],
    ids=["asyncua", "node-opcua"],
)
async def test_a_gateway_certificate_the_server_refuses_names_the_file_to_trust(
    opcua_sim: Sim, tmp_path: Path, answer: int | None, at_channel: bool, code: str
) -> None:
    """A client certificate not in the server's trust list: the reason names cert.der's path
    and fingerprint for the server's operator; node-opcua's answer (a ServiceFault to
    OpenSecureChannel, which asyncua reads as AssertionError) is read for its StatusCode."""
    cert, key = tmp_path / "cert.der", tmp_path / "key.pem"
    make_client_certificate(cert, key, host="localhost")
    config = secured(
        opcua_sim,
        "secure",
        "Basic256Sha256/SignAndEncrypt",
        cert,
        key,
        **trusting_secure(opcua_sim, tmp_path / "trust"),
    ).model_copy(
        update={
            "username_file": str(opcua_sim.username_file),
            "password_file": str(opcua_sim.password_file),
        }
    )
    server = opcua_sim.simulator["secure"]
    server.refuse_untrusted_with(answer, at_channel=at_channel)
    try:
        reason = await reason_everywhere(config)
    finally:
        server.refuse_untrusted_with(None)
    assert reason.startswith(f"the server does not accept this gateway's certificate ({code})")
    assert f"trust {cert} (SHA-256 {fingerprint(cert.read_bytes())})" in reason


async def test_an_untrusted_server_names_its_fingerprint_and_the_trust_dir(
    opcua_sim: Sim, tmp_path: Path
) -> None:
    """Our trust list lacks the server's certificate: its fingerprint and trust_dir's path."""
    trust = tmp_path / "trust"
    trust.mkdir()
    config = secured(
        opcua_sim,
        "outage",
        "Basic256Sha256/SignAndEncrypt",
        opcua_sim.client_cert,
        opcua_sim.client_key,
        trust_dir=str(trust),
    )
    reason = await reason_everywhere(config)
    certificate = opcua_sim.simulator["outage"].certificate
    assert certificate is not None
    assert f"(SHA-256 {fingerprint(certificate)}) is not in the trust list" in reason
    assert reason.endswith(f"copy its certificate into {trust} (trust_dir)")


@pytest.mark.parametrize("who", ["wrong password", "anonymous"])
async def test_a_refused_user_names_the_credential_files(
    opcua_sim: Sim, tmp_path: Path, who: str
) -> None:
    """BadUserAccessDenied names the user and password files; an anonymous session refused
    (BadIdentityTokenRejected) says to set them."""
    config = secured(
        opcua_sim,
        "secure",
        "Aes128Sha256RsaOaep/SignAndEncrypt",
        opcua_sim.client_cert,
        opcua_sim.client_key,
        **trusting_secure(opcua_sim, tmp_path / "trust"),
    )
    password = tmp_path / "password"
    password.write_text("wrong-secret\n")
    if who == "wrong password":
        config = config.model_copy(
            update={"username_file": str(opcua_sim.username_file), "password_file": str(password)}
        )
    reason = await reason_everywhere(config)
    if who == "wrong password":
        assert reason == (
            f"the server refuses the user of {opcua_sim.username_file} (BadUserAccessDenied): "
            f"check the user name there and the password in {password}, and that the server "
            "lets this user log in by user name on this endpoint"
        )
        assert "wrong-secret" not in reason
    else:
        assert reason == (
            "the server refuses an anonymous session (BadIdentityTokenRejected): it wants a "
            "user; set username_file and password_file"
        )


@pytest.mark.parametrize(
    ("server", "pair", "offered"),
    [
        ("secure", "None/None", "Aes128Sha256RsaOaep/Sign, Aes128Sha256RsaOaep/SignAndEncrypt, "
         "Aes256Sha256RsaPss/Sign, Aes256Sha256RsaPss/SignAndEncrypt, Basic256Sha256/Sign, "
         "Basic256Sha256/SignAndEncrypt"),
        ("outage", "Aes256Sha256RsaPss/Sign", "Basic256Sha256/SignAndEncrypt, None"),
    ],
    ids=["none-on-a-secure-server", "a-pair-not-offered"],
)  # fmt: skip
async def test_a_policy_the_server_lacks_lists_the_pairs_it_offers_as_the_config_spells_them(
    opcua_sim: Sim, tmp_path: Path, server: str, pair: str, offered: str
) -> None:
    """The pairs the server offers, as `security.policy`/`security.mode` are written: None,
    Basic256Sha256/SignAndEncrypt (asyncua's own words were `None/None_` and a policy URI)."""
    if pair == "None/None":
        config = device(opcua_sim.endpoint(server), COUNTER)
        wanted = "None"
    else:
        trust = tmp_path / "trust"
        config = secured(
            opcua_sim,
            server,
            pair,
            opcua_sim.client_cert,
            opcua_sim.client_key,
            trust_dir=str(trust),
        )
        wanted = pair
    reason = await reason_everywhere(config)
    assert reason == (
        f"the server offers no endpoint {wanted}: set security.policy and security.mode to one "
        f"it offers: {offered}"
    )


async def test_a_server_full_of_sessions_says_so(opcua_sim: Sim) -> None:
    """Every session the `limited` server allows is taken (by HMIs, say): BadTooManySessions,
    with what to do."""
    server = opcua_sim.simulator["limited"]
    others = []
    try:
        while server.sessions() < LIMITED_SESSIONS:
            client = Client(server.endpoint, timeout=2)
            await client.connect()
            others.append(client)
        reason = await reason_everywhere(device(server.endpoint, COUNTER))
    finally:
        for client in others:
            await client.disconnect()
    assert reason.startswith("the server holds as many sessions as it allows (BadTooManySessions)")
