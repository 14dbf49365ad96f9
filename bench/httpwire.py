"""The few HTTP/1.1 bytes a load generator needs: request heads and response scanning (pure)."""

from __future__ import annotations

import re

import orjson

__all__ = [
    "STAMP_RE",
    "Dechunker",
    "EventCounter",
    "ResponseScanner",
    "chat_request",
]

#: the fake child's per-event send stamp; the closing brace proves the number is complete
STAMP_RE = re.compile(rb'"emu_t_ns":(\d+)\}')


def chat_request(host: str, port: int, model: str, *, stream: bool, max_tokens: int, stamp: bool = False) -> bytes:
    """A complete keep-alive ``POST /v1/chat/completions`` request, encoded once and reused."""
    body = orjson.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "Say something about foxes."}],
            "max_tokens": max_tokens,
            "stream": stream,
        }
    )
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    )
    if stamp:
        head += "X-Emu-Stamp: 1\r\n"
    return head.encode() + b"\r\n" + body


class ResponseScanner:
    """Finds where one response ends in a keep-alive byte stream, without copying the body.

    Handles ``Content-Length`` bodies and chunked bodies; for chunked ones it only looks
    for the terminating ``0\\r\\n\\r\\n`` at the end of what has arrived, which is exact as
    long as requests are not pipelined (the next response cannot start before we send).
    After each :meth:`feed`, ``body_part`` holds the part of the data that was body.
    """

    __slots__ = ("_chunked", "_head", "_need", "_tail", "body_part", "closes", "status")

    def __init__(self) -> None:
        self._head = bytearray()
        self._need = -1  # body bytes still expected (Content-Length); -1 while the head is incomplete
        self._chunked = False
        self._tail = b""
        self.status = 0
        self.closes = False
        self.body_part = b""

    def feed(self, data: bytes) -> bool:
        """Consume ``data``; True when the current response is complete (the scanner resets)."""
        if self._need < 0:
            head = self._head
            head += data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                self.body_part = b""
                return False
            self._parse_head(bytes(head[:end]))
            data = bytes(head[end + 4 :])
            head.clear()
        self.body_part = data
        if self._chunked:
            tail = self._tail + data
            self._tail = tail[-7:]
            if tail.endswith(b"\r\n0\r\n\r\n") or tail == b"0\r\n\r\n":
                self._reset()
                return True
            return False
        self._need -= len(data)
        if self._need <= 0:
            self._reset()
            return True
        return False

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split(b" ", 2)[1])
        self._need = 0
        self._chunked = False
        self.closes = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                self._need = int(value.strip())
            elif key == b"transfer-encoding" and b"chunked" in value.lower():
                self._chunked = True
            elif key == b"connection" and b"close" in value.lower():
                self.closes = True

    def _reset(self) -> None:
        self._need = -1
        self._tail = b""


class Dechunker:
    """Removes HTTP/1.1 chunk framing from a body that arrives in arbitrary pieces.

    Needed because a relay may re-chunk (nginx does): its chunk boundaries need not fall
    between events, so framing can land in the middle of a stamp.
    """

    __slots__ = ("_buf", "_left")

    def __init__(self) -> None:
        self._buf = b""
        self._left = 0  # payload bytes (plus the trailing CRLF) still due from the current chunk

    def feed(self, data: bytes) -> bytes:
        buf = self._buf + data if self._buf else data
        out: list[bytes] = []
        pos = 0
        size = len(buf)
        while pos < size:
            if self._left:
                take = min(self._left, size - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._left -= take
                continue
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                break
            if line_end == pos:  # the CRLF that closes a chunk's payload
                pos += 2
                continue
            length = int(buf[pos:line_end].split(b";", 1)[0], 16)
            pos = line_end + 2
            self._left = length
            if length == 0:
                pos = size  # last chunk: the trailer section follows, no payload
        self._buf = buf[pos:]
        return b"".join(out)


class EventCounter:
    """Counts SSE events and collects ``emu_t_ns`` stamps across arbitrary read boundaries.

    Without stamps it works on the raw (still chunk-framed) bytes, which is cheap enough not to
    make the load generator the bottleneck of a throughput run: ``data: `` never occurs in
    chunk-size lines, and a short carried-over tail counts a token split between two reads
    exactly once. With stamps the body is de-chunked first (see :class:`Dechunker`).
    Feed it the body only: the response head must not be passed in.
    """

    __slots__ = ("_dechunk", "_stamp_carry", "_tail", "events", "stamps")

    def __init__(self, *, stamps: bool) -> None:
        self._tail = b""
        self._stamp_carry = b""
        self._dechunk = Dechunker() if stamps else None
        self.events = 0

    def end_of_response(self) -> None:
        """Forget framing state between two responses on one keep-alive connection."""
        self._tail = b""
        self._stamp_carry = b""
        if self._dechunk is not None:
            self._dechunk = Dechunker()

    def feed(self, data: bytes) -> list[int]:
        """Count events in ``data``; returns the send stamps of the events it completed."""
        if self._dechunk is not None:
            data = self._dechunk.feed(data)
        joined = self._tail + data
        self.events += joined.count(b"data: ")
        self._tail = joined[-5:]
        if self._dechunk is None:
            return []
        buf = self._stamp_carry + data
        found: list[int] = []
        end = 0
        for match in STAMP_RE.finditer(buf):
            found.append(int(match.group(1)))
            end = match.end()
        # A stamp is at most ~32 bytes; 64 carried bytes always hold a split one.
        self._stamp_carry = buf[max(end, len(buf) - 64) :]
        return found
