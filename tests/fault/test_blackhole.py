"""A black-holed link: the route to the broker goes silent without closing anything.

The agent reaches the broker through `edge_agent.demo.proxy.Proxy`, which stops
forwarding in both directions. No RST and no FIN arrive: only the keep-alive
can tell. Knob (environment): EDGE_AGENT_TEST_BLACKHOLE_S (default 6) seconds
of silence.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from agent_log import at, events, wait_for_event
from conftest import Plant, Process, agent_config, counter_device
from delivery import assert_copies_identical, assert_counter_complete, assert_no_seq_gap, drained

from edge_agent.demo.platform import PlatformSubscriber
from edge_agent.demo.proxy import Proxy

BLACKHOLE_S = float(os.environ.get("EDGE_AGENT_TEST_BLACKHOLE_S", "6"))
KEEPALIVE_S = 2

pytestmark = pytest.mark.fault


def test_a_black_holed_link_is_detected_within_the_keepalive_and_recovers_without_a_gap(
    tmp_path: Path,
    link: Proxy,
    platform: PlatformSubscriber,
    plant: Callable[..., Plant],
    spawn: Callable[..., Process],
) -> None:
    sim = plant([{"address": "hr:0", "type": "uint32", "value": {"counter": {}}}])
    device = counter_device(sim.port, 0.2, level=False)
    config = agent_config(
        tmp_path,
        link.port,
        [device],
        mqtt={"keepalive": f"{KEEPALIVE_S}s", "connect_timeout": "2s"},
    )
    agent = spawn("agent", "run", str(config))
    platform.wait_for(lambda ms: any(m.kind == "rt" for m in ms), 15, "first readings")
    time.sleep(1)

    link.pause()
    silent_at = time.time()
    lost = wait_for_event(agent, "mqtt_disconnected", timeout=4 * KEEPALIVE_S)
    detected_after = at(lost) - silent_at
    # paho's ping check ("Keep alive timeout") or the session's PUBACK wait ("keep-alive"),
    # whichever comes first.
    assert re.search(r"keep.alive", lost["reason"], re.IGNORECASE), lost
    # One keep-alive without an answer, plus the 0.5 s tick and up to one linger
    # before the first unanswered message went out.
    assert detected_after <= KEEPALIVE_S + 1.5, f"detected after {detected_after:.1f} s"

    time.sleep(max(BLACKHOLE_S - (time.time() - silent_at), 0))
    assert len(events(agent, "mqtt_connected")) == 1, "nothing can connect through a black hole"
    link.resume()
    back_at = time.time()
    wait_for_event(agent, "mqtt_connected", timeout=15, count=2)
    platform.wait_for(
        lambda ms: (
            drained(ms)
            and any(
                m.kind == "state" and m.body.get("online") and m.body["ts"] / 1000 > back_at
                for m in ms
            )
        ),
        30,
        "state with backlog 0 after the link came back",
    )
    messages = platform.messages
    assert_no_seq_gap(messages)
    assert_copies_identical(messages)
    assert_counter_complete(messages, "HZ01.CNT", downtimes=[], slack_s=0)
    assert agent.terminate() == 0, agent.log()


def test_the_test_proxy_holds_data_while_paused_and_throttles_with_latency() -> None:
    """The proxy itself, since other fault tests rely on it: pause holds, throttle slows."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def echo() -> None:
            connection, _ = server.accept()
            with connection:
                while data := connection.recv(65536):
                    connection.sendall(data)

        threading.Thread(target=echo, daemon=True).start()
        with Proxy(port) as proxy, socket.create_connection(("127.0.0.1", proxy.port)) as client:
            client.settimeout(1.0)
            client.sendall(b"ping")
            assert client.recv(16) == b"ping"

            proxy.pause()
            client.sendall(b"held")
            with pytest.raises(TimeoutError):
                client.recv(16)
            proxy.resume()
            assert client.recv(16) == b"held"

            proxy.throttle(rate=20_000, delay=0.1)
            started = time.monotonic()
            client.sendall(bytes(10_000))
            received = 0
            while received < 10_000:
                received += len(client.recv(65536))
            took = time.monotonic() - started
            # 10 kB at 20 kB/s is 0.5 s (the two directions pipeline), plus 100 ms each way.
            assert 0.65 <= took <= 2.0, took
            assert proxy.stats.accepted == 1
