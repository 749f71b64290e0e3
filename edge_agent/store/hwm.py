"""A durable high-water mark of `seq`, kept outside the SQLite store.

Why: with `synchronous=NORMAL` a power loss may roll the store back, and a
store that fails its integrity check is set aside and started anew. Either
way the store's own counter may fall below numbers the platform has already
seen. The mark is written and flushed to disk before any message with a
higher `seq` is first published, so it is never below a published `seq`;
on opening, numbering resumes above it.

Layout (do not change without a new file name): two 16-byte slots, each
`<Q seq><I crc32(seq bytes)><4 zero bytes>`, written alternately in place, so
a torn write spoils at most one slot; the valid slot with the higher `seq`
wins. A file with no valid slot reads as 0.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

_SLOT = struct.Struct("<QI4x")


def _encode(seq: int) -> bytes:
    raw = struct.pack("<Q", seq)
    return _SLOT.pack(seq, zlib.crc32(raw))


def _decode(slot: bytes) -> int | None:
    seq, crc = _SLOT.unpack(slot)
    return seq if zlib.crc32(struct.pack("<Q", seq)) == crc else None


class HighWaterMark:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
        data = os.pread(self._fd, 2 * _SLOT.size, 0).ljust(2 * _SLOT.size, b"\0")
        slots = [_decode(data[i : i + _SLOT.size]) for i in (0, _SLOT.size)]
        valid = [(seq, index) for index, seq in enumerate(slots) if seq is not None]
        self.value, last = max(valid, default=(0, 1))
        self._next_slot = 1 - last

    def raise_to(self, seq: int) -> None:
        """Durably record that numbers up to `seq` may be published; never lowers the mark."""
        if seq <= self.value:
            return
        os.pwrite(self._fd, _encode(seq), self._next_slot * _SLOT.size)
        os.fdatasync(self._fd)
        self.value = seq
        self._next_slot = 1 - self._next_slot

    def close(self) -> None:
        os.close(self._fd)
