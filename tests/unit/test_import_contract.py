"""Imports point inward along the pipeline, and stay so.

Data flows driver -> rules -> store -> uplink; each stage knows only its
neighbours' data types. Read statically from every module's `import`
statements (including ones inside functions), so a stray import fails here
before it ties two stages together.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What drives the stages (the agent's wiring, the service, the commands) and
# what no stage may lean on.
WIRING = (
    "edge_agent.runtime",
    "edge_agent.poller",
    "edge_agent.reload",
    "edge_agent.cli",
    "edge_agent.service",
    "edge_agent.demo",
    "edge_agent.commission",
    "edge_agent.status",
    "edge_agent.top",
)
DRIVER_INSIDES = (
    "edge_agent.drivers.base",
    "edge_agent.drivers.modbus.driver",
    "edge_agent.drivers.modbus.link",
    "edge_agent.drivers.modbus.plan",
    "edge_agent.drivers.opcua.driver",
    "edge_agent.drivers.opcua.session",
    "edge_agent.drivers.opcua.subscriber",
)
PROTOCOLS = ("pymodbus", "asyncua", "paho")
STORE_INSIDES = ("edge_agent.store.store", "edge_agent.store.engine", "edge_agent.store.actor")


@dataclass(frozen=True)
class Contract:
    """Modules under `package` import none of `forbidden` (module prefixes)."""

    package: str
    forbidden: tuple[str, ...]
    why: str


CONTRACTS = [
    Contract(
        "edge_agent.drivers",
        ("edge_agent.rules", "edge_agent.store", "edge_agent.uplink", *WIRING),
        "a driver turns a device into samples and knows nothing downstream",
    ),
    Contract(
        "edge_agent.rules",
        ("edge_agent.drivers", "edge_agent.store", "edge_agent.uplink", *WIRING),
        "the rules judge samples; storing and sending them is not theirs",
    ),
    Contract(
        "edge_agent.store",
        (
            "edge_agent.drivers",
            "edge_agent.config",
            "edge_agent.rules",
            "edge_agent.uplink",
            *WIRING,
        ),
        "the store keeps messages; its settings come as StoreSettings",
    ),
    Contract(
        "edge_agent.uplink",
        ("edge_agent.drivers", "edge_agent.config", "edge_agent.rules", *WIRING, *STORE_INSIDES),
        "the uplink sees the store through its Outbox protocol and the store's data types",
    ),
    Contract(
        "edge_agent.config",
        (
            "edge_agent.rules",
            "edge_agent.store",
            "edge_agent.uplink",
            *WIRING,
            *DRIVER_INSIDES,
            *PROTOCOLS,
        ),
        "config models validate a file; they may use a driver's config model, never a driver",
    ),
]

# Names a stage may not take even from a package it may import: the uplink
# gets the store's data types from `edge_agent.store`, never the Store itself.
FORBIDDEN_NAMES = {"edge_agent.uplink": {("edge_agent.store", "Store")}}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> Iterator[tuple[str, str | None, int]]:
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    return imports_in(path.read_text(), package)


def imports_in(source: str, package: str) -> Iterator[tuple[str, str | None, int]]:
    """(module, imported name or None, line) for every import in `source`,
    relative ones resolved against `package` (the module's own package)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield base, alias.name, node.lineno


def modules_under(package: str) -> list[Path]:
    folder = ROOT.joinpath(*package.split("."))
    return sorted(folder.rglob("*.py"))


def starts_with(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.package)
def test_a_stage_imports_only_inward(contract: Contract) -> None:
    broken = []
    names = FORBIDDEN_NAMES.get(contract.package, set())
    for path in modules_under(contract.package):
        for module, name, line in imports_of(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            target = f"{module}.{name}" if name else module
            if any(starts_with(target, bad) for bad in contract.forbidden):
                broken.append(f"{where} imports {target}")
            elif (module, name) in names:
                broken.append(f"{where} imports {name} from {module}")
    assert not broken, f"{contract.why}:\n" + "\n".join(broken)


def test_the_contracts_cover_modules_that_exist() -> None:
    # A renamed package would otherwise make its contract pass vacuously.
    for contract in CONTRACTS:
        assert modules_under(contract.package), contract.package


def test_a_forbidden_import_is_caught() -> None:
    # The checker itself: relative and in-function imports count too.
    source = "def f():\n    from ..store.store import Store\n"
    found = list(imports_in(source, package="edge_agent.uplink"))
    assert found == [("edge_agent.store.store", "Store", 2)]


def test_checking_a_config_loads_no_protocol_library() -> None:
    # `edge-agent check` on a technician's laptop must not need pymodbus or asyncua.
    probe = (
        "import sys, edge_agent.config.loader, edge_agent.config.schema\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'pymodbus', 'asyncua', 'paho', 'sqlite3'}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
