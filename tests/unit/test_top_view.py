"""`edge-agent top`'s screen, rendered as an 80-column SSH terminal would show it."""

from __future__ import annotations

import dataclasses
import io
import json

from rich.console import Console
from snapshots import TAKEN_MS, device_down, healthy, tags

from edge_agent.service.health import HealthLimits, judge
from edge_agent.service.snapshot import Snapshot, tags_json
from edge_agent.top.fetch import Picture
from edge_agent.top.view import Frame, Move, render, scrolled

FRAME = Frame("127.0.0.1:9108", 1.0)


def picture(snapshot: Snapshot) -> Picture:
    """What the agent's /status and /tags would answer, through JSON as over the wire."""
    snapshot = dataclasses.replace(snapshot, gateway="GW-DEMO-01")
    status = {"snapshot": snapshot.as_json(), "health": judge(snapshot, HealthLimits()).as_json()}
    return Picture(
        json.loads(json.dumps(status)),
        json.loads(json.dumps(tags_json(TAKEN_MS, tags()))),
        FRAME.source,
    )


def screen(
    shown: Picture, frame: Frame = FRAME, width: int = 80, height: int | None = None
) -> list[str]:
    console = Console(file=io.StringIO(), width=width, color_system=None, record=True)
    console.print(render(shown, frame, height))
    return console.export_text().splitlines()


def line_of(lines: list[str], start: str) -> str:
    return next(line for line in lines if line.startswith(start))


def tag_lines(lines: list[str]) -> list[str]:
    """The tags' section: from its header on (the active alarms come before it)."""
    return lines[lines.index(line_of(lines, "TAG ")) :]


def test_every_line_fits_an_80_column_terminal() -> None:
    troubled = device_down(healthy(), "plc-boiler", 300)
    lines = screen(picture(troubled))
    assert max(len(line) for line in lines) <= 80
    assert len(lines) > 20, "the tables are there"


def test_an_active_alarm_is_shown_by_tag_and_kind() -> None:
    lines = screen(picture(healthy()))
    assert line_of(tag_lines(lines), "HZ01.LT101").split() == [
        "HZ01.LT101", "17.6", "m", "good", "H",
    ]  # fmt: skip
    alarms = lines[lines.index(line_of(lines, "ACTIVE ALARM")) :]
    assert line_of(alarms, "HZ01.LT101").split()[:6] == [
        "HZ01.LT101", "H", "17.4", "m", "17", "m",
    ]  # fmt: skip
    assert "(90 s ago)" in line_of(alarms, "HZ01.LT101")
    assert line_of(alarms, "HZ01.GT201").split()[:4] == ["HZ01.GT201", "FAULT", "-", "-"]


def test_a_bad_quality_is_shown_with_its_reason_under_the_tag() -> None:
    lines = tag_lines(screen(picture(healthy())))
    row = lines.index(line_of(lines, "HZ02.PT201"))
    assert lines[row].split() == ["HZ02.PT201", "-", "MPa", "comm"]
    assert lines[row + 1] == "  device link down: connection: connect refused or unreachable"
    gas = lines.index(line_of(lines, "HZ01.GT201"))
    assert lines[gas + 1].startswith("  150 is beyond range 0..100 and its 10% tolerance")
    assert lines[gas + 1].endswith("…"), "a long reason is cut at the edge, not wrapped"


def test_a_reason_several_tags_share_is_written_once_after_them() -> None:
    # As when the clock is not synchronised: every tag q=1 for the same reason.
    clock = "the gateway's clock is not synchronised: sent with q=1"
    shown = picture(healthy())
    shown.tags["tags"] = [dict(tag, reason=clock) for tag in shown.tags["tags"][:3]]
    lines = screen(shown)
    assert lines.count(f"  3 tags: {clock}") == 1
    assert sum(clock in line for line in lines) == 1
    assert lines.index(f"  3 tags: {clock}") == lines.index(line_of(lines, "HZ02.PT201")) + 1


def test_a_tag_not_read_yet_says_so() -> None:
    lines = screen(picture(healthy()))
    row = lines.index(line_of(lines, "HZ02.TT201"))
    assert lines[row].split() == ["HZ02.TT201", "-", "°C", "not", "read"]
    assert lines[row + 1] == "  not read yet"


def test_a_down_device_says_why_under_its_row() -> None:
    snapshot = device_down(healthy(), "plc-boiler", 300)
    devices = tuple(
        dataclasses.replace(d, reason="connection: timed out") if d.name == "plc-boiler" else d
        for d in snapshot.devices
    )
    lines = screen(picture(dataclasses.replace(snapshot, devices=devices)))
    row = lines.index(line_of(lines, "plc-boiler"))
    assert lines[row].split()[:3] == ["plc-boiler", "down", "5"]
    assert lines[row + 1] == "  connection: timed out"
    assert "DEGRADED" in lines[0]


def test_a_silent_agent_leaves_its_last_picture_marked() -> None:
    frame = dataclasses.replace(FRAME, unanswered_since=TAKEN_MS / 1000)
    lines = screen(picture(healthy()), frame)
    assert any(line.startswith("no answer since ") for line in lines)
    assert any(line.startswith("HZ01.LT101") for line in lines)


def test_alarms_store_and_uplink_come_before_the_tags() -> None:
    # What must be seen without scrolling comes first; a site's hundreds of tags last.
    lines = screen(picture(healthy()))
    assert line_of(lines, "back-log") == "back-log  nothing waits; store 5.0 MiB of 2.0 GiB"
    assert line_of(lines, "uplink").startswith("uplink    connected to platform.example:8883")
    order = [
        lines.index(line_of(lines, start)) for start in ("DEVICE", "ACTIVE ALARM", "uplink", "TAG ")
    ]
    assert order == sorted(order)
    assert lines[-1] == "q quits; every 1 s from 127.0.0.1:9108"


def test_what_does_not_fit_the_height_scrolls_under_a_fixed_header() -> None:
    shown = picture(healthy())
    whole = screen(shown)
    height = 12
    lines = screen(shown, height=height)
    assert len(lines) == height
    assert (lines[0], lines[1:-1]) == (whole[0], whole[1 : height - 1])
    assert lines[-1].startswith(f"lines 1-{height - 2} of {len(whole) - 2}: arrows/PgUp/PgDn")

    frame = scrolled(shown, FRAME, [Move.PAGE_DOWN], height)
    assert frame.scroll == height - 2
    lines = screen(shown, frame, height=height)
    assert lines[1:-1] == whole[height - 1 : 2 * height - 3]

    end = scrolled(shown, frame, [Move.END, Move.DOWN, Move.DOWN], height)
    assert screen(shown, end, height=height)[1:-1] == whole[-height + 1 : -1], "a full last page"
    back = scrolled(shown, end, [Move.HOME, Move.UP], height)
    assert back.scroll == 0


def test_a_screen_tall_enough_shows_everything_without_a_scroll_line() -> None:
    shown = picture(healthy())
    assert screen(shown, height=200) == screen(shown)
