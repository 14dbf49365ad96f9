"""A child's response head and framing, validated as strictly as a client's request (no I/O).

The children are local processes the proxy forwards to, but "local" is not "correct": a
broken or hostile child could otherwise make the proxy relay a head that splits into two
responses at a lenient client (a bare LF or a NUL in a header value), disagree with the
client about where a body ends (two Content-Lengths, Content-Length with Transfer-Encoding,
``-5``, ``1_0``) or leave a desynchronised connection in the pool. Everything here follows
RFC 9112 with no leniency; anything else raises ``BadResponse`` and the caller answers
``502 dispatch.upstream_unavailable`` and closes that child connection for good.

``ResponseReader`` is fed bytes until it returns a final head: interim 1xx responses
(100 Continue, 102, 103 Early Hints) are skipped, a 101 is refused (the proxy never asks to
switch protocols: it strips Upgrade), and the head must fit in ``max_head_bytes``. The body is
left to the scanner it returns (``http.framing``), which walks the relayed bytes without
copying them.
"""

from __future__ import annotations

import re
from typing import Final

from hal0proxy.http.framing import BodyScanner, ChunkedScanner, LengthScanner, UntilCloseScanner
from hal0proxy.http.problems import BadResponse

__all__ = [
    "DEFAULT_MAX_HEAD_BYTES",
    "MAX_INTERIM_RESPONSES",
    "ResponseHead",
    "ResponseReader",
    "parse_head",
    "parse_head_uncached",
]

# The same bound as a request head: llama-server's heads are ~200 bytes.
DEFAULT_MAX_HEAD_BYTES: Final = 64 * 1024
# More interim responses than this before a final one is a child spinning, not informing.
MAX_INTERIM_RESPONSES: Final = 8
_MAX_LENGTH_DIGITS: Final = 18  # below 2**63: no integer a peer can make overflow anything

# status-line = HTTP-version SP status-code SP [ reason-phrase ]   (RFC 9112 §4)
# The SP before an empty reason is optional here: several servers omit it and it is harmless.
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-5][0-9][0-9])(?: ([\t\x20-\x7e\x80-\xff]*))?")
_FIELD_NAME = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # CTLs except HTAB, NUL included
# The whole field section in one pass (C speed, once per response): token ":" then a value of
# visible octets, SP and HTAB only — which also rules out obs-fold, bare CR or LF and NUL.
_FIELD_SECTION = re.compile(rb"(?:[-!#$%&'*+.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*\r\n)*")
_DIGITS = re.compile(rb"[0-9]{1,%d}" % _MAX_LENGTH_DIGITS)
_FIELD = re.compile(rb"([^:]+):([^\r]*)\r\n")  # splits a section _FIELD_SECTION accepted
_FRAMING_FIELDS: Final = frozenset({b"content-length", b"transfer-encoding", b"connection"})


class ResponseHead:
    """A parsed response head. Shared: the parse of a repeated head is the same object, so
    nothing may change one after ``parse_head`` built it (its headers are a tuple)."""

    __slots__ = ("chunked", "headers", "keep_alive", "raw", "reason", "status", "version")

    def __init__(
        self,
        status: int,
        reason: bytes,
        version: bytes,
        headers: tuple[tuple[bytes, bytes], ...],
        keep_alive: bool,
        chunked: bool,
        raw: bytes = b"",
    ) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers  # names lower-cased, values without surrounding whitespace
        self.keep_alive = keep_alive
        self.chunked = chunked
        # The head as received when every field above was parsed from exactly these bytes
        # (``parse_head``); empty for a head built otherwise. Lets ``proxy.wire`` reuse the
        # downstream head it built for the same bytes.
        self.raw = raw


# A child answers with the same head bytes request after request (llama-server's heads differ
# only in Content-Length, and not even that for equal answers): the parse of a byte-identical
# head is reused, the very ``ResponseHead`` object (immutable) with a fresh scanner. Parsing is a
# pure function of the bytes, and only heads that passed every check are kept, so a hit returns
# exactly what a fresh parse would. Bounded in entries and in the size of a head, so a child
# sending ever-new heads costs a clear now and then, not memory.
_CACHE_MAX_ENTRIES: Final = 256
_CACHE_MAX_HEAD_BYTES: Final = 1024
# head -> (its parse, framing); framing is the Content-Length to scan, -1 for chunked, -2 for a
# body delimited by the close.
_parsed_heads: dict[bytes, tuple[ResponseHead, int]] = {}
_CHUNKED: Final = -1
_UNTIL_CLOSE: Final = -2


