"""The OPC UA simulator of the test session, shared by every test module that imports it.

`Server.init()` costs about 1-3 s per server, so the three servers are started
once per session, in the session's event loop (tests using them are marked
`asyncio(loop_scope="session")`). A module takes the fixture with
`from opcua_sim import opcua_sim_fixture`; pytest then registers it once per importing
module, so the simulator itself is kept here and counted, and the last module
to finish closes it.

Servers:
- `plant`: no security, every value type, a counter, a ramp, a bad sensor, an
  array; values updated every 100 ms; MaxNodesPerRead 3 (so batching shows).
- `secure`: every secure policy and mode, no None endpoint; only the client
  certificate `client` (made here) and the user operator/s3cret get in.
- `outage`: a counter, for restart, stall and lost-subscription tests; also a
  secure endpoint with its own certificate (a second server for trust tests).
- `limited`: a counter and ten constants V0..V9 (value i), every operation
  limit 4 and 6 monitored items per subscription, announced and enforced
  (`announce_limits(False)` hides them); at most LIMITED_SESSIONS sessions.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest_asyncio

from edge_agent.drivers.opcua.security import make_client_certificate
from edge_agent.drivers.simulator.opcua_scenario import OpcuaScenario
from edge_agent.drivers.simulator.opcua_server import OpcuaSimulator, start_opcua_simulator

NAMESPACE = "urn:test:plant"
USER, PASSWORD = "operator", "s3cret"
LIMIT, PER_SUBSCRIPTION, LIMITED_SESSIONS = 4, 6, 8
SECURE_ENDPOINTS = [
    "Basic256Sha256/Sign",
    "Basic256Sha256/SignAndEncrypt",
    "Aes128Sha256RsaOaep/Sign",
    "Aes128Sha256RsaOaep/SignAndEncrypt",
    "Aes256Sha256RsaPss/Sign",
    "Aes256Sha256RsaPss/SignAndEncrypt",
]


@dataclass
class Sim:
    simulator: OpcuaSimulator
    directory: Path
    client_cert: Path
    client_key: Path
    username_file: Path
    password_file: Path

    def endpoint(self, server: str) -> str:
        return self.simulator[server].endpoint


def plant_scenario(trust_dir: Path) -> dict[str, Any]:
    plant = [
        {"name": "COUNT", "type": "UInt32", "value": {"counter": {}}},
        {"name": "RAMP", "value": {"ramp": {"from": 0, "to": 100, "period": "10s"}}},
        {"name": "CO", "value": {"const": 4.5}},
        {"name": "BAD", "value": {"const": 1}, "status": "BadSensorFailure"},
        {"name": "UNSURE", "value": {"const": 2.5}, "status": "UncertainLastUsableValue"},
        {"name": "ARR", "array": 3, "value": {"const": 7}},
        {"name": "B", "type": "Boolean", "value": {"const": True}},
        {"name": "SB", "type": "SByte", "value": {"const": -8}},
        {"name": "BY", "type": "Byte", "value": {"const": 200}},
        {"name": "I16", "type": "Int16", "value": {"const": -1600}},
        {"name": "U16", "type": "UInt16", "value": {"const": 60000}},
        {"name": "I32", "type": "Int32", "value": {"const": -320000}},
        {"name": "U32", "type": "UInt32", "value": {"const": 4000000000}},
        {"name": "I64", "type": "Int64", "value": {"const": -(2**40)}},
        {"name": "U64", "type": "UInt64", "value": {"const": 2**63 + 5}},
        {"name": "F", "type": "Float", "value": {"const": 1.5}},
        {"name": "D", "type": "Double", "value": {"const": -2.25}},
        {"name": "S", "type": "String", "value": {"const": "FAN-1 RUN"}},
        {"name": "DT", "type": "DateTime", "value": {"const": 1764441154.5}},
        {"name": "SC", "type": "StatusCode", "value": {"const": 0x808C0000}},
    ]
    counter = [{"name": "COUNT", "type": "UInt32", "value": {"counter": {}}}]
    constants = [{"name": f"V{i}", "value": {"const": i}} for i in range(10)]
    limits = {
        "max_nodes_per_read": LIMIT,
        "max_nodes_per_browse": LIMIT,
        "max_nodes_per_translate_browse_paths": LIMIT,
        "max_monitored_items_per_call": LIMIT,
        "max_nodes_per_register_nodes": LIMIT,
        "max_monitored_items_per_subscription": PER_SUBSCRIPTION,
    }
    return {
        "devices": [
            {"name": "plant", "protocol": "opcua", "namespace": NAMESPACE, "update": "100ms",
             "limits": {"max_nodes_per_read": 3},
             "folders": [{"name": "Mine", "folders": [{"name": "Vent", "variables": plant}]}]},
            {"name": "secure", "protocol": "opcua", "namespace": NAMESPACE,
             "security": SECURE_ENDPOINTS, "trust_dir": str(trust_dir),
             "users": {USER: PASSWORD}, "folders": [{"name": "Vent", "variables": counter}]},
            {"name": "outage", "protocol": "opcua", "namespace": NAMESPACE, "update": "100ms",
             "security": ["None", "Basic256Sha256/SignAndEncrypt"],
             "folders": [{"name": "Vent", "variables": counter}]},
            {"name": "limited", "protocol": "opcua", "namespace": NAMESPACE, "update": "100ms",
             "limits": limits, "max_sessions": LIMITED_SESSIONS,
             "folders": [{"name": "Vent", "variables": counter + constants}]},
        ]
    }  # fmt: skip


_shared: dict[str, Any] = {"users": 0}


@pytest_asyncio.fixture(scope="session", loop_scope="session", name="opcua_sim")
async def opcua_sim_fixture() -> AsyncIterator[Sim]:
    if "sim" not in _shared:
        _shared["temp"] = temp = tempfile.TemporaryDirectory(prefix="opcua-test-")
        directory = Path(temp.name)
        cert, key = directory / "client-cert.der", directory / "client-key.pem"
        make_client_certificate(cert, key, host="localhost")
        trusted = directory / "server-trusts"
        trusted.mkdir()
        (trusted / "client.der").write_bytes(cert.read_bytes())
        (directory / "user").write_text(USER + "\n")
        (directory / "password").write_text(PASSWORD + "\n")
        scenario = OpcuaScenario.model_validate(plant_scenario(trusted))
        simulator = await start_opcua_simulator(scenario)
        _shared["sim"] = Sim(
            simulator, directory, cert, key, directory / "user", directory / "password"
        )
    _shared["users"] += 1
    yield _shared["sim"]
    _shared["users"] -= 1
    if _shared["users"] == 0:
        sim = _shared.pop("sim")
        await sim.simulator.close()
        _shared.pop("temp").cleanup()
