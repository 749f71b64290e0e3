"""The `metrics` config section: on by default on loopback, host:port checked where written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edge_agent.config import load_config
from edge_agent.config.service import Listen, Metrics, parse_listen
from edge_agent.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_metrics_are_on_by_default_on_loopback_9108() -> None:
    metrics = Metrics()
    assert metrics.enabled
    assert metrics.address() == Listen("127.0.0.1", 9108)
    assert (metrics.health.devices_down, metrics.health.uplink_down) == (300.0, 600.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.0.0.0:9108", Listen("0.0.0.0", 9108)), ("[::1]:9200", Listen("::1", 9200))],
)
def test_listen_takes_ipv4_and_bracketed_ipv6(text: str, expected: Listen) -> None:
    assert parse_listen(text) == expected


def test_a_bad_listen_is_reported_at_its_line(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text(encoding="utf-8"))
    data["metrics"] = {"listen": "9108"}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    (problem,) = refused.value.problems
    line = path.read_text(encoding="utf-8").splitlines().index("  listen: '9108'") + 1
    assert problem.startswith(f"{path}:{line}:")
    assert "metrics.listen" in problem
    assert "is not host:port, e.g. 127.0.0.1:9108" in problem
