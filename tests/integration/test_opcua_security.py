"""Secure channels: every policy and mode, the trust list, trust on first use, user and password."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opcua_helpers import device, tag
from opcua_sim import (
    SECURE_ENDPOINTS,
    Sim,
    opcua_sim_fixture,  # noqa: F401  # registers the fixture opcua_sim
)
from structlog.testing import capture_logs

from edge_agent.drivers.opcua.driver import OpcuaDriver
from edge_agent.drivers.opcua.security import fingerprint
from edge_agent.model import LinkState, Quality

pytestmark = pytest.mark.asyncio(loop_scope="session")


def secure_device(sim: Sim, server: str, endpoint: str, trust: dict[str, Any]) -> Any:
    policy, mode = endpoint.split("/")
    return device(
        sim.endpoint(server),
        [tag("V.COUNT", "s=Vent.COUNT")],
        security={
            "policy": policy,
            "mode": mode,
            "certificate": str(sim.client_cert),
            "private_key": str(sim.client_key),
            **trust,
        },
        username_file=str(sim.username_file),
        password_file=str(sim.password_file),
    )


def trusting(sim: Sim, server: str, directory: Path) -> dict[str, Any]:
    """A trust dir holding exactly the server's certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    certificate = sim.simulator[server].certificate
    assert certificate is not None
    (directory / f"{server}.der").write_bytes(certificate)
    return {"trust_dir": str(directory)}


async def read_once(config: Any) -> tuple[OpcuaDriver, list[Any]]:
    driver = OpcuaDriver(config)
    try:
        return driver, await driver.read()
    finally:
        await driver.close()


@pytest.mark.parametrize("endpoint", SECURE_ENDPOINTS)
async def test_each_policy_and_mode_reads_with_a_trusted_server(
    opcua_sim: Sim, endpoint: str, tmp_path: Path
) -> None:
    """Basic256Sha256, Aes128Sha256RsaOaep, Aes256Sha256RsaPss, each with Sign and SignAndEncrypt,
    a user and password from files, the server trusting our certificate and we its."""
    config = secure_device(opcua_sim, "secure", endpoint, trusting(opcua_sim, "secure", tmp_path))
    driver, samples = await read_once(config)
    assert driver.link is LinkState.UP
    assert samples[0].quality is Quality.GOOD
    assert isinstance(samples[0].value, int)


async def test_an_untrusted_server_is_refused_with_its_fingerprint(
    opcua_sim: Sim, tmp_path: Path
) -> None:
    """A trust list without the server's certificate: no session, q=2, the fingerprint logged."""
    wrong = trusting(opcua_sim, "outage", tmp_path / "trust")  # another server's certificate
    config = secure_device(opcua_sim, "secure", "Basic256Sha256/SignAndEncrypt", wrong)
    with capture_logs() as logs:
        driver, samples = await read_once(config)
    assert driver.link is LinkState.DOWN
    assert [s.quality for s in samples] == [Quality.COMM]
    certificate = opcua_sim.simulator["secure"].certificate
    assert certificate is not None
    reason = next(e["reason"] for e in logs if e["event"] == "link_down")
    assert "not in the trust list" in reason
    assert fingerprint(certificate) in reason


async def test_trust_on_first_use_stores_the_first_certificate_and_refuses_another(
    opcua_sim: Sim, tmp_path: Path
) -> None:
    """An empty trust dir with trust_on_first_use: the first server is trusted (its fingerprint
    logged, its certificate stored); a different server's certificate is refused after that."""
    trust = {"trust_dir": str(tmp_path / "trust"), "trust_on_first_use": True}
    first = secure_device(opcua_sim, "secure", "Aes256Sha256RsaPss/SignAndEncrypt", trust)
    with capture_logs() as logs:
        driver, samples = await read_once(first)
    assert driver.link is LinkState.UP
    assert samples[0].quality is Quality.GOOD
    stored = list((tmp_path / "trust").iterdir())
    assert [p.read_bytes() for p in stored] == [opcua_sim.simulator["secure"].certificate]
    tofu = next(e for e in logs if e["event"] == "server_certificate_trusted_on_first_use")
    assert tofu["fingerprint"] == fingerprint(stored[0].read_bytes())

    other = secure_device(opcua_sim, "outage", "Basic256Sha256/SignAndEncrypt", trust)
    other = other.model_copy(update={"username_file": None, "password_file": None})
    driver, samples = await read_once(other)
    assert driver.link is LinkState.DOWN
    assert len(list((tmp_path / "trust").iterdir())) == 1


async def test_a_wrong_password_is_refused_and_not_logged(opcua_sim: Sim, tmp_path: Path) -> None:
    """The server refuses the identity: link down with the server's reason, the password nowhere."""
    (tmp_path / "password").write_text("wrong-secret\n")
    config = secure_device(
        opcua_sim,
        "secure",
        "Basic256Sha256/SignAndEncrypt",
        trusting(opcua_sim, "secure", tmp_path),
    ).model_copy(update={"password_file": str(tmp_path / "password")})
    with capture_logs() as logs:
        driver, samples = await read_once(config)
    assert driver.link is LinkState.DOWN
    assert samples[0].quality is Quality.COMM
    assert "wrong-secret" not in repr(logs)
