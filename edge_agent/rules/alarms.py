"""The active alarms of one tag, and the events that change them.

Every judge of a tag (limits, FAULT, STUCK, ROC, COMM) decides *when*; the
book decides *what is said*: an occurrence is raised once with a fresh `id`
and cleared once with the same `id`, and asking to raise an active alarm or
to clear an inactive one says nothing. So a `raised` is always followed by
exactly one `cleared` of its `id`, whichever judge asks.

The book is also what survives a restart: the store keeps every raised event
until its cleared one is written, and `restore` puts them back, so an alarm
still active after a restart is not raised again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from edge_agent.model import AlarmEvent, AlarmKind, AlarmState, Value


def new_alarm_id() -> str:
    return uuid.uuid4().hex


class AlarmBook:
    def __init__(self, tag: str, hz: str, new_id: Callable[[], str] = new_alarm_id) -> None:
        self.tag = tag
        self.hz = hz
        self._new_id = new_id
        self._active: dict[AlarmKind, AlarmEvent] = {}

    @property
    def active(self) -> dict[AlarmKind, str]:
        """Active alarms of this tag: kind -> occurrence id."""
        return {kind: event.id for kind, event in self._active.items()}

    @property
    def raised(self) -> tuple[AlarmEvent, ...]:
        """The `raised` event of every active alarm: when, at what value, against what limit."""
        return tuple(self._active.values())

    def is_active(self, kind: AlarmKind) -> bool:
        return kind in self._active

    def raise_(
        self, kind: AlarmKind, ts_ms: int, value: Value, limit: float | None = None
    ) -> list[AlarmEvent]:
        """Raise `kind` unless it is active: a list of zero or one event."""
        if kind in self._active:
            return []
        event = AlarmEvent(
            self._new_id(), self.tag, self.hz, ts_ms, kind, AlarmState.RAISED, value, limit
        )
        self._active[kind] = event
        return [event]

    def clear(self, kind: AlarmKind, ts_ms: int, value: Value) -> list[AlarmEvent]:
        """Clear `kind` if it is active, with the id and limit it was raised with."""
        raised = self._active.pop(kind, None)
        if raised is None:
            return []
        return [
            AlarmEvent(
                raised.id, self.tag, self.hz, ts_ms, kind, AlarmState.CLEARED, value, raised.limit
            )
        ]

    def restore(self, raised: AlarmEvent) -> None:
        """Take back an alarm that was active when the agent last stopped."""
        self._active[raised.kind] = raised
