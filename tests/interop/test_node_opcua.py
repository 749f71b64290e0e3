"""The OPC UA driver against node-opcua 2.163.1 (opcua/server.js): a server that is not our own.

The project's simulator is asyncua, the same stack as the driver's client, so it
shares the client's beliefs. node-opcua enforces its operation limits as a whole
request, keeps a constant's SourceTimestamp, refuses an unknown client
certificate in its own way, and caps its sessions. Expected values come from
opcua_server.py, the mirror of server.js's address space.

The operation-limit, session, poll-time, untrusted-certificate, old-constant and
UInt64-without-type tests failed before the fixes named in tests/interop/README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import polling
import pytest
from structlog.testing import capture_logs

from edge_agent.demo.proxy import Proxy
from edge_agent.drivers.opcua.config import OpcuaDevice
from edge_agent.drivers.opcua.driver import OpcuaDriver
from edge_agent.drivers.opcua.security import make_client_certificate
from edge_agent.model import LinkState, Quality, Sample, UInt64, Value
from edge_agent.rules import TagRules
from interop.opcua_server import (
    BANK_SIZE,
    KNOWN,
    NAMESPACE,
    TEXT_SIZE,
    UINT64_MAX,
    NodeOpcuaServer,
    StartServer,
    bank,
    node_binary,
    text,
)

# Mostly waiting (a third-party server starting, restarting, a will's delay): run by
# `make test` in its second pytest, beside the rest (pyproject.toml, marker `soak`).
pytestmark = pytest.mark.soak

LIMIT = 4
"""Every OperationLimits value of the limited server: S7-1500s and many DCS set such low ones."""
SMALL_MESSAGE = 16384
"""The small server's MaxMessageSize in bytes: an embedded server's order of size."""


def _shared(
    modules: Path, factory: pytest.TempPathFactory, **options: Any
) -> Iterator[NodeOpcuaServer]:
    server = NodeOpcuaServer(node_binary(), modules, factory.mktemp("node-opcua"), options)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def plain(
    node_opcua_modules: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeOpcuaServer]:
    """One server, no operation limits, for the tests that only read (a start costs ~2 s)."""
    yield from _shared(node_opcua_modules, tmp_path_factory)


@pytest.fixture(scope="module")
def small(
    node_opcua_modules: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeOpcuaServer]:
    """One server whose MaxMessageSize is SMALL_MESSAGE, for the message-size tests."""
    yield from _shared(node_opcua_modules, tmp_path_factory, max_message_size=SMALL_MESSAGE)


@pytest.fixture(scope="module")
def limited(
    node_opcua_modules: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeOpcuaServer]:
    """One server with every OperationLimits value at LIMIT, for the tests that only read."""
    yield from _shared(node_opcua_modules, tmp_path_factory, operation_limit=LIMIT)


def tag(code: str, where: str, **fields: Any) -> dict[str, Any]:
    """A tag at NodeId `where` (s=... in NAMESPACE), or at a browse path when it has a /."""
    key = "browse_path" if "/" in where else "node"
    return {"tag": code, "hazard": "HZ01", key: where, **fields}


def known(code: str, **fields: Any) -> dict[str, Any]:
    """A tag named `code` at the NodeId of a KNOWN variable."""
    return tag(code, KNOWN[code].node, **fields)


def device(server: NodeOpcuaServer, tags: list[dict[str, Any]], **fields: Any) -> OpcuaDevice:
    return OpcuaDevice.model_validate(
        {
            "name": "ua-node-opcua",
            "driver": "opcua",
            "endpoint": server.endpoint,
            "namespace": NAMESPACE,
            "timeout": "1s",
            "connect_timeout": "3s",
            "reconnect_min": "100ms",
            "reconnect_max": "300ms",
            "poll": "200ms",
            "publishing_interval": "100ms",
            "tags": tags,
            **fields,
        }
    )


@contextlib.asynccontextmanager
async def driver_for(
    config: OpcuaDevice, report_every: float | None = None
) -> AsyncIterator[OpcuaDriver]:
    driver = OpcuaDriver(config, report_every=report_every)
    try:
        yield driver
    finally:
        await driver.close()


def by_tag(samples: list[Sample]) -> dict[str, Sample]:
    """The last sample of each tag."""
    return {s.tag: s for s in samples}


def readings(samples: list[Sample]) -> dict[str, tuple[Value, Quality]]:
    return {s.tag: (s.value, s.quality) for s in by_tag(samples).values()}


def good(samples: list[Sample]) -> bool:
    return bool(samples) and all(s.quality is Quality.GOOD for s in samples)


def down(samples: list[Sample]) -> bool:
    return bool(samples) and all(s.quality is Quality.COMM and s.value is None for s in samples)


async def read_until(
    driver: OpcuaDriver, done: Callable[[list[Sample]], bool], within: float = 5.0
) -> list[Sample]:
    """`polling.read_until` every 100 ms, 5 s by default."""
    return await polling.read_until(driver, done, within, every=0.1)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def learned(logs: Sequence[Mapping[str, Any]]) -> list[tuple[str, int, str]]:
    """The operation limits the driver found out: (call, size, the answer that told it)."""
    return [
        (e["call"], e["size"], e["answer"]) for e in logs if e["event"] == "operation_limit_learned"
    ]


# --- addresses, values, qualities -----------------------------------------------------------


async def test_reads_by_node_id_and_by_browse_path_chinese_names_too(
    plain: NodeOpcuaServer,
) -> None:
    """The same variables by NodeId (s=, nsu=) and by browse path, 通风/瓦斯浓度 among them."""
    server = plain
    tags = [
        known("CONSTANT"),
        known("GAS"),
        tag("CONSTANT.PATH", KNOWN["CONSTANT"].browse_path),
        tag("GAS.PATH", KNOWN["GAS"].browse_path),
        tag("GAS.NSU", f"nsu={NAMESPACE};{KNOWN['GAS'].node}"),
        tag("BANK.PATH", "Bank/T03", type="Double"),
    ]
    async with driver_for(device(server, tags)) as driver:
        samples = await driver.read()
        assert driver.link is LinkState.UP
    assert readings(samples) == {
        "CONSTANT": (21.5, Quality.GOOD),
        "GAS": (0.42, Quality.GOOD),
        "CONSTANT.PATH": (21.5, Quality.GOOD),
        "GAS.PATH": (0.42, Quality.GOOD),
        "GAS.NSU": (0.42, Quality.GOOD),
        "BANK.PATH": (bank(3).value, Quality.GOOD),
    }


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_status_codes_map_to_qualities_and_a_bad_node_costs_only_its_tag(
    plain: NodeOpcuaServer, mode: str
) -> None:
    """BadSensorFailure q=3, Uncertain q=1 with its value, BadCommunicationError q=2, an unknown
    node or browse path q=4; the good tag beside them stays good."""
    server = plain
    tags = [
        known("CONSTANT"),
        known("SENSOR_FAILED"),
        known("UNCERTAIN"),
        known("NO_COMM"),
        tag("NO.NODE", "s=Plant.Nope"),
        tag("NO.PATH", "Plant/Nope"),
    ]
    expected = {
        "CONSTANT": (21.5, Quality.GOOD),
        "SENSOR_FAILED": (None, Quality.SENSOR),
        "UNCERTAIN": (2.5, Quality.UNCERTAIN),
        "NO_COMM": (None, Quality.COMM),
        "NO.NODE": (None, Quality.CONFIG),
        "NO.PATH": (None, Quality.CONFIG),
    }
    async with driver_for(device(server, tags, mode=mode)) as driver:
        samples = await read_until(driver, lambda s: len(by_tag(s)) == len(tags))
        assert driver.link is LinkState.UP
    assert readings(samples) == expected


async def test_the_largest_uint64_is_exact_and_a_decimal_string_on_the_wire(
    plain: NodeOpcuaServer,
) -> None:
    """18446744073709551615 comes back as that int and leaves as its digits (edge_agent/wire.py)."""
    server = plain
    config = device(server, [known("COUNTER64", type="UInt64")])
    async with driver_for(config) as driver:
        (sample,) = await driver.read()
    assert (sample.value, sample.quality) == (UINT64_MAX, Quality.GOOD)
    assert type(sample.value) is UInt64  # an exact int, marked 64-bit
    reading, _ = TagRules(config.tags[0], every_s=60, poll_s=1).judge(sample)
    assert reading is not None
    assert json.loads(json.dumps({"v": reading.value})) == {"v": "18446744073709551615"}


async def test_the_largest_uint64_is_a_decimal_string_on_the_wire_without_a_configured_type(
    plain: NodeOpcuaServer,
) -> None:
    """The value's own type (UInt64) makes the tag a 64-bit integer tag: a platform reading
    JSON numbers as doubles would take the number for 18446744073709551616."""
    server = plain
    config = device(server, [known("COUNTER64")])
    async with driver_for(config) as driver:
        (sample,) = await driver.read()
    assert sample.value == UINT64_MAX
    reading, _ = TagRules(config.tags[0], every_s=60, poll_s=1).judge(sample)
    assert reading is not None
    assert reading.value == "18446744073709551615"


# --- poll and subscribe ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_a_changing_value_is_followed_in_both_modes(
    plain: NodeOpcuaServer, mode: str
) -> None:
    """Plant/Rising goes up by 1 every 100 ms; the constant beside it stays 21.5."""
    server = plain
    tags = [known("RISING", monitor={"queue_size": 10}), known("CONSTANT")]
    rising: list[float] = []
    async with driver_for(device(server, tags, mode=mode)) as driver:
        for _ in range(8):
            samples = await driver.read()
            assert all(s.quality is Quality.GOOD for s in samples), samples
            rising += [float(s.value) for s in samples if s.tag == "RISING" and s.value is not None]
            assert {s.value for s in samples if s.tag == "CONSTANT"} <= {21.5}
            await asyncio.sleep(0.2)
    assert rising == sorted(rising), rising
    assert len(set(rising)) >= 5, rising


async def test_a_constant_polled_is_stamped_with_the_time_of_the_response(
    plain: NodeOpcuaServer,
) -> None:
    """Plant/Constant was written once, when the server started: its SourceTimestamp is older
    than any of these reads, and a poll's report time is when its answer arrived."""
    async with driver_for(device(plain, [known("CONSTANT")])) as driver:
        stamped: list[tuple[int, int, int]] = []
        for _ in range(3):
            before = now_ms()
            (sample,) = await driver.read()
            stamped.append((before, sample.ts_ms, now_ms()))
            assert sample.value == 21.5
            await asyncio.sleep(0.2)
    assert all(before <= ts <= after for before, ts, after in stamped), stamped


