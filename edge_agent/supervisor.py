"""Every long-running task of the agent runs here, and none may end unnoticed.

A task that raises is logged (`task_failed`, with its name and traceback, then
once per change of reason and a summary every 5 minutes: logs.Repeats),
counted, and started again after a capped, jittered backoff. A task that
returns while it should run is a failure too. A task that ran for
`HEALTHY_AFTER_S` since its last start begins its backoff afresh.

- A core task (committer, uplink, clock guard) that fails `CORE_FAILURES`
  times within `CORE_WINDOW_S` is not restarted again: `on_fatal` is called,
  and the agent stops and exits non-zero, so systemd starts it cleanly.
- Any other task (a device's poller, statistics, the HTTP server) never
  escalates: it keeps restarting. Its `on_failure` hook (the runtime marks
  the device's tags q=2 and judges its COMM alarm) runs at every failure, and
  `on_restart` when it is started again.
- `stop` cancels a task and waits for it within a bound; a task that swallows
  its cancellation is logged (`task_stop_timed_out`) and left behind instead
  of hanging the stop: SIGTERM must end the agent within seconds.

The figures (failures per task) feed /metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Container, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

from edge_agent.backoff import Backoff
from edge_agent.logs import Repeats

log = structlog.get_logger(component="supervisor")

CORE_FAILURES: Final = 5
CORE_WINDOW_S: Final = 600.0
HEALTHY_AFTER_S: Final = 60.0
"""A task that ran this long since its last start is well again: its backoff starts afresh."""
RESTART_FIRST_S: Final = 1.0
RESTART_CAP_S: Final = 30.0

Work = Callable[[], Coroutine[Any, Any, None]]
"""Makes the coroutine a task runs; called again for each restart."""


class TaskEnded(Exception):
    """A supervised task returned while it should have run on."""


@dataclass
class _Task:
    name: str
    work: Work
    core: bool
    on_failure: Callable[[BaseException], None] | None
    on_restart: Callable[[], None] | None
    backoff: Backoff
    repeats: Repeats
    failures: int = 0
    recent: deque[float] = field(default_factory=deque)
    stopping: bool = False
    task: asyncio.Task[None] | None = None


class TaskSupervisor:
    def __init__(
        self,
        on_fatal: Callable[[str], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        restart_first_s: float = RESTART_FIRST_S,
        restart_cap_s: float = RESTART_CAP_S,
    ) -> None:
        self._on_fatal = on_fatal
        self._clock = clock
        self._first = restart_first_s
        self._cap = restart_cap_s
        self._tasks: dict[str, _Task] = {}

    def start(
        self,
        name: str,
        work: Work,
        *,
        core: bool = False,
        on_failure: Callable[[BaseException], None] | None = None,
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        """Run `work()` as the task `name` until `stop(name)`; a name runs once at a time."""
        if name in self._tasks:
            raise ValueError(f"task {name!r} is already supervised")
        entry = _Task(
            name,
            work,
            core,
            on_failure,
            on_restart,
            Backoff(self._first, self._cap),
            Repeats(log, "task", task=name),
        )
        self._tasks[name] = entry
        entry.task = asyncio.create_task(self._supervise(entry), name=name)

    def ending(self, name: str) -> None:
        """The task `name` is being told to end by itself (`uplink.stop()`): its return is
        then no failure."""
        entry = self._tasks.get(name)
        if entry is not None:
            entry.stopping = True

    def failures(self) -> dict[str, int]:
        """How often each task failed since the agent started (tasks still supervised)."""
        return {name: entry.failures for name, entry in self._tasks.items()}

    async def stop(self, name: str, within_s: float = 2.0) -> bool:
        """Cancel the task and wait up to `within_s`; False if it would not end in time."""
        entry = self._tasks.pop(name, None)
        if entry is None or entry.task is None:
            return True
        entry.stopping = True
        entry.task.cancel()
        done, _ = await asyncio.wait({entry.task}, timeout=within_s)
        if not done:
            log.error("task_stop_timed_out", task=name, waited_s=within_s)
            return False
        return True

    async def stop_all(self, within_s: float, *, but: Container[str] = ()) -> None:
        """Stop every task (`but` those named) at once, all within `within_s`."""
        names = [name for name in self._tasks if name not in but]
        await asyncio.gather(*(self.stop(name, within_s) for name in names))

    async def _supervise(self, entry: _Task) -> None:
        while True:
            started = self._clock()
            try:
                await entry.work()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure: Exception = exc
            else:
                if entry.stopping:
                    return
                failure = TaskEnded(f"the task {entry.name} returned")
            if self._clock() - started >= HEALTHY_AFTER_S:
                entry.backoff.reset()
                entry.repeats.recovered()
            if not self._failed(entry, failure):
                return
            await asyncio.sleep(entry.backoff.next())
            if entry.on_restart is not None:
                self._hook(entry, entry.on_restart)

    def _failed(self, entry: _Task, failure: Exception) -> bool:
        """Log, count and tell; False when the task is not to be restarted."""
        entry.failures += 1
        entry.repeats.failed(failure)
        if entry.on_failure is not None:
            on_failure = entry.on_failure
            self._hook(entry, lambda: on_failure(failure))
        if not entry.core:
            return True
        now = self._clock()
        entry.recent.append(now)
        while entry.recent and now - entry.recent[0] > CORE_WINDOW_S:
            entry.recent.popleft()
        if len(entry.recent) < CORE_FAILURES:
            return True
        reason = (
            f"core task {entry.name} failed {len(entry.recent)} times within "
            f"{CORE_WINDOW_S:.0f} s: {type(failure).__name__}: {failure}"
        )
        log.critical("task_gave_up", task=entry.name, reason=reason)
        self._on_fatal(reason)
        return False

    def _hook(self, entry: _Task, hook: Callable[[], None]) -> None:
        """Run a failure or restart hook; a hook that raises is logged, never propagated."""
        try:
            hook()
        except Exception:
            log.exception("task_hook_failed", task=entry.name)
