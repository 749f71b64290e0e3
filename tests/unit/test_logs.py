"""Logs: secrets never reach a line; a failure that recurs on every poll is rate-limited;
journald is told each line's priority."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from edge_agent import logs
from edge_agent.logs import REDACTED, Repeats, Tally, register_secret


@pytest.fixture(autouse=True)
def _no_registered_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "_secrets", set())


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """The real pipeline (JSON lines, as for journald), into a buffer."""
    stream = io.StringIO()
    logs.configure("debug", stream)
    yield stream
    structlog.reset_defaults()


def logged(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_values_of_secret_keys_are_redacted_and_file_paths_kept(lines: io.StringIO) -> None:
    structlog.get_logger().info(
        "connecting",
        password="hunter22",
        mqtt_passwd="x",
        api_token="t0k3n",
        token="t0k3n",
        private_key="k3y",
        password_file="/run/credentials/edge-agent.service/mqtt-password",
        device="plc-1",
    )
    (line,) = logged(lines)
    assert [line[k] for k in ("password", "mqtt_passwd", "token", "private_key")] == [REDACTED] * 4
    assert line["password_file"] == "/run/credentials/edge-agent.service/mqtt-password"
    assert line["device"] == "plc-1"
    assert "t0k3n" not in lines.getvalue()


def test_a_registered_secret_is_redacted_anywhere_even_in_a_traceback(
    lines: io.StringIO,
) -> None:
    secret = "correct horse battery"
    register_secret(secret)
    log = structlog.get_logger()
    try:
        raise ValueError(f"broker said no to {secret!r}")
    except ValueError:
        log.exception(f"failed with {secret}", detail={"nested": [f"x{secret}x"]})
    text = lines.getvalue()
    assert secret not in text
    line = logged(lines)[0]
    assert line["event"] == f"failed with {REDACTED}"
    assert line["detail"] == {"nested": [f"x{REDACTED}x"]}
    assert "Traceback" in line["exception"]


def test_private_keys_and_url_passwords_are_redacted(lines: io.StringIO) -> None:
    pem = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----"
    structlog.get_logger().info("loaded", text=f"cert ok; {pem}", url="mqtts://gw:pa55@host:8883")
    line = logged(lines)[0]
    assert line["text"] == f"cert ok; {REDACTED}"
    assert line["url"] == f"mqtts://{REDACTED}@host:8883"


def test_a_very_short_secret_does_not_blank_out_numbers(lines: io.StringIO) -> None:
    register_secret("12")
    structlog.get_logger().info("polled", value=1234, text="took 12 ms")
    assert logged(lines)[0]["text"] == "took 12 ms"


def lines_through_a_pipe(journal_stream: str | None, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A warning and an info line logged into a pipe, with JOURNAL_STREAM set as given
    (None: the pipe's own "device:inode", as systemd sets it for the journal's stream)."""
    read_end, write_end = os.pipe()
    with os.fdopen(read_end) as reader, os.fdopen(write_end, "w") as stream:
        status = os.fstat(write_end)
        own = f"{status.st_dev}:{status.st_ino}"
        monkeypatch.setenv("JOURNAL_STREAM", own if journal_stream is None else journal_stream)
        logs.configure("info", stream)
        try:
            structlog.get_logger().warning("poll_failed", device="plc-1")
            structlog.get_logger().info("agent_started")
            structlog.get_logger().debug("device_polled")  # below the level: no line
        finally:
            structlog.reset_defaults()
        stream.close()
        return reader.read().splitlines()


