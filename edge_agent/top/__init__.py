"""`edge-agent top`: the running agent, live in the terminal, as `vector top` shows Vector.

Every second it asks the config's agent for /status and /tags (fetch.py: the
same documents the status page at / reads, taken from that agent only, as
`status` takes them) and redraws one screen
(view.py) on the terminal's alternate screen, so the shell's screen comes back
on exit; what does not fit the terminal's height scrolls with the arrows and
PgUp/PgDn. `q`, Ctrl-C or SIGTERM quits, always through the same exit (keys.py). An agent that stops
answering leaves its last picture on the screen, marked, and is asked again.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from typing import Final

from rich.console import Console
from rich.live import Live

from edge_agent.ask import Silent, Stranger
from edge_agent.top.fetch import Picture
from edge_agent.top.keys import Keys
from edge_agent.top.view import Frame, render, scrolled

__all__ = ["REFRESH_S", "Look", "watch"]

REFRESH_S: Final = 1.0

Look = Callable[[], Picture | Stranger | Silent]
"""Asks the agent once (fetch.look, bound to a config)."""


def watch(
    look: Look, *, once: bool = False, interval_s: float = REFRESH_S
) -> Stranger | Silent | None:
    """Show the agent until the viewer quits (with `once`, one screen printed); None once
    shown, or what answered instead of the agent at the start."""
    if once:
        return _print_once(look, interval_s)
    # From here on, Ctrl-C and SIGTERM end the view through its one exit, never mid-redraw.
    with Keys(sys.stdin) as keys:
        picture = look()
        if not isinstance(picture, Picture):
            return picture
        console, frame = Console(), Frame(picture.where, interval_s)
        with Live(console=console, screen=True, auto_refresh=False) as live:
            due = time.monotonic() + frame.interval_s  # the first picture is fresh
            while not keys.stopped:
                if time.monotonic() >= due:
                    picture, frame = _refreshed(look, picture, frame)
                    due = time.monotonic() + frame.interval_s
                live.update(render(picture, frame, console.height), refresh=True)
                moves = keys.wait(due - time.monotonic())
                frame = scrolled(picture, frame, moves, console.height)
    return None


def _print_once(look: Look, interval_s: float) -> Stranger | Silent | None:
    """One screen printed, as a pipe or a log gets it: no keys read, no screen taken."""
    picture = look()
    if not isinstance(picture, Picture):
        return picture
    Console().print(render(picture, Frame(picture.where, interval_s)))
    return None


def _refreshed(look: Look, picture: Picture, frame: Frame) -> tuple[Picture, Frame]:
    """The agent's new picture; the last one, marked, while it does not answer (or another
    answers in its place)."""
    latest = look()
    if not isinstance(latest, Picture):
        since = frame.unanswered_since or time.time()
        return picture, dataclasses.replace(frame, unanswered_since=since)
    return latest, dataclasses.replace(frame, unanswered_since=None)
