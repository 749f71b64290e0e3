"""One screen of `edge-agent top` from the agent's picture: pure, so tests render it to text.

Made for an 80-column terminal over SSH: every line is cut to the terminal's
width, never wrapped, so a row stays a row. What needs no scrolling comes first
(health, devices, active alarms, back-log and uplink), then every tag; given
the terminal's height, the header and the key line stay and what lies between
scrolls (`Frame.scroll`, moved by `scrolled`). Why a device is down or a tag is
not good goes on a line of its own under its row, where it has the whole
width (the status page and `edge-agent read` give it whole).
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, auto
from typing import Any, Final

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from edge_agent.service.health import duration
from edge_agent.top.fetch import Picture

HEALTH_STYLES: Final = {"ok": "bold green", "degraded": "bold yellow", "failing": "bold red"}
QUALITY_STYLES: Final = {"good": "green", "uncertain": "yellow", None: "dim"}
BAD: Final = "bold red"
CELL_MAX: Final = 24
"""Widest a cell may be (a long tag code, a string value), so the columns after it stay."""


@dataclass(frozen=True, slots=True)
class Frame:
    """What one screen shows besides the picture."""

    source: str
    """Where the picture comes from: the agent's socket, or host:port."""
    interval_s: float
    unanswered_since: float | None = None
    """When the agent stopped answering (wall clock), while it does not; else None."""
    scroll: int = 0
    """The first line shown of what scrolls (every line after the header)."""


class Move(Enum):
    """What a key asks of the scrolled part (top/keys.py maps the keys)."""

    UP = auto()
    DOWN = auto()
    PAGE_UP = auto()
    PAGE_DOWN = auto()
    HOME = auto()
    END = auto()


@dataclass(frozen=True, slots=True)
class Row:
    cells: Sequence[str | Text]
    note: str | None = None
    """A line of words under the row (why it is not good)."""


def render(picture: Picture, frame: Frame, height: int | None = None) -> RenderableType:
    """The screen; with `height`, what scrolls cut to the lines that fit from `frame.scroll`
    and the key line saying which are shown."""
    top, body = _header_lines(picture, frame), _body(picture)
    keys = f"q quits; every {frame.interval_s:g} s from {frame.source}"
    if height is not None:
        room = _room(height, top)
        first = _clamped(frame.scroll, len(body), room)
        if len(body) > room:
            shown = min(len(body), first + room)
            keys = f"lines {first + 1}-{shown} of {len(body)}: arrows/PgUp/PgDn scroll; {keys}"
        body = body[first : first + room]
    return Group(*top, *body, _line(Text(keys, "dim")))


def scrolled(picture: Picture, frame: Frame, moves: Sequence[Move], height: int) -> Frame:
    """`frame` with its scroll moved as the keys ask, within what there is to show."""
    top, length = _header_lines(picture, frame), len(_body(picture))
    room = _room(height, top)
    steps = {Move.UP: -1, Move.DOWN: 1, Move.PAGE_UP: -room, Move.PAGE_DOWN: room}
    scroll = _clamped(frame.scroll, length, room)
    for move in moves:
        if move is Move.HOME:
            scroll = 0
        elif move is Move.END:
            scroll = length
        else:
            scroll += steps[move]
        scroll = _clamped(scroll, length, room)
    return dataclasses.replace(frame, scroll=scroll)


def _room(height: int, top: list[RenderableType]) -> int:
    """Lines left for what scrolls: the height less the header and the key line."""
    return max(1, height - len(top) - 1)


def _clamped(scroll: int, length: int, room: int) -> int:
    """`scroll` within 0 and the last full page: never past the end, never an empty screen."""
    return max(0, min(scroll, length - room))


def _header_lines(picture: Picture, frame: Frame) -> list[RenderableType]:
    """What stays at the top: the agent's health line, and a mark while it does not answer."""
    status = picture.status
    lines: list[RenderableType] = [_header(status["snapshot"], status["health"])]
    if frame.unanswered_since is not None:
        since = _clock(frame.unanswered_since)
        lines.append(_line(Text(f"no answer since {since}: the last picture, asked again", BAD)))
    return lines


def _body(picture: Picture) -> list[Text]:
    """Every line under the header: first what must be seen without scrolling (why the
    health is not ok, the devices, the active alarms, back-log and uplink), then the tags."""
    snapshot, tags = picture.status["snapshot"], picture.tags["tags"]
    return [
        *(_line(Text(f"  - {reason}")) for reason in picture.status["health"]["reasons"]),
        *_devices(snapshot["devices"]),
        *_alarms(tags, picture.tags["taken_ms"]),
        *_store_and_uplink(snapshot),
        Text(""),
        *_tags(tags),
    ]


def _header(snapshot: dict[str, Any], health: dict[str, Any]) -> Table:
    grid = Table.grid(expand=True)
    grid.add_column(no_wrap=True, overflow="ellipsis")
    grid.add_column(justify="right", no_wrap=True)
    title = Text(
        f"edge-agent {snapshot['version']} of gateway {snapshot['gateway']}, "
        f"up {duration(snapshot['uptime_s'])}: "
    )
    title.append(health["status"].upper(), HEALTH_STYLES.get(health["status"], BAD))
    if not snapshot["clock_synced"]:
        title.append("; clock NOT synchronised", "yellow")
    grid.add_row(title, Text(_clock(snapshot["taken_ms"] / 1000), "dim"))
    return grid


