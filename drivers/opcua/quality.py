"""An OPC UA StatusCode -> the uplink's quality code.

| StatusCode | q |
|---|---|
| Good, Good* | 0 |
| Uncertain* (value kept) | 1 |
| BadSensorFailure, BadDeviceFailure | 3 (sensor fault) |
| the tag's node is wrong: BadNodeIdUnknown, BadNodeIdInvalid, BadTypeMismatch, ... | 4 (config) |
| every other Bad* (no communication, server busy, out of service, timeout ...) | 2 |

A wrong address is a configuration fault (q=4), not lost communication: the
technician must fix the tag, and waiting will not help.
"""

from __future__ import annotations

from asyncua import ua

from edge_agent.model import Quality

_SENSOR = frozenset({ua.StatusCodes.BadSensorFailure, ua.StatusCodes.BadDeviceFailure})
_CONFIG = frozenset(
    {
        ua.StatusCodes.BadNodeIdUnknown,
        ua.StatusCodes.BadNodeIdInvalid,
        ua.StatusCodes.BadAttributeIdInvalid,
        ua.StatusCodes.BadIndexRangeInvalid,
        ua.StatusCodes.BadIndexRangeNoData,
        ua.StatusCodes.BadTypeMismatch,
        ua.StatusCodes.BadNotReadable,
        ua.StatusCodes.BadUserAccessDenied,
        ua.StatusCodes.BadDataEncodingInvalid,
        ua.StatusCodes.BadDataEncodingUnsupported,
        ua.StatusCodes.BadNoMatch,
        ua.StatusCodes.BadBrowseNameInvalid,
        ua.StatusCodes.BadMonitoredItemFilterUnsupported,
        ua.StatusCodes.BadDeadbandFilterInvalid,
        ua.StatusCodes.BadFilterNotAllowed,
    }
)
_SEVERITY = 0xC0000000
_GOOD, _UNCERTAIN = 0x00000000, 0x40000000


def quality_of(code: int) -> Quality:
    """The quality a value with this StatusCode (its 32-bit value) has."""
    severity = code & _SEVERITY
    if severity == _GOOD:
        return Quality.GOOD
    if severity == _UNCERTAIN:
        return Quality.UNCERTAIN
    sub = code & 0xFFFF0000  # the low 16 bits are info bits (overflow, limits): not the cause
    if sub in _SENSOR:
        return Quality.SENSOR
    if sub in _CONFIG:
        return Quality.CONFIG
    return Quality.COMM


def status_name(code: int) -> str:
    """BadSensorFailure, or the code in hex when asyncua does not know it."""
    try:
        return str(ua.StatusCode(code & 0xFFFF0000).name)
    except (KeyError, ValueError, AttributeError):
        return f"0x{code:08X}"
