"""lemond's in-memory log hub: formatted lines, a bounded ring, per-process ``seq``, fan-out.

Lines use lemond's aixlog format ``YYYY-MM-DD HH:MM:SS.mmm [Severity] (Tag) message`` in local
time. Each ``\\n`` in a message becomes its own entry with its own ``seq``, exactly as aixlog
splits multi-line messages. Entries below the configured level are never produced, so they do
not consume a ``seq`` either (lemond filters before the hub sees them).
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import orjson

__all__ = ["SEVERITIES", "LogEntry", "LogHub", "format_timestamp"]

#: aixlog's severity words, lowest first. Note "Warn", not "Warning".
SEVERITIES = ("Trace", "Debug", "Info", "Notice", "Warn", "Error", "Fatal")
_RANK = {name: i for i, name in enumerate(SEVERITIES)}
_LEVEL_NAMES = {
    "trace": "Trace",
    "debug": "Debug",
    "info": "Info",
    "notice": "Notice",
    "warning": "Warn",
    "warn": "Warn",
    "error": "Error",
    "fatal": "Fatal",
}

#: lemond's ring size (log_stream.h:49).
DEFAULT_CAPACITY = 5000


def format_timestamp(wall: float) -> str:
    """Local time with zero-padded milliseconds, as aixlog prints it."""
    seconds = int(wall)
    millis = int((wall - seconds) * 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) + f".{millis:03d}"


@dataclass(frozen=True, slots=True)
class LogEntry:
    seq: int
    timestamp: str
    severity: str
    tag: str
    line: str
    #: the ``logs.entry`` frame, encoded once and shared by every subscriber
    frame: str

    def as_json(self) -> dict[str, object]:
        return {
            "line": self.line,
            "seq": self.seq,
            "severity": self.severity,
            "tag": self.tag,
            "timestamp": self.timestamp,
        }


Subscriber = Callable[[LogEntry], None]


class LogHub:
    """Produces entries and hands each one to every subscriber, synchronously and in order.

    Delivery is synchronous on purpose: a WebSocket subscriber writes the pre-encoded frame
    straight into its transport, which buffers without bound, as lemond's per-connection send
    queue does (SPEC §5.2 quirk 3).
    """

    def __init__(
        self,
        *,
        capacity: int = DEFAULT_CAPACITY,
        level: str = "info",
        echo: TextIO | None = None,
    ) -> None:
        severity = _LEVEL_NAMES.get(level.lower())
        if severity is None:
            raise ValueError(f"unknown log level: {level!r}")
        self._min_rank = _RANK[severity]
        self._ring: deque[LogEntry] = deque(maxlen=capacity)
        self._subscribers: dict[int, Subscriber] = {}
        self._next_token = 1
        self._seq = 0
        self._echo = echo

    @property
    def last_seq(self) -> int:
        return self._seq

    def enabled(self, severity: str) -> bool:
        return _RANK[severity] >= self._min_rank

    def log(self, severity: str, tag: str, message: str) -> None:
        if not self.enabled(severity):
            return
        for part in message.split("\n"):
            self._emit(severity, tag, part)

    def debug(self, tag: str, message: str) -> None:
        self.log("Debug", tag, message)

    def info(self, tag: str, message: str) -> None:
        self.log("Info", tag, message)

    def warn(self, tag: str, message: str) -> None:
        self.log("Warn", tag, message)

    def error(self, tag: str, message: str) -> None:
        self.log("Error", tag, message)

    def _emit(self, severity: str, tag: str, message: str) -> None:
        self._seq += 1
        stamp = format_timestamp(time.time())
        line = f"{stamp} [{severity}] ({tag}) {message}"
        body = {"line": line, "seq": self._seq, "severity": severity, "tag": tag, "timestamp": stamp}
        frame = orjson.dumps({"entry": body, "type": "logs.entry"}, option=orjson.OPT_SORT_KEYS)
        entry = LogEntry(self._seq, stamp, severity, tag, line, frame.decode())
        self._ring.append(entry)
        if self._echo is not None:
            try:
                print(line, file=self._echo, flush=True)
            except (OSError, ValueError):
                self._echo = None
        # Copy: a subscriber may unsubscribe itself (its socket died) while being called.
        for callback in list(self._subscribers.values()):
            callback(entry)

    def snapshot(self, after_seq: int | None) -> list[LogEntry]:
        if after_seq is None:
            return list(self._ring)
        return [entry for entry in self._ring if entry.seq > after_seq]

    def subscribe(self, callback: Subscriber) -> int:
        token = self._next_token
        self._next_token += 1
        self._subscribers[token] = callback
        return token

    def unsubscribe(self, token: int) -> None:
        self._subscribers.pop(token, None)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def reset(self) -> None:
        """A lemond restart: the ring is empty and ``seq`` starts again at 1."""
        self._ring.clear()
        self._seq = 0


def stdout_echo() -> TextIO:
    return sys.stdout
