"""Client bytes in, complete requests out (no I/O).

Simple heads (see ``http.request_head``) are parsed by the fast parser; any other head is
first held to the strict rules of ``check_slow_head`` (ambiguous framing is refused, never
forwarded) and then handed to h11 in the server role together with everything buffered after
it, and h11 stays in charge until that request's cycle ends. A chunked body is walked by the
strict ``ChunkedScanner`` as well, so chunk lines and extensions are bounded and malformed
framing is refused whatever h11 would tolerate. Body and header limits are enforced for both.

Bodies are collected as a list of the pieces received and joined once (a Content-Length body
rebuilt with ``+`` on every read costs time quadratic in its size: seconds for 60 MB).
"""

from __future__ import annotations

import h11

from hal0proxy.http.errors import ProxyError, as_proxy_error
from hal0proxy.http.framing import ChunkedScanner, FramingError
from hal0proxy.http.headers import connection_tokens
from hal0proxy.http.messages import HttpRequest
from hal0proxy.http.problems import BadRequest
from hal0proxy.http.request_head import (
    NEED_MORE,
    SLOW,
    FastHead,
    HeadTemplate,
    check_slow_head,
    origin_form,
    parse_request_head,
)

_FAKE_RESPONSE = h11.Response(status_code=200, headers=[(b"content-length", b"0")])
_FAKE_END = h11.EndOfMessage()