async def test_subscribing_to_an_old_constant_is_no_device_clock_skew(
    plain: NodeOpcuaServer,
) -> None:
    """Plant/Constant is older than max_clock_skew (1 s here); Plant/Rising changes, its
    SourceTimestamps on time: the server's clock agrees with the gateway's."""
    await asyncio.sleep(max(0.0, 1.5 - plain.age))
    tags = [known("CONSTANT"), known("RISING")]
    config = device(plain, tags, mode="subscribe", max_clock_skew="1s")
    async with driver_for(config) as driver:
        with capture_logs() as logs:
            samples = await read_until(driver, lambda s: {"CONSTANT", "RISING"} <= set(by_tag(s)))
            for _ in range(3):
                samples += await driver.read()
                await asyncio.sleep(0.2)
    assert by_tag(samples)["CONSTANT"].value == 21.5
    assert [e for e in logs if e["event"] == "device_clock_skewed"] == []


async def test_a_keepalive_revised_past_half_the_report_interval_is_logged_once(
    plain: NodeOpcuaServer,
) -> None:
    """Half of a 1 s report interval holds one publishing interval of 300 ms; node-opcua
    grants at least 2 (600 ms): said once, though the next connect is granted the same."""
    config = device(plain, [known("CONSTANT")], mode="subscribe", publishing_interval="300ms")
    async with driver_for(config, report_every=1.0) as driver:
        with capture_logs() as logs:
            await read_until(driver, good)
            await driver.close()
            await read_until(driver, good)
    told = [e for e in logs if e["event"] == "keepalive_too_long"]
    assert [(e["keepalive_s"], e["most_s"]) for e in told] == [(0.6, 0.5)]
    assert [e["keepalive"] for e in logs if e["event"] == "link_up"] == [0.6]


