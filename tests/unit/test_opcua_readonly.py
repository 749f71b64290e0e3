"""The OPC UA driver never writes to the plant: it names no Write, Call or node service."""

from __future__ import annotations

import re
from pathlib import Path

DRIVER = Path(__file__).resolve().parents[2] / "drivers" / "opcua"
FORBIDDEN = re.compile(
    r"\b(write_value|write_values|write_attribute|write_attributes|set_value|set_attribute|"
    r"call_method|add_nodes|delete_nodes|add_references|history_update|WriteParameters)\b"
)


def test_no_module_of_the_driver_names_a_write_service() -> None:
    offenders = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(DRIVER.glob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if FORBIDDEN.search(line)
    ]
    assert offenders == []
