"""The keys of `edge-agent top`: `q`, Ctrl-C or SIGTERM end it, arrows, PgUp/PgDn, Home/End
(or j/k, space/b, g/G, as in `less`) scroll it; waiting for them paces the refresh.

On a terminal the keys come one at a time, unechoed (cbreak mode, restored on
exit). Ctrl-C and SIGTERM do not raise in the middle of a redraw, which could
leave the terminal on the alternate screen: their handler only marks the stop,
and the signal's byte on a wake-up pipe (`signal.set_wakeup_fd`) ends the wait
at once. Standard input that is not a terminal (a pipe, /dev/null) is read as
it is, and its end only stops the listening.
"""

from __future__ import annotations

import os
import select
import signal
import termios
import time
import tty
from types import FrameType, TracebackType
from typing import Any, Final, TextIO

from edge_agent.top.view import Move

QUIT_KEYS: Final = frozenset(b"qQ")
MOVES: Final = {
    b"\x1b[A": Move.UP, b"k": Move.UP,
    b"\x1b[B": Move.DOWN, b"j": Move.DOWN,
    b"\x1b[5~": Move.PAGE_UP, b"b": Move.PAGE_UP,
    b"\x1b[6~": Move.PAGE_DOWN, b" ": Move.PAGE_DOWN,
    b"\x1b[H": Move.HOME, b"\x1b[1~": Move.HOME, b"g": Move.HOME,
    b"\x1b[F": Move.END, b"\x1b[4~": Move.END, b"G": Move.END,
}  # fmt: skip
"""The keys that scroll, as a terminal sends them (xterm's and the VT220's sequences)."""
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


class Keys:
    def __init__(self, stdin: TextIO) -> None:
        self._fd: int | None = stdin.fileno()
        self._saved_modes: list[Any] | None = None
        self._stopped = False
        self._wake_read, self._wake_write = os.pipe()
        self._saved_handlers: list[Any] = []
        self._saved_wakeup = -1

    def __enter__(self) -> Keys:
        os.set_blocking(self._wake_write, False)
        self._saved_wakeup = signal.set_wakeup_fd(self._wake_write)
        self._saved_handlers = [signal.signal(sig, self._stop) for sig in STOP_SIGNALS]
        if self._fd is not None and os.isatty(self._fd):
            self._saved_modes = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._saved_modes is not None and self._fd is not None:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved_modes)
        for sig, handler in zip(STOP_SIGNALS, self._saved_handlers, strict=True):
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._saved_wakeup)
        os.close(self._wake_read)
        os.close(self._wake_write)

    @property
    def stopped(self) -> bool:
        """A quit key or a stop signal came."""
        return self._stopped

    def wait(self, seconds: float) -> list[Move]:
        """Wait at most `seconds`; at once with the moves of the keys typed, or when a quit key
        or a stop signal comes (`stopped`)."""
        deadline = time.monotonic() + seconds
        while not self._stopped and (left := deadline - time.monotonic()) > 0:
            watched = [self._wake_read] if self._fd is None else [self._wake_read, self._fd]
            readable, _, _ = select.select(watched, [], [], left)
            if self._wake_read in readable:
                os.read(self._wake_read, 64)  # the signal's byte; its handler marked the stop
            if self._fd in readable:
                moves = self._keys(os.read(self._fd, 64))
                if moves:
                    return moves
        return []

    def _keys(self, typed: bytes) -> list[Move]:
        """The moves in what was typed (several keys may come in one read); marks a quit."""
        if not typed:
            self._fd = None  # the end of a pipe: nothing more will come
        moves = []
        while typed:
            if typed[0] in QUIT_KEYS:
                self._stopped = True
            known = next((key for key in MOVES if typed.startswith(key)), None)
            if known is None:
                typed = typed[1:]  # a key that does nothing, or a byte of one
                continue
            moves.append(MOVES[known])
            typed = typed[len(known) :]
        return moves

    def _stop(self, signum: int, stack: FrameType | None) -> None:
        self._stopped = True
