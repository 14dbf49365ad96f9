"""Fan-out of slot events to SSE subscribers; a slow subscriber is dropped, never waited for."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import fields
from typing import Any

from hal0proxy.lemond.events import LemondEvent


class Subscription:
    __slots__ = ("_journal", "dropped", "queue")

    def __init__(self, journal: Journal, maxsize: int) -> None:
        self._journal = journal
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize)
        self.dropped = False

    def close(self) -> None:
        self._journal.unsubscribe(self)


class Journal:
    def __init__(self, history: int = 1000, queue_size: int = 256) -> None:
        self.recent: deque[dict[str, Any]] = deque(maxlen=history)
        self._subs: set[Subscription] = set()
        self._queue_size = queue_size
        self.dropped_subscribers = 0

    def publish(self, kind: str, **data: Any) -> dict[str, Any]:
        entry = {"type": kind, "ts": time.time(), **data}
        self.recent.append(entry)
        for sub in list(self._subs):
            try:
                sub.queue.put_nowait(entry)
            except asyncio.QueueFull:
                # The subscriber cannot keep up: cut it loose rather than buffer without bound.
                self._drop(sub)
        return entry

    def subscribe(self) -> Subscription:
        sub = Subscription(self, self._queue_size)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def _drop(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        sub.dropped = True
        self.dropped_subscribers += 1
        # Make room for the end marker so the reader wakes up and ends its stream.
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.queue.put_nowait(None)

    def subscriber_count(self) -> int:
        return len(self._subs)


def event_fields(event: LemondEvent) -> dict[str, Any]:
    """A lemond event as JSON-ready fields for the journal (enums and tuples made plain)."""
    out: dict[str, Any] = {}
    for field in fields(event):
        name = field.name
        value = getattr(event, name, None)
        if name == "loaded":
            value = [m.model for m in value or ()]
        elif name == "observed_at":
            continue
        out[name] = value if isinstance(value, str | int | float | bool | list | dict | type(None)) else str(value)
    return out
