"""Bad input and abrupt clients cost nothing lasting: no descriptor or connection leak."""

from __future__ import annotations

import asyncio
import json
import os
import time

from tests.proxy.test_children import fake
from tests.support.proxy import start_proxy
from tests.support.rawhttp import build_request, read_response, roundtrip


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def abuse(port: int) -> None:
    big_len = 65 * 1024 * 1024  # past the 64 MiB default body limit
    for _ in range(10):
        assert (await roundtrip(port, "POST", "/v1/chat/completions", b"{nope")).status == 400
        assert (await roundtrip(port, "POST", "/v1/chat/completions", b'{"model":"x"}')).status == 404
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GARBAGE\r\n\r\n")
        assert (await read_response(reader)).status == 400
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % big_len)
        assert (await read_response(reader)).status == 413
        writer.close()
        # half a request, then gone
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
        writer.transport.abort()
        # a stream abandoned after its first event
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = {"model": "m", "stream": True, "max_tokens": 100000, "messages": []}
        writer.write(build_request("POST", "/v1/chat/completions", json.dumps(body).encode()))
        await reader.readuntil(b"data: ")
        writer.transport.abort()
        assert (await roundtrip(port, "POST", "/v1/chat/completions", b'{"model":"m","messages":[]}')).status == 200


def test_no_descriptor_leak_after_bad_input_and_abrupt_clients() -> None:
    child = fake("--tokens-per-second", "2000")
    proxy = start_proxy("http://127.0.0.1:1", "", "--static-route", f"m={child.port}")
    try:
        pid = proxy.proc.pid
        asyncio.run(abuse(proxy.port))
        time.sleep(0.5)
        after_first = open_fds(pid)
        asyncio.run(abuse(proxy.port))
        time.sleep(0.5)
        after_second = open_fds(pid)
        assert after_second <= after_first + 2, (after_first, after_second)
        assert proxy.proc.poll() is None  # still up
        assert proxy.request("GET", "/healthz")[0] == 200
    finally:
        proxy.stop()
        child.proc.kill()
