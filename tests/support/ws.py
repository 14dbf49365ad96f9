"""A minimal blocking WebSocket client on wsproto, for tests."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)


class WSRejected(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"upgrade rejected with HTTP {status}")
        self.status = status


class WSClosed(Exception):
    pass


class WSClient:
    def __init__(
        self,
        port: int,
        path: str = "/logs/stream",
        *,
        host: str = "127.0.0.1",
        subprotocols: tuple[str, ...] = (),
        timeout: float = 10.0,
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.subprotocol: str | None = None
        self._texts: list[str] = []
        self._parts: list[str] = []
        self.closed = False
        self.sock.sendall(self.ws.send(Request(host=f"{host}:{port}", target=path, subprotocols=list(subprotocols))))
        deadline = time.monotonic() + timeout
        while True:
            for event in self._pump(deadline):
                if isinstance(event, AcceptConnection):
                    self.subprotocol = event.subprotocol
                    return
                if isinstance(event, RejectConnection):
                    self.sock.close()
                    raise WSRejected(event.status_code)

    def _pump(self, deadline: float) -> list[Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no WebSocket data in time")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            self.ws.receive_data(None)
        else:
            self.ws.receive_data(data)
        events = list(self.ws.events())
        for event in events:
            if isinstance(event, TextMessage):
                self._parts.append(event.data)
                if event.message_finished:
                    self._texts.append("".join(self._parts))
                    self._parts = []
            elif isinstance(event, Ping):
                self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.closed = True
            elif isinstance(event, RejectData):
                pass
        if self.closed and not events and not self._texts:
            raise WSClosed("connection closed")
        return events

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.ws.send(Message(data=text)))

    def send_json(self, obj: Any) -> None:
        self.send_text(json.dumps(obj))

    def recv_text(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while not self._texts:
            if self.closed:
                raise WSClosed("connection closed")
            self._pump(deadline)
        return self._texts.pop(0)

    def recv_json(self, timeout: float = 10.0) -> Any:
        return json.loads(self.recv_text(timeout))

    def expect_silence(self, seconds: float) -> None:
        """Assert that nothing arrives for ``seconds``."""
        deadline = time.monotonic() + seconds
        try:
            while not self._texts:
                self._pump(deadline)
        except (TimeoutError, OSError):
            pass
        assert not self._texts, f"unexpected frames: {self._texts}"

    def wait_closed(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        try:
            while not self.closed:
                self._pump(deadline)
        except WSClosed:
            return True
        except (TimeoutError, OSError):
            return self.closed
        return True

    def close(self) -> None:
        try:
            if not self.closed:
                self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
        except Exception:
            pass
        self.sock.close()

    def __enter__(self) -> WSClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
