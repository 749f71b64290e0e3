"""TLS and credentials against a real Mosquitto: verified server certificate, client
certificate, and a user name and password read from files (systemd credentials)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_log import events, wait_for_event
from conftest import Plant, Process, Rig, agent_config, counter_device

from edge_agent.demo.broker import Mosquitto, Pki, make_password_file, make_test_pki
from edge_agent.demo.platform import PlatformSubscriber


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_test_pki(tmp_path / "pki")


def tls_broker(tmp_path: Path, pki: Pki, **options: Any) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "tls-broker", tls=pki, **options)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def broker(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:
    """Overrides the plain broker: this one also listens with TLS on `tls_port`."""
    yield from tls_broker(tmp_path, pki)


def one_counter(plant: Callable[..., Plant]) -> dict[str, Any]:
    sim = plant([{"address": "hr:0", "type": "uint32", "value": {"counter": {}}}])
    device = counter_device(sim.port, 0.5)
    device["tags"] = device["tags"][:1]
    return device


def test_tls_with_the_provinces_ca_delivers(rig: Rig) -> None:
    """The server certificate chains to ca_file and names 127.0.0.1: readings arrive."""
    pki = rig.broker.pki
    assert pki is not None
    assert rig.broker.tls_port is not None
    config = agent_config(
        rig.tmp_path,
        rig.broker.tls_port,
        [one_counter(rig.plant)],
        mqtt={"tls": {"ca_file": str(pki.ca)}},
    )
    agent = rig.spawn("agent", "run", str(config))
    rig.platform.wait_for(lambda ms: any(m.kind == "rt" for m in ms), 20, "readings over TLS")
    assert agent.terminate() == 0, agent.log()


def test_an_untrusted_server_certificate_is_refused_and_nothing_is_sent(rig: Rig) -> None:
    """A broker whose certificate does not chain to ca_file never sees a CONNECT."""
    pki = rig.broker.pki
    assert pki is not None
    assert rig.broker.tls_port is not None
    config = agent_config(
        rig.tmp_path,
        rig.broker.tls_port,
        [one_counter(rig.plant)],
        mqtt={"tls": {"ca_file": str(pki.other_ca)}},
    )
    agent = rig.spawn("agent", "run", str(config))
    failure = wait_for_event(agent, "mqtt_connect_failed")
    assert "not trusted" in failure["reason"], failure
    time.sleep(3)
    assert not events(agent, "mqtt_connected"), agent.log()
    assert rig.platform.messages == [], "nothing may reach the platform over an untrusted link"
    assert "as GW-TEST-01" not in rig.broker.log(), "the broker must never see our CONNECT"
    assert agent.terminate() == 0, agent.log()


def test_a_client_certificate_is_presented_when_configured(
    tmp_path: Path,
    pki: Pki,
    plant: Callable[..., Plant],
    spawn: Callable[..., Process],
) -> None:
    """A broker that requires a client certificate accepts ours, and refuses a gateway without."""
    for broker in tls_broker(tmp_path, pki, require_client_certificate=True):
        assert broker.tls_port is not None
        platform = PlatformSubscriber(broker.port, client_id="test-platform")
        platform.start()
        try:
            device = one_counter(plant)
            tls = {"ca_file": str(pki.ca)}
            (tmp_path / "bare").mkdir()
            bare = agent_config(tmp_path / "bare", broker.tls_port, [device], mqtt={"tls": tls})
            with_cert = agent_config(
                tmp_path,
                broker.tls_port,
                [device],
                mqtt={
                    "tls": {
                        **tls,
                        "cert_file": str(pki.client_cert),
                        "key_file": str(pki.client_key),
                    }
                },
            )
            refused = spawn("agent-bare", "run", str(bare))
            wait_for_event(refused, "mqtt_connect_failed")
            assert refused.terminate() == 0, refused.log()
            assert not events(refused, "mqtt_connected"), refused.log()

            agent = spawn("agent", "run", str(with_cert))
            platform.wait_for(lambda ms: any(m.kind == "rt" for m in ms), 20, "readings")
            assert agent.terminate() == 0, agent.log()
        finally:
            platform.stop()


@pytest.fixture
def password_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    passwords = make_password_file(tmp_path / "passwd", "gw-test-01", "s3cret pass")
    broker = Mosquitto(tmp_path / "pw-broker", password_file=passwords)
    broker.start()
    yield broker
    broker.stop()


def test_credentials_are_read_from_systemd_credential_files(
    tmp_path: Path,
    password_broker: Mosquitto,
    plant: Callable[..., Plant],
    spawn: Callable[..., Process],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Relative username_file and password_file are taken in $CREDENTIALS_DIRECTORY."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "mqtt-user").write_text("gw-test-01\n")
    (credentials / "mqtt-password").write_text("s3cret pass\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    platform = PlatformSubscriber(password_broker.port, client_id="test-platform")
    platform._client.username_pw_set("gw-test-01", "s3cret pass")  # the test's own login
    platform.start()
    try:
        config = agent_config(
            tmp_path,
            password_broker.port,
            [one_counter(plant)],
            mqtt={"username_file": "mqtt-user", "password_file": "mqtt-password"},
        )
        agent = spawn("agent", "run", str(config))
        platform.wait_for(lambda ms: any(m.kind == "rt" for m in ms), 20, "readings")
        assert agent.terminate() == 0, agent.log()
    finally:
        platform.stop()


def test_a_wrong_password_is_refused_by_the_broker_and_logged(
    tmp_path: Path,
    password_broker: Mosquitto,
    plant: Callable[..., Plant],
    spawn: Callable[..., Process],
) -> None:
    (tmp_path / "user").write_text("gw-test-01\n")
    (tmp_path / "password").write_text("wrong\n")
    config = agent_config(
        tmp_path,
        password_broker.port,
        [one_counter(plant)],
        mqtt={
            "username_file": str(tmp_path / "user"),
            "password_file": str(tmp_path / "password"),
        },
    )
    agent = spawn("agent", "run", str(config))
    failure = wait_for_event(agent, "mqtt_connect_failed")
    assert "refused" in failure["reason"], failure
    assert failure["level"] == "error", "an operator must fix the password: say it loudly"
    assert agent.terminate() == 0, agent.log()


def test_a_missing_credential_file_is_an_error_and_the_agent_keeps_retrying(
    tmp_path: Path,
    password_broker: Mosquitto,
    plant: Callable[..., Plant],
    spawn: Callable[..., Process],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No crash loop: the agent keeps polling and says, at error level, what to fix."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = agent_config(
        tmp_path, password_broker.port, [one_counter(plant)], mqtt={"username_file": "mqtt-user"}
    )
    agent = spawn("agent", "run", str(config))
    failure = wait_for_event(agent, "mqtt_connect_failed")
    assert failure["level"] == "error"
    assert "CREDENTIALS_DIRECTORY" in failure["reason"], failure
    assert agent.terminate() == 0, agent.log()
