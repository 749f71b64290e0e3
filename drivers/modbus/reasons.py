"""Why a Modbus read gave no value, in the words of the protocol: for logs and `read`."""

from __future__ import annotations

from pymodbus.exceptions import ConnectionException, ModbusIOException

EXCEPTION_NAMES = {
    1: "ILLEGAL FUNCTION",
    2: "ILLEGAL DATA ADDRESS",
    3: "ILLEGAL DATA VALUE",
    4: "SERVER DEVICE FAILURE",
    5: "ACKNOWLEDGE",
    6: "SERVER DEVICE BUSY",
    8: "MEMORY PARITY ERROR",
    10: "GATEWAY PATH UNAVAILABLE",
    11: "GATEWAY TARGET DEVICE FAILED TO RESPOND",
}
"""The exception codes of the Modbus application protocol (v1.1b3, section 7)."""

RETRY_LATER = frozenset({5, 6})
"""The device took the request but cannot answer yet: ask again shortly."""

UNIT_UNREACHABLE = frozenset({10, 11})
"""A gateway answers for a unit it cannot reach: as good as silence from that unit."""


def refused(code: int) -> str:
    """`exception 2 (ILLEGAL DATA ADDRESS)`; an unknown code keeps its number."""
    return f"exception {code} ({EXCEPTION_NAMES.get(code, 'not in the Modbus specification')})"


def failure(exc: BaseException) -> str:
    """What a failed exchange means on site: a timeout, a bad frame, or the connection."""
    if isinstance(exc, TimeoutError):
        return f"timeout: {exc}" if str(exc) else "timeout"
    if isinstance(exc, ModbusIOException):
        return f"CRC/frame error: {_message(exc)}"
    if isinstance(exc, ConnectionException | OSError):
        return f"connection: {_message(exc)}"
    return f"unexpected {type(exc).__name__}: {exc}"


def _message(exc: BaseException) -> str:
    # pymodbus prefixes its exceptions' text with "Modbus Error: [Kind] ".
    text = str(exc)
    return text.rsplit("] ", 1)[-1].strip() or type(exc).__name__
