"""docs/config.schema.json is generated from the models and must not drift from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from edge_agent import cli
from edge_agent.config.jsonschema import DIALECT, config_json_schema, config_json_schema_text

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "config.schema.json"
REGENERATE = "regenerate it with: edge-agent schema > docs/config.schema.json"


def test_the_committed_schema_matches_the_models() -> None:
    """A model change without a regenerated schema fails here, saying how to fix it."""
    committed = COMMITTED.read_text(encoding="utf-8")
    assert committed == config_json_schema_text(), f"{COMMITTED} is out of date; {REGENERATE}"


def test_edge_agent_schema_prints_the_committed_file(capsys: pytest.CaptureFixture[str]) -> None:
    """The regeneration command reproduces the file byte for byte."""
    assert cli.main(["schema"]) == 0
    printed = capsys.readouterr().out
    assert printed == COMMITTED.read_text(encoding="utf-8"), REGENERATE


def test_the_committed_schema_is_a_valid_schema_of_its_dialect() -> None:
    """An editor given a malformed schema checks nothing; jsonschema's metaschema check says so."""
    Draft202012Validator.check_schema(json.loads(COMMITTED.read_text(encoding="utf-8")))


def test_the_schema_names_its_dialect_and_title() -> None:
    """Editors pick the JSON Schema draft from $schema and show the title."""
    schema = config_json_schema()
    assert (schema["$schema"], schema["title"]) == (DIALECT, "edge-agent configuration")


def test_durations_and_sizes_are_offered_as_text() -> None:
    """Completion must insert '30s', not 30.0, which the loader refuses for lacking a unit."""
    defs = json.loads(config_json_schema_text())["$defs"]
    keepalive = defs["Mqtt"]["properties"]["keepalive"]
    max_bytes = defs["Batch"]["properties"]["max_bytes"]
    assert (keepalive["type"], keepalive["default"]) == ("string", "30s")
    assert (max_bytes["type"], max_bytes["default"]) == ("string", "64KiB")
    assert not {"gt", "exclusiveMinimum", "maximum"} & (keepalive.keys() | max_bytes.keys())
