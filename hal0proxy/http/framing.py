"""Response body framing: know where a relayed body ends without copying or re-framing it.

The relay writes the child's body bytes downstream as the very objects it received; this
scanner only walks them to learn (a) when the body ended, so the upstream connection can be
reused, and (b) whether the stream sits between two chunks, so an interrupted SSE stream can
be closed with a well-formed error event. It copies nothing but a partial chunk-size line
(a few bytes) when one straddles two reads.
"""

from __future__ import annotations

_SIZE, _DATA, _DATA_CRLF, _TRAILER, _DONE = range(5)
_MAX_SIZE_LINE = 4096


class FramingError(Exception):
    """The peer sent bytes that are not valid HTTP/1.1 chunked framing."""


class ChunkedScanner:
    __slots__ = ("_line", "_remaining", "_state", "chunks")

    def __init__(self) -> None:
        self._state = _SIZE
        self._remaining = 0
        self._line = b""
        self.chunks = 0  # complete data chunks seen: a cheap count for metrics, no per-chunk call

    @property
    def done(self) -> bool:
        return self._state == _DONE

    @property
    def at_boundary(self) -> bool:
        """True when everything relayed so far ends exactly after a complete chunk."""
        return self._state == _SIZE and not self._line

    def feed(self, data: bytes) -> int:
        """Consume ``data``; return how many bytes belong to this body (< len(data) if it ended)."""
        pos = 0
        end = len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, end - pos)
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _DATA_CRLF
                    self._remaining = 2
            elif state == _DATA_CRLF:
                take = min(self._remaining, end - pos)
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _SIZE
                    self.chunks += 1
            elif state == _SIZE or state == _TRAILER:
                nl = data.find(b"\n", pos)
                if nl < 0:
                    self._line += data[pos:]
                    if len(self._line) > _MAX_SIZE_LINE:
                        raise FramingError("chunk size line too long")
                    return end
                line = self._line + data[pos:nl] if self._line else data[pos:nl]
                self._line = b""
                pos = nl + 1
                if state == _SIZE:
                    size = _parse_size(line)
                    if size == 0:
                        self._state = _TRAILER
                    else:
                        self._state = _DATA
                        self._remaining = size
                elif line.rstrip(b"\r") == b"":
                    self._state = _DONE
                    return pos
            else:  # _DONE: anything after the terminating chunk is not part of this body
                return pos
        return pos


def _parse_size(line: bytes) -> int:
    raw = line.split(b";", 1)[0].strip()
    try:
        size = int(raw, 16)
    except ValueError:
        raise FramingError(f"invalid chunk size {raw[:20]!r}") from None
    if size < 0:
        raise FramingError("negative chunk size")
    return size


class LengthScanner:
    __slots__ = ("_remaining", "chunks")

    def __init__(self, length: int) -> None:
        self._remaining = length
        self.chunks = 0

    @property
    def done(self) -> bool:
        return self._remaining == 0

    @property
    def at_boundary(self) -> bool:
        return self._remaining == 0

    def feed(self, data: bytes) -> int:
        take = min(self._remaining, len(data))
        self._remaining -= take
        return take


class UntilCloseScanner:
    """A body delimited by the peer closing the connection (HTTP/1.0 style)."""

    __slots__ = ("chunks",)
    done = False
    at_boundary = False

    def __init__(self) -> None:
        self.chunks = 0

    def feed(self, data: bytes) -> int:
        return len(data)


BodyScanner = ChunkedScanner | LengthScanner | UntilCloseScanner

LAST_CHUNK = b"0\r\n\r\n"


def encode_chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)
