"""A tiny HTTP/1.1 server on the event loop: /metrics, /healthz, /status, /tags and /.

API (the runtime runs it under its task supervisor when `metrics.enabled`):

    server = StatusServer(host, port, take_snapshot, HealthLimits(...), take_tags=...)
    await server.run()          # serves until cancelled; raises when it cannot listen
    await server.start()        # or by hand: False (and logged) when the address is taken
    server.port                 # the bound port (useful with port 0)
    server.handle               # answers one connection; the local socket uses it too
    ...
    await server.close()

`take_snapshot()` (and `take_tags()` for /tags) is called on the event loop for
every request, so it must be quick and must not await. Routes (GET or HEAD; anything else is 405):

- /metrics: Prometheus text format (metrics.py).
- /healthz: {"status": "ok"|"degraded"|"failing", "reasons": [...]}; HTTP 200,
  or 503 when failing (health.py has the rules).
- /status:  {"snapshot": {...}, "health": {...}} for `edge-agent status`.
- /tags:    every tag's value, quality and why, and active alarms (snapshot.tags_json),
  for `edge-agent top` and the status page.
- /:        the status page (page.html): static HTML whose script reads /status and
  /tags every second.

Why not a framework: a few read-only routes on loopback. Each connection
answers one request and closes; a client that does not send its request
within REQUEST_TIMEOUT_S is dropped, so a stuck scraper holds nothing.
A failed bind does not stop the agent: monitoring must never cost readings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from importlib import resources
from typing import Final

import structlog

from edge_agent.service.health import HealthLimits, judge
from edge_agent.service.metrics import CONTENT_TYPE, exposition
from edge_agent.service.snapshot import Snapshot, TagSnapshot, tags_json

log = structlog.get_logger(component="http")

REQUEST_TIMEOUT_S: Final = 5.0
MAX_HEADER_LINES: Final = 100
JSON_TYPE: Final = "application/json"
HTML_TYPE: Final = "text/html; charset=utf-8"
PAGE: Final = resources.files(__package__).joinpath("page.html").read_bytes()
REASONS: Final = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip


class StatusServer:
    def __init__(
        self,
        host: str,
        port: int,
        take_snapshot: Callable[[], Snapshot],
        limits: HealthLimits,
        *,
        take_tags: Callable[[], tuple[TagSnapshot, ...]] = tuple,
    ) -> None:
        self._host = host
        self._port = port
        self._take_snapshot = take_snapshot
        self._take_tags = take_tags
        self._limits = limits
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> bool:
        try:
            self._server = await asyncio.start_server(self.handle, self._host, self._port)
        except OSError as exc:
            log.error("metrics_listen_failed", listen=f"{self._host}:{self._port}", error=str(exc))
            return False
        log.info("metrics_listening", listen=f"{self._host}:{self.port}")
        return True

    async def run(self) -> None:
        """Serve until cancelled. A failed bind raises: the supervisor tries again after its
        backoff, and polling goes on meanwhile."""
        if not await self.start():
            raise OSError(f"cannot listen on {self._host}:{self._port} (see metrics.listen)")
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one connection: on this server's port, or on the local socket (local.py)."""
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                method, path = await _read_request(reader)
            status, content_type, body = self._respond(method, path)
            head = (
                f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, ValueError, ConnectionError):
            pass  # a broken or idle client: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, JSON_TYPE, _json({"error": "only GET and HEAD"})
        route = path.split("?", 1)[0]
        if route == "/":
            return 200, HTML_TYPE, PAGE
        try:
            return self._answer(route)
        except Exception:
            log.exception("snapshot_failed")
            return 500, JSON_TYPE, _json({"error": "the snapshot failed; see the agent's log"})

    def _answer(self, route: str) -> tuple[int, str, bytes]:
        """The JSON and text routes, from the agent's snapshots."""
        if route == "/tags":
            return 200, JSON_TYPE, _json(tags_json(time.time_ns() // 1_000_000, self._take_tags()))
        if route not in ("/metrics", "/healthz", "/status"):
            return 404, JSON_TYPE, _json({"error": "try /, /metrics, /healthz, /status or /tags"})
        snapshot = self._take_snapshot()
        health = judge(snapshot, self._limits)
        if route == "/metrics":
            return 200, CONTENT_TYPE, exposition(snapshot, health)
        if route == "/healthz":
            return health.http_status, JSON_TYPE, _json(health.as_json())
        return 200, JSON_TYPE, _json({"snapshot": snapshot.as_json(), "health": health.as_json()})


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    """The method and target of the request line; the headers are read and ignored."""
    request_line = (await reader.readline()).decode("latin-1").split()
    if len(request_line) != 3:
        raise ValueError("not an HTTP request line")
    for _ in range(MAX_HEADER_LINES):
        if (await reader.readline()) in (b"\r\n", b"\n", b""):
            return request_line[0], request_line[1]
    raise ValueError("too many header lines")


def _json(data: object) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode()
