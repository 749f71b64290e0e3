"""No secret ever appears in a log: `edge-agent run` with credential files, at debug level."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agent_log import wait_for_event
from conftest import Process, agent_config, counter_device

from edge_agent.demo.broker import Mosquitto, free_port, make_password_file

USER = "gw-test-01"
SECRET = "Tr0ub4dor&3-never-log-me"


def test_a_refused_password_never_appears_in_the_log(
    tmp_path: Path, spawn: Callable[..., Process]
) -> None:
    """The broker refuses the password read from its file; the refusal is logged, the
    password is not (a device that does not answer adds its own failures to the log)."""
    broker = Mosquitto(
        tmp_path / "broker",
        password_file=make_password_file(tmp_path / "passwd", USER, "the-right-one"),
    )
    broker.start()
    try:
        (tmp_path / "user").write_text(f"{USER}\n")
        (tmp_path / "password").write_text(f"{SECRET}\n")
        config = agent_config(
            tmp_path,
            broker.port,
            [counter_device(free_port(), 0.2)],
            mqtt={
                "username_file": str(tmp_path / "user"),
                "password_file": str(tmp_path / "password"),
                "reconnect_min": "100ms",
                "reconnect_max": "200ms",
            },
        )
        agent = spawn("agent", "run", str(config), "--log-level", "debug")
        wait_for_event(agent, "mqtt_connect_failed")  # once: the retries are summed up
        assert agent.terminate() == 0, agent.log()
    finally:
        broker.stop()
    log = agent.log()
    assert "refused" in log
    assert SECRET not in log
