"""OPC UA device and tag configs: addresses, arrays, security and credentials, checked offline."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from edge_agent.config.schema import AgentConfig
from edge_agent.drivers.opcua.address import (
    BrowseElement,
    NodeAddress,
    parse_browse_path,
    parse_node,
)
from edge_agent.drivers.opcua.config import OpcuaDevice


def device(tags: list[dict[str, Any]] | None = None, **fields: Any) -> OpcuaDevice:
    return OpcuaDevice.model_validate(written(tags, **fields))


def written(tags: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    """A device as the YAML gives it."""
    return {
        "name": "ua",
        "driver": "opcua",
        "endpoint": "opc.tcp://10.0.0.5:4840",
        "tags": tags or [{"tag": "M.CO", "hazard": "M", "node": "ns=2;s=CO"}],
        **fields,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ns=2;s=Vent.CO301", NodeAddress(2, "s", "Vent.CO301")),
        ("ns=3;i=1001", NodeAddress(3, "i", "1001")),
        ("nsu=urn:mine:vent;s=CO;301", NodeAddress("urn:mine:vent", "s", "CO;301")),
        ("i=2258", NodeAddress(None, "i", "2258")),
        ("ns=2;g=09087e75-8e5e-499b-954f-f2a9603db28a",
         NodeAddress(2, "g", "09087e75-8e5e-499b-954f-f2a9603db28a")),
        ("ns=2;b=YWJj", NodeAddress(2, "b", "YWJj")),
    ],
)  # fmt: skip
def test_node_ids_parse_in_every_form(text: str, expected: NodeAddress) -> None:
    """ns= by index, nsu= by URI, no ns for the default; numeric, string, GUID and opaque ids."""
    assert parse_node(text) == expected


@pytest.mark.parametrize(
    "text", ["Vent.CO301", "ns=x;s=a", "ns=2;i=abc", "ns=2;g=zz", "ns=70000;i=1"]
)
def test_a_malformed_node_id_is_refused_with_the_forms_that_work(text: str) -> None:
    with pytest.raises(ValueError, match=r"NodeId|identifier|namespace index"):
        parse_node(text)


def test_a_browse_path_parses_with_and_without_namespace_prefixes() -> None:
    assert parse_browse_path("/2:Vent/CO301") == (
        BrowseElement(2, "Vent"),
        BrowseElement(None, "CO301"),
    )


def test_an_array_type_without_index_is_refused_by_check() -> None:
    """The uplink carries one value per tag: Double[] needs an index."""
    tags = [{"tag": "M.A", "hazard": "M", "node": "ns=2;s=A", "type": "Double[]"}]
    with pytest.raises(ValidationError, match="is an array: pick one element with index"):
        device(tags)
    tags[0]["index"] = 3
    assert device(tags).tags[0].where == "ns=2;s=A[3]"


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ({"node": "ns=2;s=A", "browse_path": "A"}, "exactly one"),
        ({}, "exactly one"),
        ({"node": "ns=2;s=A", "type": "Double", "index": 1}, "is a scalar"),
        ({"node": "ns=2;s=A", "type": "String", "monitor": {"deadband": 1}}, "needs a numeric"),
        ({"node": "ns=2;s=A", "monitor": {"deadband": 1, "deadband_pct": 2}}, "not both"),
    ],
)
def test_tag_mistakes_are_refused(tag: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        device([{"tag": "M.A", "hazard": "M", **tag}])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"security": {"policy": "Basic256Sha256"}}, "policy None goes with mode None"),
        ({"security": {"policy": "Basic256Sha256", "mode": "Sign"}}, "needs certificate"),
        (
            {"security": {"policy": "Aes256Sha256RsaPss", "mode": "SignAndEncrypt",
                          "certificate": "c.der", "private_key": "k.pem"}},
            "needs a trust list",
        ),
        (
            {"security": {"policy": "Basic256Sha256", "mode": "Sign", "certificate": "c.der",
                          "private_key": "k.pem", "trust_files": ["s.der"],
                          "trust_on_first_use": True}},
            "stores the certificate in trust_dir",
        ),
        ({"username_file": "user"}, "give both"),
        ({"password_file": "pw"}, "give both"),
        ({"endpoint": "http://10.0.0.5"}, "opc"),
        ({"mode": "subscribe", "poll": "1s",
          "tags": [{"tag": "M.A", "hazard": "M", "node": "s=A", "poll": "5s"}]}, "poll groups"),
        ({"tags": [{"tag": "M.A", "hazard": "M", "browse_path": "Vent/A"}]}, "set namespace"),
    ],
)  # fmt: skip
def test_device_mistakes_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        device(**fields)


def test_no_password_field_exists_only_files() -> None:
    """A password is never written into the YAML: there is no field for it."""
    with pytest.raises(ValidationError, match="password"):
        device(password="s3cret")


@pytest.mark.parametrize(
    ("publishing_interval", "report_every", "count"),
    [
        ("1s", 20.0, 10),  # a mine: a keep-alive every 10 s
        ("1s", 60.0, 30),
        ("100ms", 0.6, 3),  # 0.1 x 3 is 0.30000000000000004 in binary: it still fits
        ("300ms", 0.5, 1),  # at least one publishing interval
    ],
)
def test_the_keepalive_count_fits_in_half_the_shortest_report_interval(
    publishing_interval: str, report_every: float, count: int
) -> None:
    config = device(mode="subscribe", publishing_interval=publishing_interval)
    assert config.keepalive_within(report_every) == count


def test_a_configured_keepalive_count_is_asked_for_as_it_is() -> None:
    config = device(mode="subscribe", keepalive_count=4)
    assert (config.keepalive_within(60.0), config.keepalive_within(None)) == (4, 4)


def test_with_nothing_reported_the_keepalive_count_is_five() -> None:
    """`edge-agent read` and benchmarks: no report interval to meet."""
    assert device(mode="subscribe").keepalive_within(None) == 5


@pytest.mark.parametrize(
    "fields",
    [
        {"mode": "subscribe", "publishing_interval": "3s"},  # sized: 3 intervals in 10 s
        {"mode": "subscribe", "keepalive_count": 10},  # 10 s, exactly half of 20 s
        {"mode": "poll", "keepalive_count": 1000},  # a poll has no keep-alive
    ],
)
def test_a_keepalive_within_half_the_report_interval_passes_check(fields: dict[str, Any]) -> None:
    """A mine reports every 20 s: a keep-alive of up to 10 s."""
    AgentConfig.model_validate(
        {
            "gateway": {"code": "GW-01", "enterprise": "91370200MA3C00000K", "site": "mine"},
            "uplink": {"mqtt": {"host": "127.0.0.1"}},
            "store": {"path": "/var/lib/edge-agent/store.db"},
            "devices": [written(**fields)],
        }
    )
