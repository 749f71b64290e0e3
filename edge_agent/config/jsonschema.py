"""The JSON Schema of the config file, built from the models so it cannot disagree with them.

Editors use it for completion and checking as you type (docs/config.schema.json,
regenerated with `edge-agent schema > docs/config.schema.json`; a test fails when
the committed copy drifts). The loader stays the judge: a file it accepts passes
the schema, but some of its checks cannot be written in a JSON Schema (the GB 32100
check character, limit order, unique tags: the list of check-only rules is in
docs/configuration.md).
"""

from __future__ import annotations

import json
from typing import Any

from edge_agent.config.schema import AgentConfig

DIALECT = "https://json-schema.org/draft/2020-12/schema"
TITLE = "edge-agent configuration"


def config_json_schema() -> dict[str, Any]:
    """The schema of AgentConfig, with the dialect and a title editors show."""
    schema = AgentConfig.model_json_schema()
    return {**schema, "$schema": DIALECT, "title": TITLE}


def config_json_schema_text() -> str:
    """The schema as committed: sorted keys, two-space indent, UTF-8 text, final newline.

    `edge-agent schema` must print exactly this, so that redirecting it to
    docs/config.schema.json reproduces the committed file byte for byte.
    """
    return json.dumps(config_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
