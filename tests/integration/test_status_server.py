"""The agent's HTTP endpoints on a real socket: /metrics, /healthz, /status, /tags, the
status page, and what they refuse."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families
from snapshots import device_down, healthy, tags

from edge_agent.service import http
from edge_agent.service.health import HealthLimits
from edge_agent.service.http import StatusServer
from edge_agent.service.snapshot import Snapshot

Response = tuple[int, str, bytes]


class Agent:
    """What the server reads: the snapshot the test sets, or an error."""

    def __init__(self) -> None:
        self.snapshot = healthy()
        self.error: Exception | None = None

    def take(self) -> Snapshot:
        if self.error is not None:
            raise self.error
        return self.snapshot


@dataclass
class Served:
    agent: Agent
    port: int

    def get(self, path: str, method: str = "GET") -> Response:
        url = f"http://127.0.0.1:{self.port}{path}"
        request = urllib.request.Request(url, method=method)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.headers["Content-Type"], response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers["Content-Type"], error.read()

    async def fetch(self, path: str, method: str = "GET") -> Response:
        """`get` in a thread: the server runs on this test's event loop."""
        return await asyncio.to_thread(self.get, path, method)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    agent = Agent()
    server = StatusServer("127.0.0.1", 0, agent.take, HealthLimits(), take_tags=tags)
    assert await server.start()
    yield Served(agent, server.port)
    await server.close()


async def test_metrics_are_valid_prometheus_text(
    served: Served,
) -> None:
    """Every figure the issue names is there, parsed back by Prometheus' own parser."""
    status, content_type, body = await served.fetch("/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    tank = (("device", "plc-tank-farm"),)
    assert samples[("edge_agent_device_up", tank)] == 1
    assert samples[("edge_agent_device_poll_errors_total", tank)] == 2
    assert samples[("edge_agent_device_reconnects_total", tank)] == 1
    assert samples[("edge_agent_device_poll_duration_seconds_count", tank)] == 3
    le_25ms = (("device", "plc-tank-farm"), ("le", "0.025"))
    assert samples[("edge_agent_device_poll_duration_seconds_bucket", le_25ms)] == 2
    boiler = (("device", "plc-boiler"),)
    assert samples[("edge_agent_device_timestamps_replaced_total", boiler)] == 4
    assert samples[("edge_agent_tags", (("quality", "sensor"),))] == 1
    assert samples[("edge_agent_alarms_active", (("kind", "HH"),))] == 1
    assert samples[("edge_agent_store_backlog_messages", ())] == 0
    assert samples[("edge_agent_store_bytes", ())] == 5 * 1024**2
    assert samples[("edge_agent_store_lost_items_total", ())] == 0
    assert samples[("edge_agent_uplink_connected", ())] == 1
    assert samples[("edge_agent_uplink_in_flight", ())] == 2
    assert samples[("edge_agent_uplink_acked_total", ())] == 118
    assert samples[("edge_agent_uplink_refused_total", ())] == 0
    assert samples[("edge_agent_health", (("state", "ok"),))] == 1


async def test_healthz_says_ok_degraded_or_failing(
    served: Served,
) -> None:
    agent = served.agent
    assert json.loads((await served.fetch("/healthz"))[2]) == {"status": "ok", "reasons": []}

    agent.snapshot = device_down(healthy(), "plc-boiler", 30)
    status, content_type, body = await served.fetch("/healthz")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == {
        "status": "degraded",
        "reasons": ["device plc-boiler down for 30 s"],
    }

    agent.snapshot = device_down(device_down(healthy(), "plc-boiler", 900), "plc-tank-farm", 900)
    status, _, body = await served.fetch("/healthz")
    assert status == 503
    assert json.loads(body)["status"] == "failing"


async def test_status_carries_the_snapshot_and_its_health(
    served: Served,
) -> None:
    status, _, body = await served.fetch("/status")
    document = json.loads(body)
    assert status == 200
    assert document["snapshot"] == json.loads(json.dumps(healthy().as_json()))
    assert document["health"] == {"status": "ok", "reasons": []}


async def test_tags_carry_every_tag_with_its_value_quality_reason_and_alarms(
    served: Served,
) -> None:
    status, content_type, body = await served.fetch("/tags")
    document = json.loads(body)
    assert (status, content_type) == (200, "application/json")
    assert [tag["tag"] for tag in document["tags"]] == [tag.tag for tag in tags()]
    level, gas = document["tags"][:2]
    assert (level["value"], level["unit"], level["quality"]) == (17.6, "m", "good")
    assert level["alarms"] == [{"kind": "H", "since_ms": 1_764_441_065_000, "value": 17.4,
                                "limit": 17.0}]  # fmt: skip
    assert (gas["quality"], gas["reason"][:15]) == ("sensor", "150 is beyond r")
    assert isinstance(document["taken_ms"], int)


async def test_the_status_page_is_html_that_reads_status_and_tags(served: Served) -> None:
    status, content_type, body = await served.fetch("/")
    page = body.decode()
    assert (status, content_type) == (200, "text/html; charset=utf-8")
    assert 'get("status")' in page
    assert 'get("tags")' in page
    assert "innerHTML" not in page.split("<script>", 1)[1], "agent data goes in as text only"


async def test_unknown_paths_and_methods_are_refused(
    served: Served,
) -> None:
    assert (await served.fetch("/admin"))[0] == 404
    assert (await served.fetch("/metrics", "POST"))[0] == 405
    status, _, body = await served.fetch("/healthz", "HEAD")
    assert (status, body) == (200, b"")


async def test_a_failing_snapshot_is_a_500_not_a_dead_server(served: Served) -> None:
    served.agent.error = RuntimeError("the runtime's bug")
    assert (await served.fetch("/status"))[0] == 500
    served.agent.error = None
    assert (await served.fetch("/status"))[0] == 200


async def test_a_silent_client_is_dropped_and_others_are_served(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scraper that connects and sends nothing holds nothing for long."""
    monkeypatch.setattr(http, "REQUEST_TIMEOUT_S", 0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    assert (await served.fetch("/healthz"))[0] == 200
    async with asyncio.timeout(2):
        assert await reader.read() == b""  # closed by the server
    writer.close()


async def test_a_taken_port_is_reported_not_raised(served: Served) -> None:
    """Another process on the port: the agent runs on without its endpoints."""
    second = StatusServer("127.0.0.1", served.port, healthy, HealthLimits())
    assert not await second.start()
