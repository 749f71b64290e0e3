"""`edge-agent top`: the running agent, live in the terminal, as `vector top` shows Vector.

Every second it asks the agent's HTTP server for /status and /tags (fetch.py:
the same documents the status page at / reads) and redraws one screen
(view.py) on the terminal's alternate screen, so the shell's screen comes back
on exit. `q`, Ctrl-C or SIGTERM quits, always through the same exit (keys.py). An agent that stops
answering leaves its last picture on the screen, marked, and is asked again.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Final

from rich.console import Console
from rich.live import Live

from edge_agent.config.service import Listen
from edge_agent.top.fetch import Picture, fetch
from edge_agent.top.keys import Keys
from edge_agent.top.view import Frame, render

__all__ = ["REFRESH_S", "watch"]

REFRESH_S: Final = 1.0


def watch(listen: Listen, *, once: bool = False, interval_s: float = REFRESH_S) -> bool:
    """Show the agent on `listen` until the viewer quits (with `once`, one screen printed);
    False when it does not answer at the start."""
    frame, console = Frame(f"{listen.host}:{listen.port}", interval_s), Console()
    # From here on, Ctrl-C and SIGTERM end the view through its one exit, never mid-redraw.
    with Keys(sys.stdin) as keys:
        picture = fetch(listen)
        if picture is None:
            return False
        if once:
            console.print(render(picture, frame))
            return True
        with Live(render(picture, frame), console=console, screen=True, auto_refresh=False) as live:
            while not keys.quit_within(frame.interval_s):
                picture, frame = _refreshed(listen, picture, frame)
                live.update(render(picture, frame), refresh=True)
    return True


def _refreshed(listen: Listen, picture: Picture, frame: Frame) -> tuple[Picture, Frame]:
    """The agent's new picture; the last one, marked, while it does not answer."""
    latest = fetch(listen)
    if latest is None:
        since = frame.unanswered_since or time.time()
        return picture, dataclasses.replace(frame, unanswered_since=since)
    return latest, dataclasses.replace(frame, unanswered_since=None)
