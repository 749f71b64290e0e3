"""Log setup: JSON lines for journald and files, a readable console on a terminal.

Under systemd each line starts with its syslog priority, `<4>` for a warning,
which journald strips and keeps as the entry's priority, so that
`journalctl -p warning` filters; only when stderr is the journal's own stream
(`JOURNAL_STREAM` names its device and inode). An inherited variable never
puts the prefix into a file or a pipe: there it would corrupt the JSON.

Also the two things every log line of a long-running agent needs:

- `Repeats`: a failure that recurs on every poll logs one line when it starts,
  one when its reason changes, one when it recovers, and in between a summary
  every `summary_every_s` ("still failing, 3000 times in the last 5 min");
  its traceback at most once per state change, never once per poll.
- `redact_secrets`, a structlog processor (configured by `configure`): values
  of keys that name a secret (password, passwd, secret, token, key material)
  become "[redacted]", as does every occurrence of a secret registered with
  `register_secret` (the runtime registers each credential it reads) and any
  PEM private key or URL password, anywhere in the line, tracebacks included.

Hazard: the registered secrets are process-global state, kept for the life of
the process (a reload may drop a credential from the config, but its old
value must stay out of the logs).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any, Final

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

REDACTED: Final = "[redacted]"
SUMMARY_EVERY_S: Final = 300.0
TALLY_EVERY_S: Final = 60.0
"""How often a `Tally` sums what it counted."""
MIN_SECRET_LENGTH: Final = 4
"""Shorter registered secrets are still redacted under secret keys, but not searched
for in text: a 2-character password would blank out every number containing it."""

_SECRET_KEY = re.compile(
    r"(^|_)(pass(word|wd|phrase)?|secret|token|credentials?|psk|(private_|api_)?key)$", re.I
)
_SECRET_TEXT = [
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S),
    re.compile(r"(?<=://)[^/@\s:]*:[^/@\s]*(?=@)"),  # user:password@ in a URL
]
_secrets: set[str] = set()

SYSLOG_PRIORITY: Final = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}
"""A line's syslog priority by its level (RFC 5424), as journald reads it from `<N>`."""


