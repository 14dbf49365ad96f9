"""A fast fake child for relay measurements: one raw uvloop ``asyncio.Protocol``, nothing else.

    python -m bench.fastchild --port P [--tokens-per-second 20]

The Python fake ``llama-server`` of the emulator saturates at a few thousand requests/s, so
in front of it a relay benchmark measures the child. This one answers a keep-alive
``POST`` in a few microseconds:

- ``"stream": false`` (or absent): a fixed chat-completion JSON body with ``Content-Length``;
- ``"stream": true``: a chunked SSE stream of ``max_tokens + 3`` events (role, one per token,
  finish, ``[DONE]``), each JSON event carrying ``"emu_t_ns"`` = ``time.monotonic_ns()`` when it
  was written (the same CLOCK_MONOTONIC as the load generator's receive stamps);
- **paced** (``--tokens-per-second N``): one event per ``1/N`` s per stream, a timer each;
- **burst** (the default, 0): events written as fast as the transport takes them, stopping
  while the transport is above its high-water mark (``pause_writing``) and resuming after.

Requests may be pipelined; they are answered in order. Anything unparsable closes the connection.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from typing import cast

import orjson

__all__ = ["ChildProtocol", "event_bytes", "main"]

_JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
_DONE = b"data: [DONE]\n\n"
_LAST_CHUNK = b"0\r\n\r\n"
_BODY = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "fox " * 8}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 8, "completion_tokens": 8, "total_tokens": 16},
    }
)
_JSON_RESPONSE = (_JSON_HEAD % len(_BODY)) + _BODY
_CHUNK = b'{"id":"chatcmpl-bench","object":"chat.completion.chunk","choices":[{"index":0,'
_ROLE = _CHUNK + b'"delta":{"role":"assistant"}}],'
_TOKEN = _CHUNK + b'"delta":{"content":"fox "}}],'
_FINISH = _CHUNK + b'"delta":{},"finish_reason":"length"}],'
_MAX_HEAD = 64 * 1024


def event_bytes(prefix: bytes) -> bytes:
    """One chunk-framed SSE event whose JSON ends with a fresh ``emu_t_ns`` stamp."""
    payload = b"data: " + prefix + b'"emu_t_ns":%d}\n\n' % time.monotonic_ns()
    return b"%x\r\n%b\r\n" % (len(payload), payload)


def _done_chunk() -> bytes:
    return b"%x\r\n%b\r\n" % (len(_DONE), _DONE) + _LAST_CHUNK


class _Stream:
    """One SSE response in progress: which event comes next."""

    __slots__ = ("left", "sent_role")

    def __init__(self, tokens: int) -> None:
        self.left = tokens
        self.sent_role = False

    def next_event(self) -> bytes | None:
        """The next event's bytes (stamped now), or None after the last one."""
        if not self.sent_role:
            self.sent_role = True
            return event_bytes(_ROLE)
        if self.left > 0:
            self.left -= 1
            return event_bytes(_TOKEN)
        if self.left == 0:
            self.left = -1
            return event_bytes(_FINISH)
        return None


class ChildProtocol(asyncio.Protocol):
    """One client connection: parse requests, answer them in order, stream with or without pacing."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._stream: _Stream | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None
        self._stream = None

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._stream is not None and not self._interval:
            self._burst()

    def data_received(self, data: bytes) -> None:
        self._buf = self._buf + data if self._buf else data
        self._serve()

    def _serve(self) -> None:
        """Answer complete buffered requests until one starts a stream or data runs out."""
        while self._stream is None and self._transport is not None:
            buf = self._buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    self._transport.close()
                return
            length = 0
            lower = buf[:end].lower()
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                line_end = lower.find(b"\r\n", at + 2)
                length = int(lower[at + 17 : line_end if line_end >= 0 else end])
            total = end + 4 + length
            if len(buf) < total:
                return
            body = buf[end + 4 : total]
            self._buf = buf[total:]
            self._answer(body)

    def _answer(self, body: bytes) -> None:
        assert self._transport is not None
        try:
            request = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            self._transport.close()
            return
        if not isinstance(request, dict) or not request.get("stream"):
            self._transport.write(_JSON_RESPONSE)
            return
        self._transport.write(_SSE_HEAD)
        self._stream = _Stream(int(request.get("max_tokens") or 16))
        if self._interval:
            self._tick()
        else:
            self._burst()

    def _tick(self) -> None:
        self._timer = None
        stream, transport = self._stream, self._transport
        if stream is None or transport is None:
            return
        event = stream.next_event()
        if event is None:
            self._finish()
            return
        transport.write(event)
        self._timer = asyncio.get_running_loop().call_later(self._interval, self._tick)

    def _burst(self) -> None:
        stream, transport = self._stream, self._transport
        while stream is not None and transport is not None and not self._paused:
            event = stream.next_event()
            if event is None:
                self._finish()
                return
            transport.write(event)

    def _finish(self) -> None:
        assert self._transport is not None
        self._transport.write(_done_chunk())
        self._stream = None
        if self._buf:
            self._serve()


async def _serve_forever(host: str, port: int, interval: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: ChildProtocol(interval), host, port, backlog=4096, reuse_address=True)
    for sock in server.sockets:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fastchild", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens-per-second", type=float, default=0.0, help="paced SSE (0 = burst)")
    args = parser.parse_args(argv)
    interval = 1.0 / args.tokens_per_second if args.tokens_per_second > 0 else 0.0
    import uvloop

    try:
        uvloop.run(_serve_forever(args.host, args.port, interval))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