def test_a_line_to_the_journals_own_stream_starts_with_its_priority(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """journald strips `<4>` and files the line as a warning: `journalctl -p warning` works."""
    warning, info = lines_through_a_pipe(None, monkeypatch)
    assert warning.startswith('<4>{"device": "plc-1"')
    assert json.loads(warning.removeprefix("<4>"))["event"] == "poll_failed"
    assert info.startswith("<6>{")


def test_an_inherited_journal_stream_never_prefixes_a_pipe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """JOURNAL_STREAM names another file (the agent was started from a shell under
    systemd, its stderr piped on): the lines stay plain JSON."""
    lines = lines_through_a_pipe("8:12345", monkeypatch)
    assert [json.loads(line)["event"] for line in lines] == ["poll_failed", "agent_started"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_failure_on_every_poll_logs_once_then_summaries_then_recovery() -> None:
    """600 polls failing once a second: one line, one summary after 5 min, one recovery."""
    clock = Clock()
    with capture_logs() as captured:
        repeats = Repeats(structlog.get_logger(), "poll", 300, clock, device="plc-1")
        for second in range(600):
            clock.now = float(second)
            repeats.failed("timeout after 1.0 s")
        clock.now = 600.0
        repeats.recovered()
    events = [(c["event"], c.get("count")) for c in captured]
    assert events == [
        ("poll_failed", None),
        ("poll_still_failing", 301),  # seconds 0 to 300, both counted
        ("poll_recovered", None),
    ]
    assert all(c["device"] == "plc-1" for c in captured)
    assert captured[-1]["failures"] == 600
    assert captured[-1]["failed_for_s"] == 600.0


def test_a_new_reason_is_a_state_change_and_a_traceback_comes_once() -> None:
    clock = Clock()
    with capture_logs() as captured:
        repeats = Repeats(structlog.get_logger(), "poll", 300, clock)
        for _ in range(3):
            repeats.failed(ConnectionRefusedError("refused"))
        repeats.failed("timeout")
    assert [c["event"] for c in captured] == ["poll_failed", "poll_failed"]
    assert isinstance(captured[0]["exc_info"], ConnectionRefusedError)
    assert captured[0]["reason"] == "ConnectionRefusedError: refused"
    assert "exc_info" not in captured[1]


def test_a_failure_only_an_operator_can_fix_stays_an_error_in_its_summaries() -> None:
    """A credential file that cannot be read: error, not warning, also 5 minutes on; a
    more telling name for the first line where there is one."""
    clock = Clock()
    with capture_logs() as captured:
        repeats = Repeats(structlog.get_logger(), "mqtt_connect", 300, clock)
        for second in (0.0, 150.0, 300.0):
            clock.now = second
            repeats.failed("cannot read /run/pw", level=logging.ERROR, event="mqtt_no_password")
    assert [(c["event"], c["log_level"]) for c in captured] == [
        ("mqtt_no_password", "error"),
        ("mqtt_connect_still_failing", "error"),
    ]
    assert captured[1]["count"] == 3


def test_recovering_without_a_failure_logs_nothing() -> None:
    with capture_logs() as captured:
        Repeats(structlog.get_logger(), "poll").recovered()
    assert captured == []


def test_deadlines_missed_on_every_other_poll_log_once_a_minute_not_per_flip() -> None:
    """A device late on every other 20 ms poll for 3 minutes: one line at once, then one
    sum a minute, not a failed/recovered pair per flip."""
    clock = Clock()
    with capture_logs() as captured:
        tally = Tally(structlog.get_logger(), "poll_deadlines_missed", 60, clock, device="plc")
        for poll in range(9000):
            clock.now = poll * 0.02
            if poll % 2:
                tally.add(1)
            else:
                tally.tick()
    assert [(c["event"], c["missed"], c.get("window_s")) for c in captured] == [
        ("poll_deadlines_missed", 1, None),
        ("poll_deadlines_missed", 1500, 60),
        ("poll_deadlines_missed", 1500, 60),
    ]
    assert all(c["device"] == "plc" for c in captured)


def test_after_a_quiet_minute_the_next_missed_deadline_is_logged_at_once() -> None:
    clock = Clock()
    with capture_logs() as captured:
        tally = Tally(structlog.get_logger(), "poll_deadlines_missed", 60, clock)
        tally.add(2)
        clock.now = 61.0
        tally.tick()  # a window with nothing in it: quiet again, nothing logged
        clock.now = 62.0
        tally.add(3)
    assert [(c["missed"], c.get("window_s")) for c in captured] == [(2, None), (3, None)]
