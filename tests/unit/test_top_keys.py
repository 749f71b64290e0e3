"""`edge-agent top`'s keys, typed into a pipe as a terminal would send them."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from edge_agent.top.keys import Keys
from edge_agent.top.view import Move


@pytest.fixture
def typed() -> Iterator[tuple[Keys, int]]:
    """Keys reading a pipe, and the pipe's end to type into."""
    read, write = os.pipe()
    with os.fdopen(read) as stdin, Keys(stdin) as keys:
        yield keys, write
    os.close(write)


def test_keys_typed_together_are_each_a_move(typed: tuple[Keys, int]) -> None:
    keys, write = typed
    os.write(write, b"jj\x1b[6~\x1b[Ak G\x1b[H")
    assert keys.wait(1.0) == [
        Move.DOWN, Move.DOWN, Move.PAGE_DOWN, Move.UP, Move.UP, Move.PAGE_DOWN, Move.END,
        Move.HOME,
    ]  # fmt: skip
    assert not keys.stopped


def test_q_stops_and_an_unknown_key_moves_nothing(typed: tuple[Keys, int]) -> None:
    keys, write = typed
    os.write(write, b"x\x1b[C")
    assert keys.wait(0.2) == []
    assert not keys.stopped
    os.write(write, b"q")
    assert keys.wait(5.0) == []
    assert keys.stopped
