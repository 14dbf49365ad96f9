"""Blocking raw-socket helpers: send exact bytes, read one response, tell whether it closed."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    raw_head: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Conn:
    """One client connection with a byte buffer, for pipelining and close detection."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> bool:
        """False if the proxy had already closed (it may answer before reading everything)."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def _more(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return False
        self.buf += data
        return bool(data)

    def read_answer(self, method: bytes = b"GET") -> Answer:
        while b"\r\n\r\n" not in self.buf:
            if not self._more():
                raise EOFError(f"connection closed before a response head: {self.buf[:200]!r}")
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if status < 200:
            return self.read_answer(method)  # interim response: the final one follows
        if method == b"HEAD" or status in (204, 304):
            return Answer(status, headers, b"", head)
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            return Answer(status, headers, self._read_chunked(), head)
        if b"content-length" in headers:
            n = int(headers[b"content-length"])
            while len(self.buf) < n:
                if not self._more():
                    raise EOFError("connection closed inside a body")
            body, self.buf = self.buf[:n], self.buf[n:]
            return Answer(status, headers, body, head)
        while self._more():
            pass
        body, self.buf = self.buf, b""
        return Answer(status, headers, body, head)

    def _read_chunked(self) -> bytes:
        out = b""
        while True:
            while b"\r\n" not in self.buf:
                if not self._more():
                    raise EOFError("connection closed inside a chunked body")
            line, _, self.buf = self.buf.partition(b"\r\n")
            size = int(line.split(b";")[0], 16)
            while len(self.buf) < size + 2:
                if not self._more():
                    raise EOFError("connection closed inside a chunk")
            if size == 0:
                while b"\r\n" not in self.buf:  # no trailers from the proxy: just the last CRLF
                    if not self._more():
                        raise EOFError("connection closed before the end of a chunked body")
                self.buf = self.buf[self.buf.index(b"\r\n") + 2 :]
                return out
            out += self.buf[:size]
            self.buf = self.buf[size + 2 :]

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True when the proxy closes the connection within ``timeout`` (no more bytes)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


def request(method: str, path: str, body: bytes = b"", headers: list[tuple[str, str]] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: t"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def loopback_request(
    method: str, path: str, body: bytes = b"", headers: list[tuple[str, str]] | None = None
) -> bytes:
    """``request`` naming a loopback ``Host``, as the admin endpoints and what the status page
    reads require of a client trusted for coming from loopback (DNS rebinding)."""
    return request(method, path, body, headers).replace(b"Host: t\r\n", b"Host: localhost\r\n", 1)


def one_shot(port: int, raw: bytes, method: bytes = b"GET", timeout: float = 10.0) -> tuple[Answer, Conn]:
    conn = Conn(port, timeout)
    conn.send(raw)
    return conn.read_answer(method), conn
