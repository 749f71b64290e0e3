"""OPC UA device and tag configs: addresses, arrays, security and credentials, checked offline."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from edge_agent.drivers.opcua.address import (
    BrowseElement,
    NodeAddress,
    parse_browse_path,
    parse_node,
)
from edge_agent.drivers.opcua.config import OpcuaDevice


def device(tags: list[dict[str, Any]] | None = None, **fields: Any) -> OpcuaDevice:
    return OpcuaDevice.model_validate(
        {
            "name": "ua",
            "driver": "opcua",
            "endpoint": "opc.tcp://10.0.0.5:4840",
            "tags": tags or [{"tag": "M.CO", "hazard": "M", "node": "ns=2;s=CO"}],
            **fields,
        }
    )


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
