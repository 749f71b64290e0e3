"""The keyboard of `edge-agent top`: `q` quits, and waiting for it paces the refresh.

On a terminal the keys come one at a time, unechoed (cbreak mode, restored on
exit, whatever ends the view); Ctrl-C still sends SIGINT. Standard input that
is not a terminal (a pipe, /dev/null) is read as it is, and its end only
stops the listening: the view goes on until SIGINT or SIGTERM.
"""

from __future__ import annotations

import os
import select
import termios
import time
import tty
from types import TracebackType
from typing import Any, Final, TextIO

QUIT_KEYS: Final = frozenset(b"qQ")


class Keys:
    def __init__(self, stdin: TextIO) -> None:
        self._fd: int | None = stdin.fileno()
        self._saved: list[Any] | None = None

    def __enter__(self) -> Keys:
        if self._fd is not None and os.isatty(self._fd):
            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._saved is not None and self._fd is not None:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)

    def quit_within(self, seconds: float) -> bool:
        """Wait `seconds`; True as soon as a quit key comes."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._fd is None:
                time.sleep(left)
                break
            readable, _, _ = select.select([self._fd], [], [], left)
            if not readable:
                break
            typed = os.read(self._fd, 64)
            if not typed:
                self._fd = None  # the end of a pipe: nothing more will come
            elif QUIT_KEYS.intersection(typed):
                return True
        return False
