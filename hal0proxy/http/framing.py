"""Response body framing: know where a relayed body ends without copying or re-framing it.

The relay writes the child's body bytes downstream as the very objects it received; this
scanner only walks them to learn (a) when the body ended, so the upstream connection can be
reused, and (b) whether the stream sits between two chunks, so an interrupted SSE stream can
be closed with a well-formed error event. It copies nothing but a partial chunk-size line
(a few bytes) when one straddles two reads.

The chunked scanner is strict (RFC 9112 §7.1): a chunk size is 1 to 16 hex digits (no sign,
no ``0x``, no ``_`` — ``int(x, 16)`` alone would take all three), every line ends with CRLF,
the chunk data is followed by exactly CRLF, and the size line (extensions included) and the
trailer section are bounded. The same scanner validates chunked request bodies, so a client
and a child are held to the same rules.
"""

from __future__ import annotations

import re
from typing import Final

from hal0proxy.http.problems import RemoteProblem

_SIZE, _DATA, _DATA_CR, _DATA_LF, _TRAILER, _DONE = range(6)
# A size line is a few bytes in practice; extensions are unused by every client and child we
# know. 4 KiB keeps a 100 KB "extension" from being buffered while leaving room for any real one.
MAX_CHUNK_LINE_BYTES: Final = 4096
MAX_TRAILER_BYTES: Final = 16 * 1024
_HEX_DIGITS = b"0123456789abcdefABCDEF"
_BAD_EXT = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class FramingError(RemoteProblem):
    """The peer sent bytes that are not valid HTTP/1.1 chunked framing."""

    # How many bytes of the failing ``feed`` end exactly at a chunk boundary before the fault:
    # the relay can still pass those on, so complete events are not lost with the broken one.
    valid_bytes = 0


