"""Log setup: JSON lines for journald and files, a readable console on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure(level: str = "info", stream: Any = None) -> None:
    """Configure structlog once, at start-up; every log line names its component."""
    stream = stream or sys.stderr
    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if stream.isatty()
        else structlog.processors.JSONRenderer(ensure_ascii=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    # pymodbus logs every failed connect and timeout itself; the drivers log each
    # link change once, with the device it is about, so its own lines are noise.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
