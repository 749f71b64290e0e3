"""Raw registers -> a tag's sample: scaling, 4-20 mA with NE43 fault bands, range, fault values."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.drivers.modbus.config import ModbusTag
from edge_agent.drivers.modbus.values import (
    compile_request,
    compile_slot,
    decode_batch,
    numeric_converter,
    pack_registers,
    to_sample,
)
from edge_agent.model import Quality, Sample

NOW = 1_700_000_000_000

# An S7 analogue input: 4 mA -> 0 counts, 20 mA -> 27648 counts.
S7 = {"raw_4ma": 0, "raw_20ma": 27648}


def tag(**fields: Any) -> ModbusTag:
    return ModbusTag.model_validate({"tag": "T", "hazard": "HZ01", "address": "ir:0", **fields})


def read(t: ModbusTag, *registers: int) -> Sample:
    return to_sample(t, list(registers), "ABCD", NOW)


def counts(milliamps: float, raw_4: float = 0, raw_20: float = 27648) -> int:
    return round(raw_4 + (milliamps - 4) * (raw_20 - raw_4) / 16)


GAS = {"type": "int16", "current": S7, "range": {"low": 0, "high": 100}}


@pytest.mark.parametrize(("milliamps", "value"), [(4, 0.0), (12, 50.0), (20, 100.0), (8, 25.0)])
def test_a_4_20ma_loop_maps_onto_the_instrument_range(milliamps: float, value: float) -> None:
    sample = read(tag(**GAS), counts(milliamps))
    assert (sample.value, sample.quality) == (pytest.approx(value, abs=0.01), Quality.GOOD)


@pytest.mark.parametrize("milliamps", [0, 2.0, 3.5, 21.5, 22.0])
def test_ne43_fault_bands_are_q3_with_no_value(milliamps: float) -> None:
    """Below 3.6 mA (wire break) or above 21 mA (sensor fault): q=3, v null."""
    raw = counts(milliamps)
    sample = read(tag(**GAS), raw & 0xFFFF)
    assert (sample.value, sample.quality) == (None, Quality.SENSOR)


@pytest.mark.parametrize("milliamps", [3.7, 3.9, 20.3, 20.9])
def test_between_the_fault_band_and_the_span_is_kept_as_uncertain(milliamps: float) -> None:
    """Outside 4-20 mA but not yet a fault: the value is kept (the rules make it q=1)."""
    sample = read(tag(**GAS), counts(milliamps) & 0xFFFF)
    assert sample.quality is Quality.GOOD
    assert isinstance(sample.value, float)
    assert not 0 <= sample.value <= 100


def test_a_module_that_counts_microamps_works_the_same() -> None:
    t = tag(
        type="uint16", current={"raw_4ma": 4000, "raw_20ma": 20000}, range={"low": 0, "high": 10}
    )
    assert read(t, 12000).value == 5.0
    assert read(t, 3000).quality is Quality.SENSOR


def test_raw_range_scaling_maps_linearly() -> None:
    t = tag(type="uint16", scale={"raw": [0, 4095], "eng": [-20, 80]})
    assert read(t, 0).value == -20.0
    assert read(t, 4095).value == 80.0


def test_multiplier_and_offset_scaling() -> None:
    t = tag(type="int16", scale={"multiplier": 0.1, "offset": -50})
    assert read(t, 209).value == pytest.approx(-29.1)


def test_a_device_fault_value_is_q3() -> None:
    t = tag(type="uint16", fault_values=[65535, 65534])
    assert read(t, 65535).quality is Quality.SENSOR
    assert read(t, 65535).value is None
    assert read(t, 100) == Sample("T", NOW, 100, Quality.GOOD)


def test_a_bit_of_a_register_is_a_bool() -> None:
    t = tag(address="hr:4.2", type="bool")
    assert read(t, 0b100).value is True
    assert read(t, 0b011).value is False


def test_a_string_reads_text() -> None:
    t = tag(type="string", length=3)
    assert read(t, 0x4754, 0x2D32, 0x3031).value == "GT-201"


def test_a_non_finite_float_is_refused() -> None:
    t = tag(type="float32")
    with pytest.raises(ValueError, match="not a finite number"):
        read(t, 0x7FC0, 0x0000)


def test_a_plain_tags_converter_holds_little_but_still_refuses_what_is_not_finite() -> None:
    # One converter stays per tag: the general one's dozen cells were 6 MB at 10,000 tags.
    convert = numeric_converter(tag(type="float32"))
    assert len(convert.__closure__ or ()) <= 3
    assert convert(21.5, NOW) == Sample("T", NOW, 21.5, Quality.GOOD)
    with pytest.raises(ValueError, match="float32 decodes to nan, not a finite number"):
        convert(float("nan"), NOW)


# --- the compiled path agrees with the reference ------------------------------------------

ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
NUMERIC = ("int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64")


@settings(max_examples=300, deadline=None)
@given(
    data_type=st.sampled_from(NUMERIC),
    order=st.sampled_from(ORDERS),
    lead=st.integers(0, 3),
    words=st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4),
    extras=st.sampled_from(["plain", "scale", "range", "current", "fault"]),
)
def test_the_compiled_decoder_gives_what_to_sample_gives(
    data_type: str, order: str, lead: int, words: list[int], extras: str
) -> None:
    """Same registers at any offset of a response -> the same sample, or the same refusal."""
    fields: dict[str, Any] = {"type": data_type, "byte_order": order}
    if extras == "scale":
        fields["scale"] = {"multiplier": 0.1, "offset": -3}
    elif extras == "range":
        fields["range"] = {"low": -1000, "high": 1000}
    elif extras == "current":
        fields |= {"current": S7, "range": {"low": 0, "high": 100}}
    elif extras == "fault":
        fields["fault_values"] = [words[0]]
    t = tag(**fields)
    own = words[: t.width]
    registers = [0x1234] * lead + own + [0xBEEF]
    decoder, swapped = compile_slot(t, "ABCD", lead)
    be, sw = pack_registers(registers, swapped)
    try:
        expected: Sample | str = to_sample(t, own, "ABCD", NOW)
    except ValueError as exc:
        expected = str(exc)
    try:
        actual: Sample | str = decoder(registers, be, sw, NOW)
    except ValueError as exc:
        actual = str(exc)
    assert actual == expected


@pytest.mark.parametrize("order", ORDERS)
def test_the_compiled_decoder_reads_bits_and_strings(order: str) -> None:
    bit = tag(address="hr:1.4", type="bool")
    text = tag(address="hr:1", type="string", length=2, byte_order=order)
    registers = [0, 0x4142, 0x4344]
    for t in (bit, text):
        decoder, swapped = compile_slot(t, "ABCD", 1)
        be, sw = pack_registers(registers, swapped)
        assert decoder(registers, be, sw, NOW) == to_sample(
            t, registers[1 : 1 + t.width], "ABCD", NOW
        )


@settings(max_examples=200, deadline=None)
@given(
    layout=st.lists(
        st.tuples(
            st.sampled_from(NUMERIC),
            st.sampled_from(ORDERS),
            st.integers(0, 3),  # gap before the tag, in registers
            st.sampled_from(["plain", "scale", "decimal", "range", "fault"]),
        ),
        min_size=1,
        max_size=8,
    ),
    seed=st.integers(0, 2**32),
)
def test_a_whole_response_decodes_as_each_tag_would_alone(
    layout: list[tuple[str, str, int, str]], seed: int
) -> None:
    """The batched struct decode of a response agrees with to_sample tag by tag."""
    rng = __import__("random").Random(seed)
    slots, start = [], 0
    for index, (data_type, order, gap, extras) in enumerate(layout):
        start += gap
        fields: dict[str, Any] = {"tag": f"T{index}", "type": data_type, "byte_order": order}
        if extras == "scale":
            fields["scale"] = {"multiplier": 0.5}
        elif extras == "decimal":  # fixed point: divided by 10**k rather than multiplied
            fields["scale"] = {"multiplier": rng.choice([0.1, 0.01, 0.001, 1e-6])}
        elif extras == "range":
            fields["range"] = {"low": 0, "high": 1e6}
        elif extras == "fault":
            fields["fault_values"] = [0]
        t = tag(**fields)
        slots.append((index, t, start))
        start += t.width
    registers = [rng.choice([0, 0x7FC0, 0xFFFF, rng.randrange(65536)]) for _ in range(start + 1)]
    decoder = compile_request(slots, "ABCD")
    be, sw = pack_registers(registers, decoder.swapped)
    out: list[Sample | None] = [None] * len(slots)
    refused: dict[int, str] = {}
    for batch in decoder.batches:
        data = sw if batch.swapped else be
        decode_batch(batch, data, NOW, out, lambda i, exc: refused.update({i: str(exc)}))
    for index, single in decoder.singles:
        out[index] = single(registers, be, sw, NOW)
    for index, t, at in slots:
        try:
            expected: Sample | str = to_sample(t, registers[at : at + t.width], "ABCD", NOW)
        except ValueError as exc:
            expected = str(exc)
        if isinstance(expected, str):
            assert refused.get(index) == expected
            assert out[index] == Sample.bad(t.tag, NOW, Quality.CONFIG)
        else:
            assert repr(out[index]) == repr(expected), "the same sample, floats to the last bit"


@pytest.mark.parametrize("data_type", ["int16", "uint16"])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 6, 9, 22])
def test_fixed_point_division_gives_what_to_sample_gives_across_16_bit_values(
    data_type: str, k: int
) -> None:
    """raw / 10**k (the batched path) equals to_sample's raw * 10**-k tidied, to the last bit,
    over every 7th 16-bit raw value (every value and every k from 1 to 22 were checked once)."""
    t = tag(type=data_type, scale={"multiplier": float(f"1e-{k}")})
    slots = [(i, t.model_copy(update={"tag": f"T{i}"}), i) for i in range(100)]
    decoder = compile_request(slots, "ABCD")
    (batch,) = decoder.batches
    assert batch.divisor == float(10**k), "the fixed-point path is the one under test"
    for first in range(0, 65536, 700):
        registers = [(first + 7 * i) % 65536 for i in range(100)]
        be, _ = pack_registers(registers, decoder.swapped)
        out: list[Sample | None] = [None] * 100
        decode_batch(batch, be, NOW, out, lambda i, exc: pytest.fail(str(exc)))
        for i, sample in enumerate(out):
            assert repr(sample) == repr(to_sample(slots[i][1], [registers[i]], "ABCD", NOW))
