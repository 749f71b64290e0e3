"""What a reload keeps, rebuilds and refuses, decided from the old and the new config."""

from __future__ import annotations

from typing import Any

import pytest

from edge_agent.config.schema import AgentConfig
from edge_agent.reload import plan_reload


def tag(name: str, address: str, **more: Any) -> dict[str, Any]:
    return {"tag": name, "hazard": "HZ01", "address": address, "type": "uint16", **more}


def config(**changes: Any) -> AgentConfig:
    """Two Modbus devices with a tag each; `changes` replace top-level sections."""
    return AgentConfig.model_validate({**data(), **changes})


def data() -> dict[str, Any]:
    return {
        "gateway": {"code": "GW-TEST-01", "enterprise": "91370200MA3C00000K"},
        "uplink": {"mqtt": {"host": "127.0.0.1", "port": 1883}},
        "store": {"path": "/tmp/store.db"},
        "devices": [
            {"name": "plc-a", "driver": "modbus", "host": "127.0.0.1", "port": 5020,
             "poll": "1s", "tags": [tag("HZ01.A", "hr:0")]},
            {"name": "plc-b", "driver": "modbus", "host": "127.0.0.1", "port": 5021,
             "poll": "1s", "tags": [tag("HZ01.B", "hr:0")]},
        ],
    }  # fmt: skip


def with_tag_on_b() -> AgentConfig:
    devices = data()["devices"]
    devices[1]["tags"].append(tag("HZ01.B2", "hr:1"))
    return config(devices=devices)


def test_the_same_config_keeps_everything_and_restarts_nothing() -> None:
    plan = plan_reload(config(), config())
    assert plan.refused is None
    assert plan.kept_devices == {"plc-a", "plc-b"}
    assert plan.kept_tags == {"HZ01.A", "HZ01.B"}
    assert not plan.restart_uplink
    assert not plan.restart_metrics
    assert not plan.restart_stats


def test_a_tag_added_to_one_device_rebuilds_that_device_only() -> None:
    """The other device keeps its driver; the old tag of the changed one keeps its rules;
    the platform must hear of the new tag, so the uplink restarts (meta)."""
    plan = plan_reload(config(), with_tag_on_b())
    assert plan.kept_devices == {"plc-a"}
    assert plan.kept_tags == {"HZ01.A", "HZ01.B"}
    assert plan.restart_uplink


def test_a_changed_site_rebuilds_every_rule_but_keeps_the_connections() -> None:
    """The heartbeat of every tag (report.every) follows the site."""
    gateway = {"code": "GW-TEST-01", "enterprise": "91370200MA3C00000K", "site": "mine"}
    plan = plan_reload(config(), config(gateway=gateway))
    assert plan.kept_devices == {"plc-a", "plc-b"}
    assert plan.kept_tags == set()


def test_a_new_broker_restarts_the_uplink() -> None:
    plan = plan_reload(config(), config(uplink={"mqtt": {"host": "127.0.0.2", "port": 1883}}))
    assert plan.restart_uplink
    assert plan.kept_devices == {"plc-a", "plc-b"}


def test_metrics_and_stats_changes_restart_their_parts() -> None:
    plan = plan_reload(
        config(), config(metrics={"listen": "127.0.0.1:9200"}, stats={"window": "60s"})
    )
    assert plan.restart_metrics
    assert plan.restart_stats
    assert plan.kept_tags == set(), "new statistics windows"


def test_a_new_gateway_code_restarts_the_status_servers_on_its_socket() -> None:
    """The local socket is named after the gateway code (service/local.py)."""
    gateway = {"code": "GW-TEST-02", "enterprise": "91370200MA3C00000K"}
    plan = plan_reload(config(), config(gateway=gateway))
    assert plan.restart_metrics
    assert plan.restart_uplink


@pytest.mark.parametrize(
    "store",
    [{"path": "/var/lib/other.db"}, {"path": "/tmp/store.db", "max_size": "1GiB"}],
)
def test_store_changes_are_refused_and_need_a_restart(store: dict[str, str]) -> None:
    plan = plan_reload(config(), config(store=store))
    assert plan.refused is not None
    assert "restart" in plan.refused


def test_the_commit_interval_applies_without_a_restart() -> None:
    plan = plan_reload(config(), config(store={"path": "/tmp/store.db", "commit_interval": "1s"}))
    assert plan.refused is None


def test_a_changed_site_makes_an_opcua_subscription_anew_for_its_keepalive() -> None:
    """A subscription's keep-alive is sized to half the report interval, which follows the
    site; a polled server has no keep-alive and keeps its connection."""
    devices = [
        {"name": f"ua-{mode}", "driver": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840",
         "mode": mode, "tags": [{"tag": f"HZ01.{mode}", "hazard": "HZ01", "node": "ns=2;s=A"}]}
        for mode in ("subscribe", "poll")
    ]  # fmt: skip
    gateway = {"code": "GW-TEST-01", "enterprise": "91370200MA3C00000K", "site": "mine"}
    plan = plan_reload(config(devices=devices), config(gateway=gateway, devices=devices))
    assert plan.kept_devices == {"ua-poll"}