class ChunkedScanner:
    __slots__ = ("_line", "_remaining", "_state", "_trailer_bytes", "chunks", "done", "payload")

    def __init__(self, collect_payload: bool = False) -> None:
        self._state = _SIZE
        self._remaining = 0
        self._line = b""
        self._trailer_bytes = 0
        self.chunks = 0  # complete data chunks seen: a cheap count for metrics, no per-chunk call
        # The last chunk and the trailer section are read. A plain attribute, not a property:
        # the relay asks after every read it passes on.
        self.done = False
        # With ``collect_payload`` the chunk data fed is also gathered here (de-chunking for an
        # HTTP/1.0 client); the relay's hot path leaves it None and copies nothing.
        self.payload: list[bytes] | None = [] if collect_payload else None

    @property
    def at_boundary(self) -> bool:
        """True when everything relayed so far ends exactly after a complete chunk."""
        return self._state == _SIZE and not self._line

    def take_payload(self) -> bytes:
        """The chunk data gathered since the last call (``collect_payload`` mode)."""
        pieces = self.payload
        if not pieces:
            return b""
        self.payload = []
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def feed(self, data: bytes) -> int:
        """Consume ``data``; return how many bytes belong to this body (< len(data) if it ended).

        Raises ``FramingError`` at the first byte that breaks the framing; its ``valid_bytes``
        says how much of ``data`` ends at a chunk boundary before the fault.
        """
        pos = 0
        end = len(data)
        boundary = 0  # where the last complete chunk of this feed ended
        if self._state == _SIZE and not self._line and self.payload is None:
            # The common case (an SSE event per read, or several): whole chunks with a bare hex
            # size. Walk them with ``find`` alone; at the first thing that is not exactly that
            # (an extension, the last chunk, a chunk split across reads, any fault) stop at its
            # start and let the full state machine below take over from there.
            while True:
                line_end = data.find(b"\r\n", pos, pos + 18)
                if line_end <= pos:
                    break
                size_line = data[pos:line_end]
                if size_line.translate(None, _HEX_DIGITS):
                    break
                data_end = line_end + 2 + int(size_line, 16)
                if data_end + 2 > end or data_end == line_end + 2 or data[data_end : data_end + 2] != b"\r\n":
                    break
                pos = data_end + 2
                self.chunks += 1
                if pos == end:
                    return end
            boundary = pos
        try:
            while pos < end:
                state = self._state
                if state == _DATA:
                    remaining = self._remaining
                    available = end - pos
                    if self.payload is not None and remaining:
                        self.payload.append(data[pos : pos + min(remaining, available)])
                    if available >= remaining + 2:
                        # The rest of the chunk and its CRLF are both here (the common case).
                        pos += remaining
                        if data[pos : pos + 2] != b"\r\n":
                            raise FramingError("chunk data not followed by CRLF")
                        pos += 2
                        self._remaining = 0
                        self._state = _SIZE
                        self.chunks += 1
                        boundary = pos
                    elif available > remaining:
                        pos += remaining
                        self._remaining = 0
                        self._state = _DATA_CR
                    else:
                        self._remaining = remaining - available
                        return end
                elif state == _DATA_CR:
                    if data[pos] != 13:
                        raise FramingError("chunk data not followed by CRLF")
                    pos += 1
                    self._state = _DATA_LF
                elif state == _DATA_LF:
                    if data[pos] != 10:
                        raise FramingError("chunk data not followed by CRLF")
                    pos += 1
                    self._state = _SIZE
                    self.chunks += 1
                    boundary = pos
                elif state == _SIZE or state == _TRAILER:
                    room = MAX_CHUNK_LINE_BYTES - len(self._line)
                    nl = data.find(b"\n", pos, pos + room + 1)
                    if nl < 0:
                        if end - pos > room:
                            raise FramingError(f"chunk line longer than {MAX_CHUNK_LINE_BYTES} bytes")
                        self._line += data[pos:]
                        return end
                    line = self._line + data[pos:nl] if self._line else data[pos:nl]
                    self._line = b""
                    pos = nl + 1
                    if line[-1:] != b"\r":
                        raise FramingError("chunk line not terminated by CRLF")
                    line = line[:-1]
                    if state == _SIZE:
                        size = parse_chunk_size(line)
                        if size == 0:
                            self._state = _TRAILER
                        else:
                            self._state = _DATA
                            self._remaining = size
                    elif not line:
                        self._state = _DONE
                        self.done = True
                        return pos
                    else:
                        self._trailer_bytes += len(line) + 2
                        if self._trailer_bytes > MAX_TRAILER_BYTES:
                            raise FramingError(f"trailer section larger than {MAX_TRAILER_BYTES} bytes")
                        if _BAD_EXT.search(line) is not None or b":" not in line:
                            raise FramingError("malformed trailer field")
                else:  # _DONE: anything after the terminating chunk is not part of this body
                    return pos
        except FramingError as exc:
            exc.valid_bytes = boundary
            raise
        return pos


def parse_chunk_size(line: bytes) -> int:
    """The size of a chunk-size line without its CRLF (``1a;name=value`` -> 26)."""
    semi = line.find(b";")
    if semi >= 0:
        if _BAD_EXT.search(line, semi) is not None:
            raise FramingError("control character in chunk extension")
        line = line[:semi].rstrip(b" \t")  # BWS before ";" (RFC 9112 §7.1.1)
    # translate() deletes the hex digits: anything left ("0x", "_", "+", " ") is not a size.
    # Measured faster than a regex fullmatch, and this runs once per relayed chunk.
    if not line or len(line) > 16 or line.translate(None, _HEX_DIGITS):
        raise FramingError(f"invalid chunk size {line[:20]!r}")
    return int(line, 16)


class LengthScanner:
    __slots__ = ("_remaining", "chunks", "done")

    def __init__(self, length: int) -> None:
        self._remaining = length
        self.chunks = 0
        self.done = length == 0  # a plain attribute, as ChunkedScanner's

    @property
    def at_boundary(self) -> bool:
        return self._remaining == 0

    @property
    def remaining(self) -> int:
        """Body bytes still to come."""
        return self._remaining

    def feed(self, data: bytes) -> int:
        remaining = self._remaining
        size = len(data)
        if size < remaining:  # the common case: the read is all body (no min() call)
            self._remaining = remaining - size
            return size
        self._remaining = 0
        self.done = True
        return remaining


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
