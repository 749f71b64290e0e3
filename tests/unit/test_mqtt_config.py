"""uplink.mqtt: brokers, transport, TLS files and credential files, as `check` judges them;
and how the session resolves and reads those files."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge_agent.config.schema import Address, Mqtt, is_loopback
from edge_agent.credentials import CredentialFileError, read_secret, resolve_path
from edge_agent.uplink.session import (
    CredentialsUnusable,
    TlsFiles,
    tls_context,
)


def refusal(**fields: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        Mqtt(**fields)
    return str(caught.value)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("10.0.0.5", False),
        ("mqtt.example.gov.cn", False),
        ("localhost.example.com", False),
    ],
)
def test_loopback_means_this_machine_without_resolving_names(host: str, loopback: bool) -> None:
    assert is_loopback(host) == loopback


def test_a_remote_broker_gets_tls_on_8883_by_default() -> None:
    mqtt = Mqtt(host="mqtt.example.gov.cn")
    assert mqtt.uses_tls
    assert mqtt.endpoints() == [Address("mqtt.example.gov.cn", 8883)]


def test_a_loopback_broker_gets_plain_tcp_on_1883_by_default() -> None:
    """A local bridge broker, the demo, the test rigs: nothing leaves the machine."""
    mqtt = Mqtt(host="127.0.0.1")
    assert not mqtt.uses_tls
    assert mqtt.endpoints() == [Address("127.0.0.1", 1883)]


def test_a_tls_section_means_tls_even_on_loopback() -> None:
    assert Mqtt(host="localhost", tls={"ca_file": "/ca.pem"}).uses_tls


def test_brokers_keep_their_order_and_their_ports() -> None:
    mqtt = Mqtt(brokers=[{"host": "a.example"}, {"host": "b.example", "port": 18883}])
    assert mqtt.endpoints() == [Address("a.example", 8883), Address("b.example", 18883)]


def test_plain_tcp_to_a_remote_broker_is_refused_with_the_way_out() -> None:
    message = refusal(host="10.1.2.3", transport="tcp")
    assert "plain TCP to 10.1.2.3, which is not this machine" in message
    assert "insecure_plaintext: true" in message


def test_plain_tcp_to_a_remote_broker_is_allowed_when_the_config_says_so() -> None:
    mqtt = Mqtt(host="10.1.2.3", transport="tcp", insecure_plaintext=True)
    assert mqtt.endpoints() == [Address("10.1.2.3", 1883)]


def test_one_remote_broker_in_a_list_makes_plain_tcp_refused() -> None:
    brokers = [{"host": "127.0.0.1"}, {"host": "backup.example"}]
    assert "plain TCP to backup.example" in refusal(brokers=brokers, transport="tcp")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, "missing required key 'host'"),
        ({"host": "a", "brokers": [{"host": "b"}]}, "not both"),
        ({"brokers": [{"host": "b"}], "port": 1}, "port goes with host"),
        ({"host": "a", "insecure_plaintext": True}, "only goes with transport: tcp"),
        ({"host": "127.0.0.1", "transport": "tcp", "tls": {}}, "remove one of them"),
        ({"host": "a", "password_file": "p"}, "username_file is not"),
        ({"host": "a", "tls": {"key_file": "k"}}, "cert_file is not"),
        ({"host": "a", "brokers": None, "username": "u"}, "Extra inputs are not permitted"),
    ],
)
def test_inconsistent_settings_are_refused(fields: dict[str, Any], expected: str) -> None:
    assert expected in refusal(**fields)


def test_an_absolute_path_is_used_as_is() -> None:
    assert resolve_path("/etc/x", {}) == Path("/etc/x")


def test_a_relative_path_is_taken_in_the_credentials_directory() -> None:
    environ = {"CREDENTIALS_DIRECTORY": "/run/credentials/edge-agent.service"}
    assert resolve_path("mqtt-user", environ) == Path(
        "/run/credentials/edge-agent.service/mqtt-user"
    )


def test_a_relative_path_without_a_credentials_directory_is_refused() -> None:
    with pytest.raises(CredentialFileError, match="CREDENTIALS_DIRECTORY"):
        resolve_path("mqtt-user", {})


def test_a_secret_is_the_first_line_of_its_file(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("pa ss word \r\nignored\n")
    assert read_secret(str(path)) == "pa ss word "


@pytest.mark.parametrize(("content", "expected"), [("", "is empty"), ("\nx\n", "is empty")])
def test_an_empty_secret_is_refused(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "password"
    path.write_text(content)
    with pytest.raises(CredentialFileError, match=expected):
        read_secret(str(path))


def test_a_missing_secret_file_is_refused_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(CredentialFileError, match="cannot read the credential file"):
        read_secret(str(tmp_path / "nope"))


def test_tls_is_1_2_or_newer_and_always_verifies() -> None:
    context = tls_context(TlsFiles())
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_an_unusable_ca_file_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(CredentialsUnusable, match="TLS files unusable"):
        tls_context(TlsFiles(ca_file=str(bogus)))


def test_a_tls_file_outside_any_credentials_directory_is_the_uplinks_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The credential-file rule's error becomes the uplink's own, logged as an operator's to fix.
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(CredentialsUnusable, match="CREDENTIALS_DIRECTORY"):
        tls_context(TlsFiles(ca_file="ca.pem"))
