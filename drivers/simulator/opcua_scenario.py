"""The OPC UA part of the scenario format: servers, folders of variables, values as functions of t.

Same value functions as the Modbus devices (drivers/simulator/scenario.py), so
a test computes what the server held at any moment. Example:

    devices:
      - name: ua-vent
        protocol: opcua
        port: 4840                      # 0 takes any free port
        namespace: urn:mine:vent        # the plant's namespace URI (index 2 on this server)
        update: 500ms                   # values are recomputed and written this often
        security: [None, Basic256Sha256/SignAndEncrypt]
        limits: {max_nodes_per_read: 100, max_monitored_items_per_call: 50}
        max_sessions: 10                # an 11th session is refused
        folders:
          - name: Vent
            variables:
              - {name: CO301, type: Double, value: {noise: {mean: 4, sd: 0.5, seed: 1}}}
              - {name: FAN1, type: Boolean, value: {const: true}}
              - {name: CO302, type: Double, value: {const: 0}, status: BadSensorFailure}

A variable's NodeId is ns=<namespace>;s=<Folder>.<Name> (`id` overrides the part
after s=); its browse name is <Name> in the same namespace, so the browse path
Vent/CO301 reaches it. A file is an OPC UA scenario when its devices say
`protocol: opcua`; Modbus and OPC UA devices are served from separate files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

import yaml
from pydantic import Field, model_validator

from edge_agent.config.types import Duration
from edge_agent.drivers.opcua.config import ScalarType
from edge_agent.drivers.simulator.scenario import Value, _Model, load_model

Endpoint = Literal[
    "None",
    "Basic256Sha256/Sign",
    "Basic256Sha256/SignAndEncrypt",
    "Aes128Sha256RsaOaep/Sign",
    "Aes128Sha256RsaOaep/SignAndEncrypt",
    "Aes256Sha256RsaPss/Sign",
    "Aes256Sha256RsaPss/SignAndEncrypt",
]


class Variable(_Model):
    name: str = Field(pattern=r"^[^/.\s]+$", description="Browse name, without / or .")
    id: str | None = Field(None, description="The string identifier; default Folder.Name.")
    type: ScalarType = "Double"
    array: int | None = Field(
        None, ge=1, le=1000, description="Serve an array of this length, every element the value."
    )
    value: Value
    status: str = Field("Good", description="The StatusCode served with the value, by name.")


class Folder(_Model):
    name: str = Field(pattern=r"^[^/.\s]+$")
    variables: list[Variable] = Field(default_factory=list)
    folders: list[Folder] = Field(default_factory=list)


class OperationLimits(_Model):
    """What the server announces in Server/ServerCapabilities, and refuses beyond.

    A request with more operations than its limit is answered BadTooManyOperations
    (the service result), as node-opcua and many PLCs do; a monitored item past
    max_monitored_items_per_subscription gets BadTooManyMonitoredItems. 0 is no
    limit. RegisterNodes is announced only: asyncua's server answers it itself.
    """

    max_nodes_per_read: int = Field(0, ge=0)
    max_nodes_per_browse: int = Field(0, ge=0)
    max_nodes_per_translate_browse_paths: int = Field(
        0, ge=0, description="MaxNodesPerTranslateBrowsePathsToNodeIds."
    )
    max_monitored_items_per_call: int = Field(0, ge=0)
    max_nodes_per_register_nodes: int = Field(0, ge=0)
    max_monitored_items_per_subscription: int = Field(0, ge=0)
    announced: bool = Field(
        True,
        description=(
            "False: the limits are enforced but the nodes say 0 (no limit), as servers do "
            "that only find out when a request is too big."
        ),
    )


class OpcuaServerSpec(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    protocol: Literal["opcua"]
    port: int = Field(0, ge=0, le=65535)
    namespace: str = Field("urn:edge-agent:simulator", min_length=1)
    update: Duration = Field(1.0, description="How often values are recomputed and written.")
    limits: OperationLimits = Field(
        default_factory=OperationLimits,  # type: ignore[arg-type]  # every field has a default
        description="Operation limits the server announces and enforces; none by default.",
    )
    max_sessions: int = Field(
        0,
        ge=0,
        description=(
            "Sessions the server holds at once; one more is refused (BadTooManySessions), as "
            "real servers do. 0: no cap."
        ),
    )
    security: list[Endpoint] = Field(
        default_factory=lambda: ["None"],  # type: ignore[arg-type]  # a list of the literal
        min_length=1,
        description="The endpoints served: None and/or POLICY/MODE pairs.",
    )
    certificate_dir: str | None = Field(
        None,
        description=(
            "Where the server keeps its certificate and key (made when missing); a temporary "
            "directory when not set."
        ),
    )
    trust_dir: str | None = Field(
        None,
        description="Client certificates the server trusts; when not set it accepts any client.",
    )
    users: dict[str, str] = Field(
        default_factory=dict,
        description="User name -> password; when given, anonymous clients are refused.",
    )
    folders: list[Folder] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> Self:
        ids = [key for key, _ in self.variables()]
        if len(set(ids)) != len(ids):
            raise ValueError("two variables have the same id; give one of them its own id")
        return self

    def variables(self) -> list[tuple[str, Variable]]:
        """(string identifier, variable) of every variable, folders depth first."""
        found: list[tuple[str, Variable]] = []

        def walk(folder: Folder, prefix: str) -> None:
            path = f"{prefix}{folder.name}"
            for variable in folder.variables:
                found.append((variable.id or f"{path}.{variable.name}", variable))
            for child in folder.folders:
                walk(child, f"{path}.")

        for folder in self.folders:
            walk(folder, "")
        return found


class OpcuaScenario(_Model):
    devices: list[OpcuaServerSpec] = Field(min_length=1)


def is_opcua_scenario(path: str | Path) -> bool:
    """Whether the scenario file's devices are OPC UA servers (`protocol: opcua`)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False  # load_scenario reports it
    devices = data.get("devices") if isinstance(data, dict) else None
    return (
        isinstance(devices, list)
        and bool(devices)
        and all(isinstance(d, dict) and d.get("protocol") == "opcua" for d in devices)
    )


def load_opcua_scenario(path: str | Path) -> OpcuaScenario:
    return load_model(path, OpcuaScenario)
