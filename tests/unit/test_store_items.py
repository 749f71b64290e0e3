"""The items the store packs: the same JSON `json.dumps` writes, and messages filled to
their byte budget without rendering what does not go in."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.model import Quality, Reading
from edge_agent.store import items

_NAMES = st.text(min_size=1, max_size=20)
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)


@given(
    tag=_NAMES,
    hz=_NAMES,
    ts=st.integers(min_value=0, max_value=2**45),
    value=_VALUES,
    quality=st.sampled_from(Quality),
    alarmed=st.booleans(),
)
def test_a_reading_item_is_what_json_dumps_writes(
    *, tag: str, hz: str, ts: int, value: object, quality: Quality, alarmed: bool
) -> None:
    reading = Reading(tag, hz, ts, value, quality)  # type: ignore[arg-type]  # any Value
    stored, flags = items.stored(reading, alarmed)
    text = items.reading_item(items.tag_prefix(tag, hz), ts, stored, flags)
    # An integer beyond 64 bits is kept, and sent, as its decimal text.
    wired = str(value) if isinstance(value, int) and stored == str(value) else value
    expected = {"tag": tag, "hz": hz, "ts": ts, "v": wired, "q": int(quality)}
    assert text == json.dumps(expected, separators=(",", ":"))


_ITEM_SIZES = st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=400)
_MESSAGE_BYTES = st.integers(min_value=items.ENVELOPE_BYTES, max_value=20_000)


def _texts(sizes: list[int]) -> list[str]:
    return ["x" * size for size in sizes]


@given(sizes=_ITEM_SIZES, max_bytes=_MESSAGE_BYTES)
def test_fit_takes_the_longest_prefix_that_fits_and_never_nothing(
    sizes: list[int], max_bytes: int
) -> None:
    taken = items.fit(_texts(sizes), max_bytes)
    payload = len("[" + ",".join(_texts(sizes[:taken])) + "]")
    assert taken >= 1
    assert taken == 1 or payload <= max_bytes - items.ENVELOPE_BYTES
    if taken < len(sizes):
        longer = len("[" + ",".join(_texts(sizes[: taken + 1])) + "]")
        assert longer > max_bytes - items.ENVELOPE_BYTES


@given(sizes=_ITEM_SIZES, max_bytes=_MESSAGE_BYTES)
def test_fitting_renders_at_most_a_chunk_beyond_what_it_takes(
    sizes: list[int], max_bytes: int
) -> None:
    rendered: list[int] = []

    def render(chunk: list[int]) -> list[str]:
        rendered.extend(chunk)
        return _texts(chunk)

    texts = items.fitting(sizes, render, max_bytes)

    assert texts == _texts(sizes[: items.fit(_texts(sizes), max_bytes)])
    assert len(rendered) < len(texts) + 64
