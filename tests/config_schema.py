"""The committed JSON Schema, judging config data the way an editor does.

jsonschema is the reference implementation of JSON Schema for Python; the data is
what the loader reads from the YAML (`read_yaml`: YAML 1.2 scalars, as editors read
them), so a disagreement between the two is the schema's or the models', not YAML's.
"""

from __future__ import annotations

import json
from pathlib import Path

from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "docs" / "config.schema.json"
VALIDATOR = Draft202012Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))


def schema_errors(data: object) -> list[str]:
    """What the schema refuses in data, one line per error: where, and why."""
    return [f"{error.json_path}: {error.message}" for error in VALIDATOR.iter_errors(data)]
