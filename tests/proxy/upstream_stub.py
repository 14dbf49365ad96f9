"""A programmable child server for data-plane tests (real sockets, in the test's loop).

The behaviour of each request is chosen by the ``mode`` field of its JSON body, so one
server can reproduce every upstream situation the proxy must survive.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field


def sse_event(i: int) -> bytes:
    payload = {"choices": [{"delta": {"content": f"tok{i}"}, "index": 0, "finish_reason": None}], "i": i}
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nServer: llama.cpp\r\n"
    b"Keep-Alive: timeout=5, max=100\r\nTransfer-Encoding: chunked\r\n\r\n"
)


@dataclass
class StubState:
    connections: int = 0
    requests: list[dict[str, object]] = field(default_factory=list)
    raw_requests: list[bytes] = field(default_factory=list)
    disconnects: list[float] = field(default_factory=list)  # monotonic times the proxy closed a stream
    paused_writes: int = 0
    open_connections: int = 0


class StubProtocol(asyncio.Protocol):
    def __init__(self, state: StubState) -> None:
        self.state = state
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.streaming = False
        self.can_write = asyncio.Event()
        self.can_write.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(high=16 * 1024, low=4 * 1024)  # type: ignore[union-attr]
        self.state.connections += 1
        self.state.open_connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.open_connections -= 1
        if self.streaming:
            self.state.disconnects.append(time.monotonic())
        self.can_write.set()

    def pause_writing(self) -> None:
        self.state.paused_writes += 1
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, _, rest = self.buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            body, self.buf = rest[:length], rest[length:]
            self.state.raw_requests.append(head + b"\r\n\r\n" + body)
            try:
                doc = json.loads(body) if body else {}
            except ValueError:
                doc = {}
            self.state.requests.append(doc)
            asyncio.get_running_loop().create_task(self.respond(doc, head, body))

    async def respond(self, doc: dict[str, object], head: bytes, body: bytes) -> None:
        t = self.transport
        assert t is not None
        mode = doc.get("mode", "json")
        n = int(doc.get("n", 5))  # type: ignore[call-overload]
        if mode == "json":
            out = json.dumps({"ok": True, "model": doc.get("model")}).encode()
            t.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(out), out)
            )
        elif mode == "echo":
            out = json.dumps({"head": head.decode("latin-1"), "body_len": len(body)}).encode()
            t.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(out), out)
            )
        elif mode == "error":
            out = b'{"error":{"code":400,"message":"bad things","type":"invalid_request_error"}}'
            t.write(
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(out), out)
            )
        elif mode in ("sse", "sse_close"):
            t.write(
                SSE_HEAD + b"".join(chunk(sse_event(i)) for i in range(n)) + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
            )
            if mode == "sse_close":
                t.close()  # llama-server's close-after-stream quirk
        elif mode == "sse_crash":
            t.write(SSE_HEAD + b"".join(chunk(sse_event(i)) for i in range(n)))
            await asyncio.sleep(0.05)
            t.abort()
        elif mode == "sse_crash_mid":
            ev = chunk(sse_event(99))
            t.write(SSE_HEAD + chunk(sse_event(0)) + ev[: len(ev) // 2])
            await asyncio.sleep(0.05)
            t.abort()
        elif mode == "sse_forever":
            self.streaming = True
            t.write(SSE_HEAD)
            i = 0
            while not t.is_closing():
                await self.can_write.wait()
                if t.is_closing():
                    break
                t.write(chunk(sse_event(i)))
                i += 1
                await asyncio.sleep(float(doc.get("interval", 0.005)))  # type: ignore[arg-type]
        elif mode == "flood":
            # As fast as the proxy accepts: used to prove the child is paused by a slow client.
            self.streaming = True
            t.write(SSE_HEAD)
            payload = chunk(b"data: " + b"x" * 4000 + b"\n\n")
            for _ in range(n):
                if t.is_closing():
                    return
                await self.can_write.wait()
                t.write(payload)
            t.write(b"0\r\n\r\n")
        elif mode == "hang":
            return
        elif mode == "close_now":
            t.close()


async def start_stub() -> tuple[asyncio.Server, int, StubState]:
    state = StubState()
    server = await asyncio.get_running_loop().create_server(lambda: StubProtocol(state), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, port, state
