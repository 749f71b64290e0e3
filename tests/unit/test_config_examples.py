"""Every example config, and every config snippet in the docs, passes both judges.

The examples are config/*.yaml, deploy/agent.example.yaml and the YAML blocks of
README.md, docs/*.md and drivers/*/README.md. A block that is only part of a file
(a device list, one tag's keys, the MQTT credentials) is first put in its place in
a small complete file. Both judges then see the same file: the JSON Schema, as an
editor checks it, and the loader of `edge-agent check`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest
import yaml
from config_schema import ROOT, schema_errors
from pydantic import BaseModel

from edge_agent.config import AgentConfig, load_config
from edge_agent.config.loader import read_yaml
from edge_agent.config.schema import Mqtt
from edge_agent.config.tags import DataPath
from edge_agent.drivers.modbus.config import ModbusDevice, ModbusTag

FILES = [*sorted(ROOT.glob("config/*.yaml")), ROOT / "deploy" / "agent.example.yaml"]
DOCUMENTS = [
    ROOT / "README.md",
    *sorted(ROOT.glob("docs/*.md")),
    *sorted(ROOT.glob("drivers/*/README.md")),
]
FOREIGN = {"scrape_configs"}  # docs/operations.md shows Prometheus's config too
_BLOCK = re.compile(r"^( *)```yaml\n(.*?)^\1```", re.MULTILINE | re.DOTALL)

BASE: dict[str, Any] = {
    "gateway": {"code": "GW-01", "enterprise": "91370200MA3C00000K"},
    "uplink": {"mqtt": {"host": "127.0.0.1"}},
    "store": {"path": "/var/lib/edge-agent/store.db"},
    "devices": [
        {
            "name": "plc-1",
            "driver": "modbus",
            "host": "127.0.0.1",
            "tags": [{"tag": "LT-101", "hazard": "HZ01", "address": "hr:0", "type": "float32"}],
        }
    ],
}
"""The smallest complete file, for a block that is only part of one."""

PLACES: list[tuple[DataPath, type[BaseModel]]] = [
    ((), AgentConfig),
    (("uplink", "mqtt"), Mqtt),
    (("devices", 0), ModbusDevice),
    (("devices", 0, "tags", 0), ModbusTag),
]
"""Where a part of a file goes: the first place whose model has every key it holds."""


@dataclass(frozen=True, slots=True)
class Example:
    where: str
    data: dict[str, Any]
    """The complete file's data, as the loader and an editor read it."""
    text: str
    """The complete file: the example as written when it is one, else BASE with it in place."""


def _examples() -> Iterator[Example]:
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        yield Example(str(path.relative_to(ROOT)), _mapping(read_yaml(text)), text)
    for path in DOCUMENTS:
        document = path.read_text(encoding="utf-8")
        for block in _BLOCK.finditer(document):
            line = document.count("\n", 0, block.start()) + 1
            example = _example(f"{path.relative_to(ROOT)}:{line}", dedent(block[2]))
            if example is not None:
                yield example


def _example(where: str, text: str) -> Example | None:
    """The block as a complete file; None for a block that is no config (a comment, Prometheus)."""
    data = read_yaml(text)
    if data is None or FOREIGN & set(_mapping(data)):
        return None
    data = _mapping(data)
    if set(AgentConfig.model_json_schema()["required"]) <= set(data):
        return Example(where, data, text)
    completed = _mapping(_placed(data))
    return Example(where, completed, yaml.safe_dump(completed, allow_unicode=True))


def _placed(part: dict[str, Any]) -> object:
    for path, model in PLACES:
        if set(part) <= set(model.model_fields):
            return _merged(BASE, path, part)
    raise AssertionError(f"no place for a block with the keys {sorted(part)}")


def _merged(base: object, path: DataPath, part: object) -> object:
    """base with part merged in at path: mappings key by key, anything else replaced."""
    if not path:
        if isinstance(base, dict) and isinstance(part, dict):
            return {**base, **{key: _merged(base.get(key), (), part[key]) for key in part}}
        return part
    head, rest = path[0], path[1:]
    if isinstance(base, list):
        return [_merged(item, rest, part) if i == head else item for i, item in enumerate(base)]
    assert isinstance(base, dict)
    return {**base, head: _merged(base[head], rest, part)}


def _mapping(data: object) -> dict[str, Any]:
    assert isinstance(data, dict), "a config file is a mapping"
    return data


EXAMPLES = list(_examples())
PARAMS = [pytest.param(example, id=example.where) for example in EXAMPLES]


@pytest.mark.parametrize("example", PARAMS)
def test_the_json_schema_accepts_it(example: Example) -> None:
    """What an editor shows with the schema: no error."""
    assert schema_errors(example.data) == []


@pytest.mark.parametrize("example", PARAMS)
def test_check_accepts_it(example: Example, tmp_path: Path) -> None:
    """What `edge-agent check` says: OK."""
    path = tmp_path / "site.yaml"
    path.write_text(example.text, encoding="utf-8")
    assert load_config(path).devices


def test_the_documents_examples_are_all_found() -> None:
    """A changed code fence would otherwise leave a document's examples untested, silently."""
    found = {example.where.split(":")[0] for example in EXAMPLES}
    assert found >= {"docs/configuration.md", "drivers/modbus/README.md", "drivers/opcua/README.md"}