def parse_head(head: bytes, method_is_head: bool) -> tuple[ResponseHead, BodyScanner]:
    """Validate one response head (without its final CRLFCRLF) and choose its body framing.

    Raises ``BadResponse`` naming the first rule the head breaks.
    """
    if method_is_head:
        return parse_head_uncached(head, True)  # rare: not worth a second cache key
    hit = _parsed_heads.get(head)
    if hit is None:
        parsed, scanner = parse_head_uncached(head, False)
        if len(head) <= _CACHE_MAX_HEAD_BYTES:
            if len(_parsed_heads) >= _CACHE_MAX_ENTRIES:
                _parsed_heads.clear()
            if isinstance(scanner, LengthScanner):
                framing = scanner.remaining
            else:
                framing = _CHUNKED if isinstance(scanner, ChunkedScanner) else _UNTIL_CLOSE
            _parsed_heads[head] = (parsed, framing)
        return parsed, scanner
    parsed, framing = hit
    if framing >= 0:
        return parsed, LengthScanner(framing)
    return parsed, ChunkedScanner() if framing == _CHUNKED else UntilCloseScanner()


def parse_head_uncached(head: bytes, method_is_head: bool) -> tuple[ResponseHead, BodyScanner]:
    """``parse_head`` without the cache: every check runs on every call."""
    line_end = head.find(b"\r\n")
    status_line = head if line_end < 0 else head[:line_end]
    match = _STATUS_LINE.fullmatch(status_line)
    if match is None:
        if b"\n" in status_line:
            raise BadResponse("the model server sent a bare LF in its response head")
        raise BadResponse(f"the model server sent an invalid status line {status_line[:80]!r}")
    section = head[line_end + 2 :] + b"\r\n" if line_end >= 0 else b""
    if section and _FIELD_SECTION.fullmatch(section) is None:
        _explain_field_section(head.split(b"\r\n")[1:])
    version = b"1." + match.group(1)
    status = int(match.group(2))
    reason = match.group(3) or b""
    headers: list[tuple[bytes, bytes]] = []
    length: bytes | None = None
    transfer_encoding: list[bytes] = []
    conn_tokens: set[bytes] = set()
    # The section is well-formed by now: split it in one pass (C speed, once per response).
    for name, value in _FIELD.findall(section):
        value = value.strip(b" \t")
        name = name.lower()
        headers.append((name, value))
        if name not in _FRAMING_FIELDS:
            continue
        if name == b"content-length":
            if length is None and value.isdigit() and len(value) <= _MAX_LENGTH_DIGITS:
                length = value  # the common case, without the list form's parsing
                continue
            for item in value.split(b","):
                item = item.strip(b" \t")
                if _DIGITS.fullmatch(item) is None:
                    raise BadResponse(f"the model server sent an invalid Content-Length {value[:40]!r}")
                if length is not None and int(item) != int(length):
                    raise BadResponse("the model server sent two different Content-Length values")
                length = item
        elif name == b"transfer-encoding":
            if value == b"chunked" and not transfer_encoding:
                transfer_encoding = [value]  # what every child sends
                continue
            transfer_encoding += [t.strip(b" \t").lower() for t in value.split(b",")]
        else:  # connection
            conn_tokens.update(t.strip(b" \t").lower() for t in value.split(b","))
    chunked = False
    if transfer_encoding:
        # RFC 9112 §6.3: both headers may be a smuggling attempt and "ought to be handled as an
        # error"; a coding other than one "chunked" cannot be relayed verbatim either.
        if length is not None:
            raise BadResponse("the model server sent both Content-Length and Transfer-Encoding")
        if transfer_encoding != [b"chunked"] or version == b"1.0":
            raise BadResponse(f"the model server sent an unsupported Transfer-Encoding {transfer_encoding!r}")
        chunked = True
    keep_alive = b"close" not in conn_tokens if version == b"1.1" else b"keep-alive" in conn_tokens
    scanner: BodyScanner
    if method_is_head or status in (204, 304) or status < 200:
        scanner = LengthScanner(0)
    elif chunked:
        scanner = ChunkedScanner()
    elif length is not None:
        scanner = LengthScanner(int(length))
    else:
        scanner = UntilCloseScanner()
        keep_alive = False
    return ResponseHead(status, reason, version, tuple(headers), keep_alive, chunked, head), scanner


