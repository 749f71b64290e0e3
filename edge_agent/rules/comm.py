"""The COMM alarm of a device: raised on every one of its tags once it has been
unreachable for `comm_alarm_after`, cleared on all of them when it answers.

The spec's alarm item names a tag, so a lost device raises one COMM per tag;
they are judged together and stored together, so they travel in one message.
The clock starts at the first failed read (at start-up too), and a device
that answers again before the time is up raises nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from edge_agent.model import AlarmEvent, AlarmKind, LinkState
from edge_agent.rules.alarms import AlarmBook


class CommJudge:
    def __init__(self, books: Sequence[AlarmBook], after_s: float) -> None:
        self._books = books
        self._after_ms = after_s * 1000
        self._down_since: int | None = None
        self._may_be_raised = True
        """A COMM may be active (raised, or restored at start): the next answer clears it.
        False while the device answers: then a poll costs no walk over its tags."""

    def judge(self, link: LinkState, now_ms: int) -> list[AlarmEvent]:
        events: list[AlarmEvent] = []
        if link is LinkState.UP:
            self._down_since = None
            if self._may_be_raised:
                self._may_be_raised = False
                for book in self._books:
                    events += book.clear(AlarmKind.COMM, now_ms, None)
            return events
        self._may_be_raised = True
        if self._down_since is None:
            self._down_since = now_ms
        if now_ms - self._down_since >= self._after_ms:
            for book in self._books:
                events += book.raise_(AlarmKind.COMM, now_ms, None)
        return events
