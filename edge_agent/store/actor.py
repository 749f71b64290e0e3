"""The store's own thread: it owns the engine (and so the SQLite connection) and runs its jobs.

The event loop hands work over as jobs and awaits their results; it never
touches SQLite or waits on an fsync itself. Jobs run one at a time, the most
urgent first, in the order given within one urgency:

- URGENT: a commit with alarm events in it, and the close;
- NORMAL: commits, packing for the uplink, reads the runtime asks for;
- IDLE: housekeeping steps (maintenance.py), each bounded, so an alarm's commit
  waits for at most one step.

After each job the thread reads the store's figures (a few indexed reads) and
hands them to the loop together with the result, so the loop always has a
fresh, O(1) account of what waits without asking, and whoever awaited a job
sees the figures it left.

Hazard: a job that raises (a bug) fails its own future only; the thread goes
on with the next job.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from edge_agent.store.engine import Engine, Figures

log = structlog.get_logger(component="store")

T = TypeVar("T")


class Urgency(enum.IntEnum):
    URGENT = 0
    NORMAL = 1
    IDLE = 2


_Job = tuple[Callable[[Engine], Any], "asyncio.Future[Any]"]
_STOP = 99


class Actor:
    def __init__(self, name: str, on_figures: Callable[[Figures], None]) -> None:
        self._name = name
        self._on_figures = on_figures
        self._jobs: queue.PriorityQueue[tuple[int, int, _Job | None]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._engine: Engine | None = None

    async def start(self, open_engine: Callable[[], Engine]) -> None:
        """Start the thread and open the engine on it; raises what opening raises."""
        self._loop = asyncio.get_running_loop()
        opened: asyncio.Future[Engine] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._serve, args=(open_engine, opened), name=self._name, daemon=True
        )
        self._thread.start()
        self._engine = await opened

    async def call(self, urgency: Urgency, work: Callable[[Engine], T]) -> T:
        """Run `work(engine)` on the store's thread and return its result."""
        assert self._loop is not None, "start() first"
        future: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put((urgency, next(self._order), (work, future)))
        return await future

    async def stop(self, close: Callable[[Engine], None]) -> None:
        """Run `close`, then let the thread end (a daemon: it holds nothing after `close`)."""
        await self.call(Urgency.URGENT, close)
        self._jobs.put((_STOP, next(self._order), None))

    def _serve(self, open_engine: Callable[[], Engine], opened: asyncio.Future[Engine]) -> None:
        try:
            engine = open_engine()
        except BaseException as exc:
            self._call_soon(self._settle, opened, None, exc, None)
            return
        self._call_soon(self._settle, opened, engine, None, self._figures(engine))
        while True:
            _, _, job = self._jobs.get()
            if job is None:
                return
            work, future = job
            try:
                result, error = work(engine), None
            except Exception as exc:  # a bug in one job: its caller hears of it, nobody else
                result, error = None, exc
            self._call_soon(self._settle, future, result, error, self._figures(engine))

    def _figures(self, engine: Engine) -> Figures | None:
        if engine.closed:
            return None
        try:
            return engine.figures()
        except Exception:
            log.exception("store_figures_failed")
            return None

    def _settle(
        self,
        future: asyncio.Future[Any],
        result: object,
        error: BaseException | None,
        figures: Figures | None,
    ) -> None:
        """On the loop: the figures first, so whoever awaited the job sees them."""
        if figures is not None:
            self._on_figures(figures)
        if future.done():
            return  # its caller stopped waiting (cancelled)
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def _call_soon(self, callback: Callable[..., None], *args: object) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            self._loop.call_soon_threadsafe(callback, *args)