def _explain_field_section(lines: list[bytes]) -> None:
    """Raise ``BadResponse`` naming the first header line that broke the field syntax."""
    for line in lines:
        if b"\n" in line:
            raise BadResponse("the model server sent a bare LF in its response head")
        name, sep, value = line.partition(b":")
        if not sep or _FIELD_NAME.fullmatch(name) is None:
            # Covers obs-fold (a line starting with whitespace), whitespace before the colon and
            # lines without a colon: each one a classic response-splitting vector (RFC 9112 §5).
            raise BadResponse(f"the model server sent an invalid header line {line[:80]!r}")
        if _BAD_VALUE.search(value.strip(b" \t")) is not None:
            raise BadResponse(f"the model server sent a control character in header {name[:40]!r}")
    raise BadResponse("the model server sent an invalid response head")


class ResponseReader:
    """Bytes in until the final response head; then the head, its scanner and the rest.

    One reader per connection, told by ``expect`` of each request sent. ``feed`` returns
    ``None`` until the final head is complete; then ``(head, scanner, rest)`` where ``rest`` is
    the bytes after the head in the last read (body bytes, untouched).
    """

    __slots__ = ("_interim", "_max_head", "_method_is_head", "_pieces", "_size", "_tail")

    def __init__(self, method_is_head: bool, max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES) -> None:
        self._method_is_head = method_is_head
        self._max_head = max_head_bytes
        # An incomplete head is kept as the pieces read and joined once its end may be there:
        # a head trickled a byte at a time costs linear time, not quadratic.
        self._pieces: list[bytes] = []
        self._size = 0
        self._tail = b""  # the last bytes already read, for a terminator split across reads
        self._interim = 0

    def expect(self, method_is_head: bool) -> None:
        """Start reading the response to the next request sent on the same connection."""
        self._method_is_head = method_is_head
        if self._pieces or self._interim:  # (a reader that returned a head has nothing kept)
            self._pieces = []
            self._size = 0
            self._interim = 0

    @property
    def started(self) -> bool:
        """Some bytes of a response have arrived (the child did answer)."""
        return bool(self._pieces) or self._interim > 0

    def feed(self, data: bytes) -> tuple[ResponseHead, BodyScanner, bytes] | None:
        """Raises ``BadResponse`` for any head that breaks RFC 9112 or the size bound."""
        if self._pieces:
            window = self._tail + data
            self._pieces.append(data)
            self._size += len(data)
            if b"\r\n\r\n" not in window and b"\n\n" not in window and self._size <= self._max_head:
                self._tail = window[-3:]
                return None
            buf = b"".join(self._pieces)
            self._pieces = []
            self._size = 0
        else:
            buf = data
        while True:
            end = buf.find(b"\r\n\r\n", 0, self._max_head + 4)
            if end < 0:
                if len(buf) > self._max_head:
                    raise BadResponse(f"the model server sent a response head larger than {self._max_head} bytes")
                if b"\n\n" in buf:
                    raise BadResponse("the model server sent a bare LF in its response head")
                if buf:
                    self._pieces = [buf]
                    self._size = len(buf)
                    self._tail = buf[-3:]
                return None
            head, scanner = parse_head(buf[:end], self._method_is_head)
            rest = buf[end + 4 :]
            if head.status >= 200:
                return head, scanner, rest
            if head.status == 101:
                raise BadResponse("the model server switched protocols although no upgrade was asked for")
            # Interim response (RFC 9110 §15.2): not relayed; the final head follows.
            self._interim += 1
            if self._interim > MAX_INTERIM_RESPONSES:
                raise BadResponse(f"the model server sent more than {MAX_INTERIM_RESPONSES} interim responses")
            buf = rest
