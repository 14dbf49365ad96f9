"""Incremental Server-Sent Events parser (pure, no I/O).

Implements the event-stream interpretation rules of the WHATWG HTML spec
("9.2.6 Interpreting an event stream") closely enough for lemond's named-event
streams (``/v1/pull``: ``event: progress|complete|error``) and llama-server's
``data:``-only streams. Bytes go in, complete :class:`SSEEvent` objects come out;
the caller decides where the bytes come from.
"""

from __future__ import annotations

from dataclasses import dataclass

from hal0proxy.http.problems import RemoteProblem

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "SSEEvent", "SSEParser", "SSEParserError"]

# An event larger than this is almost certainly a runaway stream, not progress JSON.
DEFAULT_MAX_EVENT_SIZE = 1024 * 1024


class SSEParserError(RemoteProblem, ValueError):
    """The stream broke a limit (the format itself has no syntax errors)."""

    status_hint = 502
    code = "dispatch.upstream_unavailable"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None


class SSEParser:
    """Feed bytes with :meth:`feed`; it returns the events that became complete.

    Lines may end in ``\\n``, ``\\r\\n`` or ``\\r``; comment lines (``:``) are
    ignored; an event is dispatched at a blank line and only if it had data, as
    the spec requires.
    """

    def __init__(self, *, max_event_size: int = DEFAULT_MAX_EVENT_SIZE) -> None:
        self._max = max_event_size
        self._buf = b""
        self._event = ""
        self._data: list[str] = []
        self._size = 0
        self._last_id: str | None = None
        # A lone "\r" at the end of a chunk may be the first half of "\r\n".
        self._pending_cr = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if self._pending_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._pending_cr = False
        buf = self._buf + chunk
        out: list[SSEEvent] = []
        start = 0
        n = len(buf)
        while start < n:
            nl = buf.find(b"\n", start)
            cr = buf.find(b"\r", start)
            if nl < 0 and cr < 0:
                break
            if cr >= 0 and (nl < 0 or cr < nl):
                end, nxt = cr, cr + 1
                if nxt < n and buf[nxt : nxt + 1] == b"\n":
                    nxt += 1
                elif nxt == n:
                    self._pending_cr = True
            else:
                end, nxt = nl, nl + 1
            self._line(buf[start:end].decode("utf-8", "replace"), out)
            start = nxt
        self._buf = buf[start:]
        if len(self._buf) + self._size > self._max:
            raise SSEParserError(f"SSE event larger than {self._max} bytes")
        return out

    def _line(self, line: str, out: list[SSEEvent]) -> None:
        if not line:
            if self._data:
                out.append(SSEEvent(self._event or "message", "\n".join(self._data), self._last_id))
            self._event, self._data, self._size = "", [], 0
            return
        if line.startswith(":"):
            return
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._size += len(value) + 1
            if self._size > self._max:
                raise SSEParserError(f"SSE event larger than {self._max} bytes")
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self._last_id = value
        # "retry" and unknown fields are ignored, as the spec says.
