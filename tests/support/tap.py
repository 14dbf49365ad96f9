"""A recording TCP relay: sits between the proxy and a child and keeps what the child sent.

Lets a test compare the bytes a client got through the proxy with the bytes the child
actually produced for that very response (ids and timestamps differ between two requests,
so comparing against a second, direct request would not be byte-exact).
"""

from __future__ import annotations

import asyncio
import threading


class Tap:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.responses: list[bytearray] = []  # child -> proxy bytes, one buffer per connection
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        child_r, child_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        record = bytearray()
        self.responses.append(record)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, keep: bytearray | None) -> None:
            try:
                while data := await src.read(65536):
                    if keep is not None:
                        keep += data
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(client_r, child_w, None), pump(child_r, client_w, record))

    def start(self) -> Tap:
        self._thread.start()
        self._ready.wait(5)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def split_responses(raw: bytes) -> list[tuple[bytes, bytes]]:
    """Split the bytes of one connection into (head, raw body) pairs (chunked or length)."""
    out: list[tuple[bytes, bytes]] = []
    pos = 0
    while pos < len(raw):
        end = raw.index(b"\r\n\r\n", pos) + 4
        head = raw[pos:end]
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            i = end
            while True:
                nl = raw.index(b"\r\n", i)
                size = int(raw[i:nl].split(b";")[0], 16)
                i = nl + 2 + size + 2
                if size == 0:
                    break
            out.append((head, raw[end:i]))
            pos = i
        else:
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            out.append((head, raw[end : end + length]))
            pos = end + length
    return out
