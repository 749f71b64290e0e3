"""Plain scalars as YAML 1.2 reads them: what an editor shows, and what the JSON Schema judges.

PyYAML implements YAML 1.1, whose plain scalars include words and forms that YAML
1.2's core schema (YAML 1.2.2, section 10.3.2) reads as text or as other numbers.
Editors read YAML 1.2: the YAML language server checks a file against
docs/config.schema.json as 1.2 data. The loader therefore reads every plain
scalar the 1.2 way, so that a file means the same to the agent, to the editor and
to the schema:

=============  ======================  ==================================
written        YAML 1.1 (PyYAML)       YAML 1.2, and so the loader
=============  ======================  ==================================
yes, on, Off   true / false            the text 'yes', 'on', 'Off'
1:30           90 (base 60)            the text '1:30'
1_000, 0b11    1000, 3                 the text
2024-05-01     a date                  the text
0o17, 1e3      the text                15, 1000.0
010            8 (octal)               refused: see `refusal`
=============  ======================  ==================================

A number with a leading zero is the one form the two versions read as two
different numbers. Picking either would let a file mean one thing to the agent
and another to a reader of the other version (or to this agent before it read
1.2), so the loader refuses it and says how to write it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import yaml

Scalar = None | bool | int | float | str

_CORE_SCHEMA: tuple[tuple[re.Pattern[str], Callable[[str], Scalar]], ...] = (
    (re.compile(r"^(?:~|null|Null|NULL|)$"), lambda _: None),
    (re.compile(r"^(?:true|True|TRUE)$"), lambda _: True),
    (re.compile(r"^(?:false|False|FALSE)$"), lambda _: False),
    (re.compile(r"^[-+]?[0-9]+$"), int),
    (re.compile(r"^0o[0-7]+$"), lambda text: int(text[2:], 8)),
    (re.compile(r"^0x[0-9a-fA-F]+$"), lambda text: int(text[2:], 16)),
    (re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$"), float),
    (re.compile(r"^[-+]?\.(?:inf|Inf|INF)$"), lambda text: float(text.replace(".", ""))),
    (re.compile(r"^\.(?:nan|NaN|NAN)$"), lambda _: math.nan),
)
"""YAML 1.2's core schema (YAML 1.2.2, 10.3.2) in its order: the first match decides."""
_LEADING_ZERO = re.compile(r"^[-+]?0[0-9]+$")

YAML11_BOOLEANS: dict[str, bool] = yaml.constructor.SafeConstructor.bool_values
"""The words YAML 1.1 reads as booleans (lower case), which YAML 1.2 reads as text."""


def read_plain(text: str) -> Scalar:
    """A plain (unquoted, untagged) scalar's value under YAML 1.2's core schema."""
    for pattern, value in _CORE_SCHEMA:
        if pattern.match(text):
            return value(text)
    return text


def refusal(text: str) -> str | None:
    """Why the loader refuses a plain scalar (a number with a leading zero); None if it does not."""
    if not _LEADING_ZERO.match(text):
        return None
    old, new = yaml.safe_load(text), read_plain(text)
    advice = f"write {new} if it is a number, or '{text}' in quotes if it is text"
    if old == new:  # 00001: both read 1, and the zeros a coil address needs are lost
        return f"{text} has a leading zero, which YAML drops (it reads {new}): {advice}"
    yaml11 = f"the text '{old}'" if isinstance(old, str) else f"{old} (octal)"
    return (
        f"{text} has a leading zero, so YAML 1.1 reads it as {yaml11} and YAML 1.2 "
        f"(editors) as {new}: {advice}"
    )