# --- operation limits -----------------------------------------------------------------------


async def test_reads_over_max_nodes_per_read_are_split_and_all_read(
    limited: NodeOpcuaServer,
) -> None:
    """MaxNodesPerRead 4 and 7 tags: a Read of 7 would be refused whole (BadTooManyOperations)."""
    server = limited
    tags = [tag(f"T{i}", bank(i).node) for i in range(1, 8)]
    expected = {f"T{i}": (bank(i).value, Quality.GOOD) for i in range(1, 8)}
    async with driver_for(device(server, tags)) as driver:
        samples = await driver.read()
        survey = await driver.read_all()
    assert readings(samples) == expected
    assert readings([r.sample for r in survey.readings]) == expected


async def test_six_browse_paths_resolve_past_max_nodes_per_translate_in_poll_mode(
    limited: NodeOpcuaServer,
) -> None:
    """MaxNodesPerTranslateBrowsePathsToNodeIds 4 and 6 browse paths: one call of 6 would be
    refused whole, the connect with it, and every tag would stay q=2."""
    server = limited
    tags = [tag(f"T{i}", bank(i).browse_path) for i in range(1, 7)]
    async with driver_for(device(server, tags)) as driver:
        samples = await read_until(driver, good, within=3.0)
    assert readings(samples) == {f"T{i}": (bank(i).value, Quality.GOOD) for i in range(1, 7)}


