"""Configs `check` refuses: the JSON Schema refuses them too, unless their rule is check-only.

Each file in tests/data/invalid/ holds one mistake, named by the file; yaml11-* are
values that YAML 1.1 and YAML 1.2 read differently. Its first lines say what to expect:
`# check: LINE:COLUMN: PATH: MESSAGE` for each problem `check` prints after the file
name, then `# schema: refuses` when docs/config.schema.json refuses the file too, or
`# schema: check-only: RULE` when it cannot, RULE being the rule's label in the list of
check-only rules in docs/configuration.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from config_schema import ROOT, schema_errors

from edge_agent.config import load_config
from edge_agent.config.loader import read_yaml
from edge_agent.errors import ConfigError

CORPUS = sorted((ROOT / "tests" / "data" / "invalid").glob("*.yaml"))
DOCS = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
CHECK_ONLY_RULES = re.findall(r"^- \*\*(.+?)\*\*", DOCS, flags=re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Expected:
    problems: list[str]
    check_only: str | None
    """The check-only rule that refuses the file; None when the schema refuses it too."""


def expected(path: Path) -> Expected:
    lines = path.read_text(encoding="utf-8").splitlines()
    problems = [line.removeprefix("# check: ") for line in lines if line.startswith("# check: ")]
    (schema,) = [line.removeprefix("# schema: ") for line in lines if line.startswith("# schema:")]
    if schema == "refuses":
        return Expected(problems, None)
    rule = schema.removeprefix("check-only: ")
    assert rule != schema, f"{path.name}: '# schema: refuses' or '# schema: check-only: RULE'"
    return Expected(problems, rule)


CASES = [pytest.param(path, id=path.stem) for path in CORPUS]


@pytest.mark.parametrize("path", CASES)
def test_check_refuses_it_with_the_problems_it_names(path: Path) -> None:
    """Each problem where it is, in the words a technician reads."""
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [p.removeprefix(f"{path}:") for p in caught.value.problems] == expected(path).problems


@pytest.mark.parametrize("path", CASES)
def test_the_schema_refuses_it_unless_its_rule_is_check_only(path: Path) -> None:
    """What an editor shows: an error, except for the rules only `check` knows."""
    errors = schema_errors(read_yaml(path.read_text(encoding="utf-8")))
    check_only = expected(path).check_only
    assert (errors == []) == (check_only is not None), errors
    assert check_only in (None, *CHECK_ONLY_RULES), f"{check_only!r}: not in {CHECK_ONLY_RULES}"