def configure(level: str = "info", stream: Any = None) -> None:
    """Configure structlog once, at start-up; every log line names its component."""
    stream = stream or sys.stderr
    # journald's stream is never a terminal: only JSON lines carry the priority.
    serializer = _after_priority if is_journal_stream(stream) else json.dumps
    renderer: Processor = (
        structlog.dev.ConsoleRenderer()
        if stream.isatty()
        else structlog.processors.JSONRenderer(serializer, ensure_ascii=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,  # after the traceback became text: it is searched too
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    # pymodbus logs every failed connect and timeout itself; the drivers log each
    # link change once, with the device it is about, so its own lines are noise.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def is_journal_stream(stream: Any) -> bool:
    """Whether `stream` is the one systemd connected to the journal: `JOURNAL_STREAM`
    ("DEVICE:INODE") names the file it opened, which a pipe or file the process was
    given instead, with the variable inherited, is not."""
    expected = os.environ.get("JOURNAL_STREAM")
    if not expected:
        return False
    try:
        status = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no file descriptor (a StringIO), or closed
        return False
    return expected == f"{status.st_dev}:{status.st_ino}"


def _after_priority(event: EventDict, **options: Any) -> str:
    """`json.dumps`, after the line's syslog priority: `<4>{...}`."""
    priority = SYSLOG_PRIORITY.get(event.get("level", ""), SYSLOG_PRIORITY["info"])
    return f"<{priority}>{json.dumps(event, **options)}"


def register_secret(value: str) -> None:
    """Never log `value` (a password, a token read from a credential file)."""
    if value:
        _secrets.add(value)


def redact_secrets(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """The structlog processor: see the module docstring for what is redacted."""
    return {key: _redact(key, value) for key, value in event.items()}


def _redact(key: str, value: Any) -> Any:
    if _SECRET_KEY.search(key) and value is not None:
        return REDACTED
    return _redact_value(value)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, MutableMapping):
        return {k: _redact(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_redact_value(item) for item in value]
    if isinstance(value, BaseException):
        return _redact_text(f"{type(value).__name__}: {value}")
    return value


def _redact_text(text: str) -> str:
    for pattern in _SECRET_TEXT:
        text = pattern.sub(REDACTED, text)
    # Longest first, so a secret containing a shorter one is replaced whole.
    for secret in sorted(_secrets, key=len, reverse=True):
        if len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, REDACTED)
    return text


class Tally:
    """Logs an event that may come many times a second (a missed poll deadline) as one
    line a minute.

    For `Tally(log, "poll_deadlines_missed", device="plc-1")`: the first occurrence
    after a quiet spell at once (`poll_deadlines_missed missed=N`), then one line per
    `every_s` summing what came meanwhile (`missed=N times=K window_s=60`). A window
    with nothing in it logs nothing, and the occurrence after it is logged at once.
    `tick()` closes a window when nothing else happens: call it on every pass.
    """

    def __init__(
        self,
        logger: FilteringBoundLogger,
        event: str,
        every_s: float = TALLY_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        counted: str = "missed",
        **context: Any,
    ) -> None:
        """`counted` names the count in the line (`missed=N`)."""
        self._log = logger.bind(**context)
        self._event = event
        self._counted = counted
        self._every_s = every_s
        self._clock = clock
        self._window_start: float | None = None
        """None while quiet: the next occurrence is logged at once."""
        self._count = self._times = 0

    def add(self, count: int) -> None:
        now = self._clock()
        if self._window_start is None:
            self._window_start = now
            self._log.warning(self._event, **{self._counted: count})
            return
        self._count += count
        self._times += 1
        self.tick(now)

    def tick(self, now: float | None = None) -> None:
        if self._window_start is None:
            return
        now = self._clock() if now is None else now
        window = now - self._window_start
        if window < self._every_s:
            return
        if not self._times:
            self._window_start = None
            return
        self._log.warning(
            self._event,
            **{self._counted: self._count},
            times=self._times,
            window_s=round(window),
        )
        self._window_start, self._count, self._times = now, 0, 0


class Repeats:
    """Rate-limits one recurring failure (of one device, one broker...) to its state changes.

    Lines, for `Repeats(log, "poll", device="plc-1")`:
    - `poll_failed reason=...` when failing starts or its reason changes
      (with the traceback, if `failed` was given an exception);
    - `poll_still_failing reason=... count=N window_s=300` at most every
      `summary_every_s` while it goes on; N is the failures in that window.
      It comes with a failure, so call `failed` on every attempt, a skipped
      one (a backoff, a demoted unit) included: a failure that is no longer
      reported is taken for one that no longer happens;
    - `poll_recovered failures=N failed_for_s=...` on the first success after.
    """

    def __init__(
        self,
        logger: FilteringBoundLogger,
        what: str,
        summary_every_s: float = SUMMARY_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        **context: Any,
    ) -> None:
        self._log = logger.bind(**context)
        self._what = what
        self._summary_every_s = summary_every_s
        self._clock = clock
        self._reason: str | None = None
        self._level = logging.WARNING
        self._since = self._window_start = 0.0
        self._total = self._in_window = 0

    @property
    def failing(self) -> bool:
        return self._reason is not None

    def failed(
        self,
        error: str | BaseException,
        *,
        level: int = logging.WARNING,
        event: str | None = None,
        **context: Any,
    ) -> None:
        """One more failure. `level`: ERROR for what only an operator can fix (a credential
        file), which its summaries keep. `event`: the name of the line that starts it, where
        one says more than `<what>_failed` (`mqtt_protocol_mismatch`)."""
        reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        now = self._clock()
        if reason != self._reason:
            if self._reason is None:
                self._since, self._total = now, 0
            self._reason, self._window_start, self._in_window = reason, now, 0
            self._level = level
            traceback = {} if isinstance(error, str) else {"exc_info": error}
            name = event or f"{self._what}_failed"
            self._log.log(level, name, reason=reason, **traceback, **context)
        self._total += 1
        self._in_window += 1
        if now - self._window_start >= self._summary_every_s:
            self._log.log(
                self._level,
                f"{self._what}_still_failing",
                reason=reason,
                count=self._in_window,
                window_s=round(now - self._window_start),
                **context,
            )
            self._window_start, self._in_window = now, 0

    def recovered(self, **context: Any) -> None:
        if self._reason is None:
            return
        self._log.info(
            f"{self._what}_recovered",
            failures=self._total,
            failed_for_s=round(self._clock() - self._since, 1),
            **context,
        )
        self._reason = None