async def test_five_tags_subscribe_past_max_monitored_items_per_call(
    limited: NodeOpcuaServer,
) -> None:
    """MaxMonitoredItemsPerCall 4 and 5 tags: one CreateMonitoredItems of 5 would be refused
    whole, the subscription with it, and every tag would stay q=2."""
    server = limited
    tags = [tag(f"T{i}", bank(i).node) for i in range(1, 6)]
    async with driver_for(device(server, tags, mode="subscribe")) as driver:
        samples = await read_until(driver, lambda s: len(s) == len(tags) and good(s), within=3.0)
    assert readings(samples) == {f"T{i}": (bank(i).value, Quality.GOOD) for i in range(1, 6)}


async def test_a_read_answer_over_the_servers_max_message_size_is_halved_and_remembered(
    small: NodeOpcuaServer,
) -> None:
    """Eight strings of 3000 characters: one Read of the eight (about 24 KiB) is answered
    BadTcpMessageTooLarge, its halves pass. The size is logged once, with the answer, and
    kept: the next connect reads in fours from the start. link_up shows the server's size."""
    tags = [tag(f"L{i}", text(i).node) for i in range(1, TEXT_SIZE + 1)]
    expected = {f"L{i}": (text(i).value, Quality.GOOD) for i in range(1, TEXT_SIZE + 1)}
    async with driver_for(device(small, tags)) as driver:
        with capture_logs() as logs:
            first = await driver.read()
            await driver.close()
            again = await driver.read()
    assert readings(first) == readings(again) == expected
    assert learned(logs) == [("MaxNodesPerRead", 4, "BadTcpMessageTooLarge")]
    (up,) = [e for e in logs if e["event"] == "link_up"]
    assert up["max_message_size"] == SMALL_MESSAGE


