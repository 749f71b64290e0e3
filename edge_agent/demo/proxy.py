"""A TCP proxy for fault tests and the demo: it forwards, goes silent, or plays a slow WAN.

It runs its own asyncio loop in a daemon thread, so synchronous tests drive
it with plain calls that take effect before they return.

- `pause()` black-holes the link: connections stay open, nothing is read or
  forwarded either way (the kernel buffers fill as on a dead route), and new
  connections are accepted but held. `resume()` forwards what waited, as TCP
  would deliver it once a route comes back.
- `throttle(rate, delay)`: at most `rate` bytes/s in each direction, every
  chunk delayed by `delay` seconds (one-way latency). `throttle()` lifts both.
- `reset()` drops every connection at once (a NAT or firewall that forgot them).

Hazard: it is a test tool. It binds loopback only and keeps at most a few
chunks per direction in memory; it is not meant to be fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from edge_agent.demo.broker import free_port

_CHUNK = 16 * 1024
_QUEUE = 8  # chunks held per direction before the reader stops reading


@dataclass
class ProxyStats:
    accepted: int = 0
    """Connections accepted since start."""
    open: int = 0
    """Connections open now."""
    bytes_up: int = 0
    """Bytes forwarded from clients to the target."""
    bytes_down: int = 0
    """Bytes forwarded from the target to clients."""


class Proxy:
    """Listens on 127.0.0.1:`port` and forwards every connection to `target_host`:`target_port`."""

    def __init__(
        self, target_port: int, target_host: str = "127.0.0.1", port: int | None = None
    ) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self.stats = ProxyStats()
        self._rate: float | None = None
        self._delay = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="proxy", daemon=True)
        self._forwarding = asyncio.Event()
        self._connections: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    # -- control, from any thread ------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._call(self._start())

    def stop(self) -> None:
        """Close the listener and every connection; the proxy cannot be started again."""
        if not self._thread.is_alive():
            return
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def pause(self) -> None:
        """Stop forwarding, without closing anything: a black-holed link."""
        self._call(self._set_forwarding(on=False))

    def resume(self) -> None:
        """Forward again, starting with whatever waited."""
        self._call(self._set_forwarding(on=True))

    def throttle(self, rate: float | None = None, delay: float = 0.0) -> None:
        """At most `rate` bytes/s each way (None: no limit), each chunk `delay` s late."""
        self._rate, self._delay = rate, delay

    def reset(self) -> None:
        """Drop every open connection."""
        self._call(self._reset())

    @property
    def paused(self) -> bool:
        return not self._forwarding.is_set()

    def __enter__(self) -> Proxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- on the proxy's loop -----------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self) -> None:
        self._forwarding.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._reset()

    async def _set_forwarding(self, *, on: bool) -> None:
        if on:
            self._forwarding.set()
        else:
            self._forwarding.clear()

    async def _reset(self) -> None:
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.stats.accepted += 1
        self.stats.open += 1
        try:
            await self._forwarding.wait()  # a black hole lets no connection through either
            target_r, target_w = await asyncio.open_connection(*self.target)
            try:
                up = asyncio.create_task(self._pipe(client_r, target_w, up=True))
                down = asyncio.create_task(self._pipe(target_r, client_w, up=False))
                try:
                    await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    up.cancel()
                    down.cancel()
                    await asyncio.gather(up, down, return_exceptions=True)
            finally:
                _close(target_w)
        except OSError:
            pass  # the target is down: the client sees its connection closed
        except asyncio.CancelledError:
            pass  # reset() or stop(): this connection task is all there is to end
        finally:
            _close(client_w)
            self.stats.open -= 1
            self._connections.discard(task)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: bool
    ) -> None:
        """Copy one direction until end of file, honouring pause, latency and rate."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUE)
        feeder = asyncio.create_task(self._read(reader, queue))
        try:
            while True:
                arrived, data = await queue.get()
                if not data:
                    return
                await asyncio.sleep(max(arrived + self._delay - time.monotonic(), 0.0))
                for piece in self._slices(data):
                    await self._forwarding.wait()
                    if self._rate:
                        await asyncio.sleep(len(piece) / self._rate)
                        await self._forwarding.wait()
                    writer.write(piece)
                    await writer.drain()
                    if up:
                        self.stats.bytes_up += len(piece)
                    else:
                        self.stats.bytes_down += len(piece)
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await feeder

    def _slices(self, data: bytes) -> list[bytes]:
        """A throttled link delivers a trickle (20 slices a second), not a late burst."""
        size = max(1, int(self._rate / 20)) if self._rate else len(data)
        return [data[i : i + size] for i in range(0, len(data), size)]

    async def _read(
        self, reader: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes]]
    ) -> None:
        with contextlib.suppress(OSError):
            while True:
                await self._forwarding.wait()
                rate = self._rate
                size = _CHUNK if not rate else max(1, min(_CHUNK, int(rate / 20)))
                data = await reader.read(size)
                await queue.put((time.monotonic(), data))
                if not data:
                    return
        await queue.put((time.monotonic(), b""))


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, RuntimeError):
        writer.transport.abort()
