"""The seq high-water mark: durable, never lowered, survives a torn slot."""

from __future__ import annotations

from pathlib import Path

from edge_agent.store.hwm import HighWaterMark


def test_a_new_mark_reads_zero(tmp_path: Path) -> None:
    assert HighWaterMark(tmp_path / "hwm").value == 0


def test_the_mark_survives_reopening_and_never_goes_down(tmp_path: Path) -> None:
    mark = HighWaterMark(tmp_path / "hwm")
    mark.raise_to(10)
    mark.raise_to(25)
    mark.raise_to(7)
    mark.close()
    assert HighWaterMark(tmp_path / "hwm").value == 25


def test_a_torn_slot_falls_back_to_the_other_one(tmp_path: Path) -> None:
    path = tmp_path / "hwm"
    mark = HighWaterMark(path)
    mark.raise_to(10)  # slot 0
    mark.raise_to(11)  # slot 1
    mark.close()
    data = bytearray(path.read_bytes())
    data[16:20] = b"\xff\xff\xff\xff"  # spoil slot 1 as a torn write would
    path.write_bytes(bytes(data))
    reopened = HighWaterMark(path)
    assert reopened.value == 10
    reopened.raise_to(12)  # overwrites the spoiled slot, keeps the good one
    reopened.close()
    assert HighWaterMark(path).value == 12