async def test_a_read_request_over_the_servers_max_message_size_costs_one_poll(
    small: NodeOpcuaServer,
) -> None:
    """800 nodes make a Read request of about 23 KiB: node-opcua answers with an Error
    message (BadTcpMessageTooLarge) and closes the connection, so that poll is q=2 and
    the halves cannot be sent; the next connect reads in Reads of 400 from the start."""
    tags = [tag(f"T{i}", bank(1 + i % BANK_SIZE).node) for i in range(800)]
    async with driver_for(device(small, tags)) as driver:
        with capture_logs() as logs:
            assert down(await driver.read())
            samples = await read_until(driver, good)
    assert len(samples) == len(tags)
    assert learned(logs) == [("MaxNodesPerRead", 400, "BadTcpMessageTooLarge")]


# --- security -------------------------------------------------------------------------------


class Gateway:
    """This gateway's certificate and key, and the directory of server certificates it trusts."""

    def __init__(self, directory: Path) -> None:
        self.certificate = directory / "cert.der"
        self.key = directory / "key.pem"
        self.trust_dir = directory / "trusted"
        self.trust_dir.mkdir(parents=True)
        make_client_certificate(self.certificate, self.key, host="localhost")

    def security(self, mode: str) -> dict[str, Any]:
        return {
            "policy": "Basic256Sha256",
            "mode": mode,
            "certificate": str(self.certificate),
            "private_key": str(self.key),
            "trust_dir": str(self.trust_dir),
        }

    def trust(self, server: NodeOpcuaServer) -> None:
        shutil.copyfile(server.certificate, self.trust_dir / "node-opcua.pem")


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    return Gateway(tmp_path / "gateway")


def link_down_reasons(logs: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(e["reason"]) for e in logs if e["event"] == "link_down"]


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
async def test_basic256sha256_reads_when_each_side_trusts_the_other(
    node_opcua_server: StartServer, gateway: Gateway, mode: str
) -> None:
    """The server has cert.der in pki/trusted/certs, the gateway the server's certificate."""
    server = node_opcua_server(
        policies=["Basic256Sha256"], modes=["Sign", "SignAndEncrypt"], trust=[gateway.certificate]
    )
    gateway.trust(server)
    config = device(server, [known("CONSTANT"), known("GAS")], security=gateway.security(mode))
    async with driver_for(config) as driver:
        samples = await driver.read()
    assert readings(samples) == {"CONSTANT": (21.5, Quality.GOOD), "GAS": (0.42, Quality.GOOD)}
    assert server.rejected() == []


async def test_a_server_certificate_not_in_the_trust_dir_is_refused_with_its_fingerprint(
    node_opcua_server: StartServer, gateway: Gateway
) -> None:
    server = node_opcua_server(trust=[gateway.certificate])
    config = device(server, [known("CONSTANT")], security=gateway.security("SignAndEncrypt"))
    async with driver_for(config) as driver:
        with capture_logs() as logs:
            samples = await driver.read()
    assert down(samples)
    (reason,) = link_down_reasons(logs)
    assert "is not in the trust list" in reason
    assert "SHA-256" in reason
    assert "trust_dir" in reason
    assert server.log_lines("session_activated") == [], "refused before any session"


async def test_an_untrusted_client_certificate_is_named_with_where_to_put_it(
    node_opcua_server: StartServer, gateway: Gateway
) -> None:
    server = node_opcua_server()
    gateway.trust(server)
    config = device(server, [known("CONSTANT")], security=gateway.security("SignAndEncrypt"))
    async with driver_for(config) as driver:
        with capture_logs() as logs:
            samples = await driver.read()
    assert down(samples)
    assert len(server.rejected()) == 1, "node-opcua keeps it in pki/rejected"
    (reason,) = link_down_reasons(logs)
    assert "AssertionError" not in reason
    assert "cert.der" in reason, reason
    assert "trusted" in reason, reason


