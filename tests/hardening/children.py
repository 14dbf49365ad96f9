"""Children for the hardening tests: one that records every request, one that misbehaves.

``ScriptedChild`` is a real TCP server on loopback (a thread of the test process, blocking
sockets, nothing from the proxy's own code): it records each request it receives — raw head,
body, and which connection it came on — and answers it either normally (JSON, or a valid SSE
stream for ``x-script: sse``) or with the exact bytes of a script named by the ``x-script``
request header, so a test can make the child send any broken response it likes.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from dataclasses import dataclass, field


@dataclass
class Recorded:
    connection: int
    head: bytes
    body: bytes

    @property
    def script(self) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"x-script":
                return value.strip().decode()
        return None


@dataclass
class Script:
    """What the child sends for one request, and whether it then keeps the connection."""

    data: bytes
    keep_open: bool = True  # keep reading requests on this connection afterwards
    pause_s: float = 0.0  # wait this long after ``data`` (before ``later``, or before closing)
    later: bytes = b""  # sent after the pause: makes a second read at the proxy certain


def _json_ok(n: int) -> bytes:
    body = b'{"ok":true,"n":%d}' % n
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def _sse_ok(events: int) -> bytes:
    out = [b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"]
    for i in range(events):
        payload = b'data: {"i":%d}\n\n' % i
        out.append(b"%x\r\n%s\r\n" % (len(payload), payload))
    out.append(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
    return b"".join(out)


@dataclass
class ScriptedChild:
    scripts: dict[str, Script] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: socketserver.ThreadingTCPServer | None = None

    def start(self) -> ScriptedChild:
        child = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                child._serve(self.request)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def recorded(self) -> list[Recorded]:
        with self._lock:
            return list(self.requests)

    # -- the connection loop ---------------------------------------------------------------
    def _serve(self, sock: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            conn_id = self.connections
        sock.settimeout(30)
        buf = bytearray()  # += on bytes would copy a 60 MB body a thousand times
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                end = buf.index(b"\r\n\r\n")
                head = bytes(buf[:end])
                del buf[: end + 4]
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                body = bytes(buf[:length])
                del buf[:length]
                record = Recorded(conn_id, head, body)
                with self._lock:
                    self.requests.append(record)
                    n = len(self.requests)
                name = record.script
                if name is None:
                    sock.sendall(_json_ok(n))
                    continue
                if name == "sse":
                    sock.sendall(_sse_ok(5))
                    continue
                script = self.scripts[name]
                sock.sendall(script.data)
                if script.pause_s:
                    threading.Event().wait(script.pause_s)
                if script.later:
                    sock.sendall(script.later)
                if not script.keep_open:
                    return
        except OSError:
            return
        finally:
            sock.close()