class RequestReader:
    __slots__ = (
        "_body",
        "_body_len",
        "_buf",
        "_chunk_check",
        "_chunk_error",
        "_eof",
        "_h11",
        "_head",
        "_max_body",
        "_max_header",
        "_more",
        "_more_len",
        "_req",
        "_tail",
        "_terminated",
        "_waiting_head",
        "keep_alive",
        "peer_host",
        "send_continue",
    )

    def __init__(self, max_header_bytes: int, max_body_bytes: int, peer_host: str | None) -> None:
        self._max_header = max_header_bytes
        self._max_body = max_body_bytes
        self.peer_host = peer_host  # known once the connection is made
        self._buf = b""
        # Reads behind ``_buf`` wait in ``_more``; behind an incomplete head they are joined only
        # once a head terminator (or a bare LF) may have arrived: a head sent one byte at a time
        # must cost linear, not quadratic, time.
        self._waiting_head = False
        self._more: list[bytes] = []
        self._more_len = 0
        self._tail = b""  # the last bytes before the newest read, for a terminator split across reads
        self._terminated = False
        self._eof = False
        self._h11: h11.Connection | None = None  # set only while a non-simple request is read
        self._head: FastHead | None = None
        self._req: HttpRequest | None = None
        self._body: list[bytes] = []  # pieces of the body being read (fast path and h11 path)
        self._body_len = 0
        self._chunk_check: ChunkedScanner | None = None  # walks a chunked body alongside h11
        self._chunk_error: ProxyError | None = None
        self.keep_alive = True
        self.send_continue = False  # the caller must write "100 Continue" now

    @property
    def idle(self) -> bool:
        """No byte of a next request has arrived yet."""
        if self._h11 is not None:
            return self._h11.their_state is h11.IDLE and not self._h11.trailing_data[0]
        return not self._buf and not self._more and self._head is None

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet part of a request being read (pipelined input)."""
        return len(self._buf) + self._more_len

    def feed(self, data: bytes) -> None:
        if self._h11 is not None:
            check = self._chunk_check
            if check is not None and self._chunk_error is None:
                self._check_chunks(check, data)
            self._h11.receive_data(data)
        elif self._head is not None:
            self._body.append(data)  # a Content-Length body: collected, joined once
            self._body_len += len(data)
        elif not self._buf:
            self._buf = data
        else:
            # Behind an incomplete head, or pipelined behind a request in flight: kept as pieces
            # and joined once when parsed (``+`` here would copy the buffer on every read).
            self._more.append(data)
            self._more_len += len(data)
            if self._waiting_head:
                window = self._tail + data
                if b"\r\n\r\n" in window or b"\n\n" in window or b"\n\r\n" in window:
                    self._terminated = True
                self._tail = window[-3:]

    def feed_eof(self) -> None:
        self._eof = True
        if self._h11 is not None:
            self._h11.receive_data(b"")

    def next_request(self) -> HttpRequest | None:
        """The next complete request, or None until more bytes arrive.

        Raises ``ProxyError`` for input that must be answered with a 4xx and a close.
        """
        if self._h11 is not None:
            return self._next_from_h11()
        head = self._head
        if head is None:
            if not self._buf and not self._more:
                self._waiting_head = False
                return None  # nothing of a next request yet (checked after every response)
            if self._more:
                if self._waiting_head and not self._terminated and self.buffered_bytes <= self._max_header:
                    return None  # still no end of head in sight
                self._buf = b"".join([self._buf, *self._more])
                self._more = []
                self._more_len = 0
                self._terminated = False
            while self._buf.startswith(b"\r\n"):  # RFC 9112 §2.2: ignore empty lines before a request
                self._buf = self._buf[2:]
            try:
                parsed = parse_request_head(self._buf)
            except BadRequest as problem:
                raise as_proxy_error(problem) from None
            if parsed is NEED_MORE:
                if len(self._buf) > self._max_header:
                    raise _too_large_head()
                self._waiting_head = bool(self._buf)
                self._tail = self._buf[-3:]
                return None
            self._waiting_head = False
            if parsed is SLOW:
                return self._start_h11()
            assert isinstance(parsed, FastHead)
            if parsed.body_start > self._max_header:
                raise _too_large_head()
            if parsed.content_length > self._max_body:
                raise self._too_large_body()
            end = parsed.body_start + parsed.content_length
            if len(self._buf) >= end:  # the whole request is here (the common case): slice it
                body = self._buf[parsed.body_start : end] if parsed.content_length else b""
                self._buf = self._buf[end:]
                self.keep_alive = parsed.keep_alive
                return self._request(parsed.method, parsed.target, parsed.headers, b"1.1", body, parsed.template)
            head = self._head = parsed
            first = self._buf[parsed.body_start :]
            self._body = [first] if first else []
            self._body_len = len(first)
            self._buf = b""
        if self._body_len < head.content_length:
            return None
        joined = b"".join(self._body)
        self._body = []
        self._body_len = 0
        self._head = None
        body, self._buf = joined[: head.content_length], joined[head.content_length :]
        self.keep_alive = head.keep_alive
        return self._request(head.method, head.target, head.headers, b"1.1", body, head.template)

    def _start_h11(self) -> HttpRequest | None:
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        try:
            chunked = check_slow_head(buf[:end])
        except BadRequest as problem:
            raise as_proxy_error(problem) from None
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_header)
        self._chunk_error = None
        self._chunk_check = None
        if chunked:
            self._chunk_check = ChunkedScanner()
            self._check_chunks(self._chunk_check, buf[end + 4 :])
        self._h11.receive_data(buf)
        if self._eof:
            self._h11.receive_data(b"")
        self._buf = b""
        return self._next_from_h11()

    def _check_chunks(self, check: ChunkedScanner, data: bytes) -> None:
        if check.done or not data:
            return  # bytes past the last chunk belong to the next request
        try:
            check.feed(data)
        except FramingError as exc:
            self._chunk_error = ProxyError(400, "request.invalid_http", f"malformed chunked body: {exc.message}")

    def response_sent(self) -> bool:
        """Advance to the next request cycle; False when the connection must close."""
        conn = self._h11
        if conn is None:
            return self.keep_alive and not (self._eof and not self._buf and not self._more)
        try:
            conn.send(_FAKE_RESPONSE)  # h11 must see a response to leave this cycle
            conn.send(_FAKE_END)
        except h11.LocalProtocolError:
            return False
        if not self.keep_alive or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return False
        conn.start_next_cycle()
        self._chunk_check = None
        # Back to the fast parser with whatever was pipelined behind this request.
        self._buf, closed = conn.trailing_data
        self._eof = self._eof or closed
        self._h11 = None
        return True

    # -- h11 path ----------------------------------------------------------------------------
    def _next_from_h11(self) -> HttpRequest | None:
        conn = self._h11
        assert conn is not None
        if self._chunk_error is not None:
            raise self._chunk_error
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                if exc.error_status_hint == 431:
                    raise _too_large_head() from None
                raise ProxyError(
                    exc.error_status_hint, "request.invalid_http", f"malformed HTTP request: {exc}"
                ) from None
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return None
            if isinstance(event, h11.Request):
                headers = [(bytes(k), bytes(v)) for k, v in event.headers]
                if sum(len(k) + len(v) + 4 for k, v in headers) > self._max_header:
                    raise _too_large_head()  # h11 bounds only heads that arrive in pieces
                for name, value in headers:
                    if name == b"content-length" and value.isdigit() and int(value) > self._max_body:
                        raise self._too_large_body()
                tokens = connection_tokens(headers)
                version = bytes(event.http_version)
                self.keep_alive = b"close" not in tokens if version == b"1.1" else b"keep-alive" in tokens
                self._req = self._request(bytes(event.method), bytes(event.target), headers, version, b"")
                self._body = []
                self._body_len = 0
                if conn.they_are_waiting_for_100_continue:
                    self.send_continue = True
            elif isinstance(event, h11.Data):
                self._body_len += len(event.data)
                if self._body_len > self._max_body:
                    raise self._too_large_body()
                self._body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                req = self._req
                assert req is not None
                req.body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
                self._req = None
                self._body = []
                return req
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionClosed

    def _request(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        version: bytes,
        body: bytes,
        template: HeadTemplate | None = None,
    ) -> HttpRequest:
        # positional: the fields of HttpRequest in their order (cheaper than keywords per request)
        if template is not None:  # a repeated head: its path is already decoded
            path, query = template.path, template.query
            return HttpRequest(method, target, path, query, headers, body, version, self.peer_host, template)
        if target[:1] != b"/":
            target, headers = origin_form(target, headers)
        raw_path, _, query = target.partition(b"?")
        return HttpRequest(method, target, raw_path.decode("latin-1"), query, headers, body, version, self.peer_host)

    def _too_large_body(self) -> ProxyError:
        limit = self._max_body
        return ProxyError(413, "request.too_large", f"request body exceeds {limit} bytes", {"limit": limit})


class ConnectionClosed(Exception):
    """The client closed its side cleanly between requests."""


def _too_large_head() -> ProxyError:
    return ProxyError(431, "request.headers_too_large", "request headers are too large")