async def test_a_client_certificate_the_operator_trusts_later_gets_in_without_a_restart(
    node_opcua_server: StartServer, gateway: Gateway
) -> None:
    """Refused (node-opcua files it in pki/rejected), then moved to pki/trusted/certs by the
    operator: the driver's next connect gets in; neither side restarts.

    node-opcua takes a file in its PKI folder into account only once it has been unchanged
    for 2 s (polled every 0.5 s here), and a refused connect in between writes the
    certificate back into rejected/, which wins over trusted/ (tests/interop/README.md).
    So the operator moves it some seconds after the refusal, and the driver's retry
    (reconnect 8 s, without touching the network in between) comes after that.
    """
    server = node_opcua_server()
    gateway.trust(server)
    security = gateway.security("SignAndEncrypt")
    config = device(
        server, [known("CONSTANT")], security=security, reconnect_min="8s", reconnect_max="8s"
    )
    async with driver_for(config) as driver:
        assert down(await driver.read())
        await asyncio.sleep(3.0)
        (rejected,) = server.rejected()
        rejected.rename(server.pki / "trusted" / "certs" / rejected.name)
        samples = await read_until(driver, good, within=8.0)
    assert readings(samples) == {"CONSTANT": (21.5, Quality.GOOD)}


# --- outages --------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "hard"), [("poll", False), ("subscribe", True)])
async def test_a_restarted_server_is_read_again(
    node_opcua_server: StartServer, mode: str, hard: bool
) -> None:
    """Stopped (SIGTERM: node-opcua closes its sessions; SIGKILL: a crash), away 1 s, started
    on the same port: q=2 meanwhile, then Plant/Rising again from a new session."""
    server = node_opcua_server()
    tags = [known("RISING"), known("CONSTANT")]
    async with driver_for(device(server, tags, mode=mode, timeout="500ms")) as driver:
        await read_until(driver, lambda s: len(s) == len(tags) and good(s))
        restart = asyncio.ensure_future(asyncio.to_thread(server.restart, 1.0, hard=hard))
        await read_until(driver, down, within=5.0)
        while_away = driver.link
        await restart
        samples = await read_until(driver, lambda s: len(s) == len(tags) and good(s), within=8.0)
        assert (while_away, driver.link) == (LinkState.DOWN, LinkState.UP)
    assert by_tag(samples)["CONSTANT"].value == 21.5
    assert len(server.log_lines("session_activated")) >= 2


async def test_black_holed_connects_leave_no_sessions_behind(
    node_opcua_server: StartServer,
) -> None:
    """10 cycles: connect and read, the route goes silent (the read and the polite
    CloseSession are lost), the connection is dropped (a NAT forgetting it). node-opcua
    holds 10 sessions at most, each until its timeout. Within 10 s of the last cycle at
    most 2 sessions are left (the driver's, and the counting client's, which gets in: a
    second client still connects), and the driver reads again."""
    server = node_opcua_server()
    with Proxy(server.port) as route:
        endpoint = f"opc.tcp://127.0.0.1:{route.port}"
        config = device(server, [known("CONSTANT")], endpoint=endpoint, timeout="500ms")
        async with driver_for(config) as driver:
            for _ in range(10):
                await read_until(driver, good, within=5.0)
                route.pause()
                assert down(await driver.read())
                route.reset()
                route.resume()
            deadline = time.monotonic() + 10.0
            while (count := await server.current_session_count()) > 2:
                assert time.monotonic() < deadline, f"{count} sessions left on the server"
                await asyncio.sleep(0.5)
            assert count <= 2
            await read_until(driver, good, within=5.0)