def _devices(devices: list[dict[str, Any]]) -> list[Text]:
    rows = []
    for device in devices:
        latency = device["latency"]
        average = (
            f"{1000 * latency['sum_s'] / latency['count']:.0f} ms" if latency["count"] else "-"
        )
        link = Text(device["link"], "green" if device["link"] == "up" else BAD)
        numbers = (device["polls"], device["errors"], device["reconnects"])
        cells = [device["name"], link, duration(device["link_for_s"]), *map(str, numbers)]
        rows.append(Row([*cells, average], device["reason"]))
    header = ("DEVICE", "LINK", "FOR", "POLLS", "FAILED", "RECONNECTS", "AVG POLL")
    return _section(header, rows, right={3, 4, 5, 6}, counted="devices")


def _tags(tags: list[dict[str, Any]]) -> list[Text]:
    rows = []
    for tag in tags:
        quality = tag["quality"]
        rows.append(
            Row(
                [
                    tag["tag"],
                    tag["text"],
                    tag["unit"] or "",
                    Text(quality or "not read", QUALITY_STYLES.get(quality, BAD)),
                    Text(" ".join(alarm["kind"] for alarm in tag["alarms"]), BAD),
                ],
                tag["reason"],
            )
        )
    return _section(("TAG", "VALUE", "UNIT", "QUALITY", "ALARMS"), rows, right={1}, counted="tags")


def _alarms(tags: list[dict[str, Any]], taken_ms: int) -> list[Text]:
    rows = []
    for tag in tags:
        unit = f" {tag['unit']}" if tag["unit"] else ""
        for alarm in tag["alarms"]:
            ago = duration((taken_ms - alarm["since_ms"]) / 1000)
            rows += [
                Row(
                    [
                        tag["tag"],
                        Text(alarm["kind"], BAD),
                        _number(alarm["value"], unit),
                        _number(alarm["limit"], unit),
                        f"{_clock(alarm['since_ms'] / 1000)} ({ago} ago)",
                    ]
                )
            ]
    if not rows:
        return [_line(Text("ACTIVE ALARMS none", "green")), Text("")]
    return _section(
        ("ACTIVE ALARM", "KIND", "VALUE", "LIMIT", "SINCE"), rows, right={2, 3}, counted="alarms"
    )


def _store_and_uplink(snapshot: dict[str, Any]) -> list[Text]:
    store, uplink = snapshot["store"], snapshot["uplink"]
    waiting = "nothing waits"
    if store["backlog_messages"]:
        waiting = f"{store['backlog_messages']} messages wait"
        if store["oldest_ms"] is not None:
            age = (snapshot["taken_ms"] - store["oldest_ms"]) / 1000
            waiting += f", oldest sampled {duration(age)} ago"
    backlog = Text(f"back-log  {waiting}; store {_size(store['bytes_on_disk'])} of ")
    backlog.append(_size(store["max_bytes"]))
    if store["write_error"]:
        backlog.append(f"; CANNOT WRITE: {store['write_error']}", BAD)
    since = duration(uplink["state_for_s"])
    link = Text("uplink    ")
    if uplink["connected"]:
        link.append(f"connected to {uplink['broker'] or 'the broker'} for {since}", "green")
    else:
        link.append(f"DOWN for {since}", BAD)
    link.append(f"; {uplink['in_flight']} in flight, {uplink['acked']} acked")
    if uplink["refused"]:
        link.append(f", {uplink['refused']} refused", "yellow")
    return [_line(backlog), _line(link)]


def _section(header: Sequence[str], rows: list[Row], right: set[int], counted: str) -> list[Text]:
    """Columns as wide as their widest cell (at most CELL_MAX), each row on one line, its
    note under it; a note that several rows share once after them, with how many (a clock
    not synchronised, a device down: one line, not one per tag); a blank line after."""
    table = [[_cell(cell) for cell in row.cells] for row in rows]
    heads = [Text(name, "bold") for name in header]
    widths = [max(len(cell) for cell in column) for column in zip(heads, *table, strict=True)]
    notes = Counter(row.note for row in rows if row.note)
    lines = [_join(heads, widths, right)]
    for row, cells in zip(rows, table, strict=True):
        lines.append(_join(cells, widths, right))
        if row.note and notes[row.note] == 1:
            lines.append(_line(Text(f"  {row.note}", "dim")))
    shared = [f"  {count} {counted}: {note}" for note, count in notes.items() if count > 1]
    return [*lines, *(_line(Text(line, "dim")) for line in shared), Text("")]


def _cell(cell: str | Text) -> Text:
    text = cell.copy() if isinstance(cell, Text) else Text(cell)
    text.truncate(CELL_MAX, overflow="ellipsis")
    return text


def _join(cells: list[Text], widths: list[int], right: set[int]) -> Text:
    line = Text()
    for index, (cell, width) in enumerate(zip(cells, widths, strict=True)):
        pad = " " * (width - len(cell))
        line.append_text(Text(pad) + cell if index in right else cell + Text(pad))
        line.append("  ")
    line.rstrip()
    return _line(line)


def _line(text: Text) -> Text:
    """One line, cut at the terminal's edge rather than wrapped."""
    text.no_wrap, text.overflow = True, "ellipsis"
    return text


def _number(value: object, unit: str) -> str:
    """A value or limit from the wire with its unit; a whole float without its `.0`."""
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value}{unit}"


def _size(size: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def _clock(epoch_s: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch_s))
