"""A deliberately small HTTP/1.1 client over raw asyncio streams, for byte-exact assertions."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class RawResponse:
    status: int
    headers: dict[bytes, bytes]
    raw_body: bytes  # exactly as framed on the wire (chunk sizes included)
    body: bytes  # de-chunked payload
    header_list: list[tuple[bytes, bytes]] = field(default_factory=list)


async def read_response(reader: asyncio.StreamReader, method: bytes = b"POST") -> RawResponse:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    header_list = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        header_list.append((name.strip().lower(), value.strip()))
    headers = dict(header_list)
    if method == b"HEAD" or status in (204, 304):
        return RawResponse(status, headers, b"", b"", header_list)
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        raw = bytearray()
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            raw += size_line
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                raw += await reader.readuntil(b"\r\n")
                break
            data = await reader.readexactly(size + 2)
            raw += data
            body += data[:-2]
        return RawResponse(status, headers, bytes(raw), bytes(body), header_list)
    if b"content-length" in headers:
        data = await reader.readexactly(int(headers[b"content-length"]))
        return RawResponse(status, headers, data, data, header_list)
    data = await reader.read()
    return RawResponse(status, headers, data, data, header_list)


def build_request(method: str, path: str, body: bytes = b"", headers: list[tuple[str, str]] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test"]
    names = {k.lower() for k, _ in headers or []}
    lines += [f"{k}: {v}" for k, v in headers or []]
    if "transfer-encoding" not in names and (body or method in ("POST", "PUT")):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def roundtrip(
    port: int, method: str, path: str, body: bytes = b"", headers: list[tuple[str, str]] | None = None
) -> RawResponse:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(build_request(method, path, body, headers))
        return await read_response(reader, method.encode())
    finally:
        writer.close()
