"""Protocol-tier doubles: a transport that records, and a loop whose clock only moves when told.

In the style of uvicorn's protocol tests: the connection under test is a plain
``asyncio.Protocol``; feeding it bytes and moving the clock exercises its states and timers
without sockets and without real sleeps.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any

from hal0proxy.proxy.context import ProxyContext
from hal0proxy.proxy.downstream import ClientConnection
from hal0proxy.proxy.settings import ProxySettings
from hal0proxy.proxy.upstream import ChildConnectTimeout, ChildUnreachable, UpstreamConnection, UpstreamPool
from hal0proxy.routing.classify import Classified
from hal0proxy.routing.contract import Lease, Router, StaticRouter

CHILD_PORT = 9


class MockTransport:
    """Records what is written and how reading was paused; never touches a socket."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.closing = False
        self.aborted = False
        self.read_paused = False
        self.pause_calls = 0
        self.resume_calls = 0
        self.limits: tuple[int, int] | None = None

    # writing
    def write(self, data: bytes) -> None:
        assert not self.closing, "write after close"
        self.buffer += data

    def writelines(self, pieces: Any) -> None:
        for piece in pieces:
            self.write(piece)

    def take(self) -> bytes:
        out = bytes(self.buffer)
        self.buffer.clear()
        return out

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.limits = (high or 0, low or 0)

    # reading
    def pause_reading(self) -> None:
        self.pause_calls += 1
        self.read_paused = True

    def resume_reading(self) -> None:
        self.resume_calls += 1
        self.read_paused = False

    # lifetime
    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default


class MockTimer:
    def __init__(self, loop: MockLoop, when: float, callback: Callable[..., None], args: tuple[Any, ...]) -> None:
        self._loop = loop
        self._when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def when(self) -> float:
        return self._when

    def cancel(self) -> None:
        self.cancelled = True


class MockLoop:
    """``time``/``call_at``/``call_later``/``call_soon`` on a clock moved by ``advance``.

    ``create_task`` is refused unless ``tasks`` is set: the fast path must not need a task (a
    task on that path would be a regression). With ``tasks`` set (the slow paths: routing,
    connecting, rerouting) tasks run on the real running loop, and the test lets them run
    with ``settle()``; timers still only fire when the test moves the clock.
    """

    def __init__(self, tasks: bool = False) -> None:
        self.tasks = tasks
        self.tasks_created = 0
        self.now = 1000.0
        self._queue: list[tuple[float, int, MockTimer]] = []
        self._order = itertools.count()
        self.timers_created = 0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., None], *args: Any) -> MockTimer:
        timer = MockTimer(self, when, callback, args)
        self.timers_created += 1
        heapq.heappush(self._queue, (when, next(self._order), timer))
        return timer

    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> MockTimer:
        return self.call_at(self.now + delay, callback, *args)

    def call_soon(self, callback: Callable[..., None], *args: Any) -> MockTimer:
        return self.call_at(self.now, callback, *args)

    def create_task(self, coro: Any) -> Any:
        if not self.tasks:
            coro.close()
            raise AssertionError("this path must not start a task")
        self.tasks_created += 1
        return asyncio.get_running_loop().create_task(coro)

    def pending(self) -> int:
        return sum(1 for _, _, timer in self._queue if not timer.cancelled)

    def advance(self, seconds: float) -> None:
        """Move the clock, running every callback that falls due, in order."""
        target = self.now + seconds
        while self._queue and self._queue[0][0] <= target:
            when, _, timer = heapq.heappop(self._queue)
            if timer.cancelled:
                continue
            self.now = max(self.now, when)
            timer.callback(*timer.args)
        self.now = target


class CountingLease:
    """A lease that counts its releases: every test can assert exactly one."""

    def __init__(self, port: int, slot: str) -> None:
        self.port = port
        self.slot = slot
        self.releases = 0

    def release(self) -> None:
        self.releases += 1


class ScriptedRouter:
    """A router whose answers the test decides, and which remembers every lease it gave.

    ``fast``: ``acquire_now`` answers at once (else ``acquire`` is used, and waits on
    ``gate`` when one is set). ``reroute_ports``: the answers of successive ``reroute`` calls
    (``None``: nowhere to go). ``acquire_error``: what ``acquire`` raises.
    """

    def __init__(self, port: int = CHILD_PORT, *, fast: bool = True) -> None:
        self.port = port
        self.fast = fast
        self.gate: asyncio.Event | None = None
        self.acquire_error: Exception | None = None
        self.reroute_ports: list[int | None] = []
        self.reroute_calls = 0
        self.hung: list[int] = []
        self.leases: list[CountingLease] = []

    def _lease(self, port: int) -> CountingLease:
        lease = CountingLease(port, "m")
        self.leases.append(lease)
        return lease

    def acquire_now(self, request: Classified) -> Lease | None:
        return self._lease(self.port) if self.fast else None

    async def acquire(self, request: Classified) -> Lease:
        if self.gate is not None:
            await self.gate.wait()
        if self.acquire_error is not None:
            raise self.acquire_error
        return self._lease(self.port)

    async def reroute(self, lease: Lease) -> Lease | None:
        self.reroute_calls += 1
        port = self.reroute_ports.pop(0) if self.reroute_ports else None
        return self._lease(port) if port is not None else None

    def child_hung(self, lease: Lease) -> None:
        self.hung.append(lease.port)

    def models_payload(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "m", "object": "model"}]}

    def all_released_once(self) -> bool:
        return all(lease.releases == 1 for lease in self.leases)


class ScriptedPool(UpstreamPool):
    """A pool whose connects the test decides: ``"ok"``, ``"refused"``, ``"timeout"`` or
    ``"wait"`` (until ``gate`` is set); every connection made is over a MockTransport."""

    def __init__(self) -> None:
        super().__init__()
        self.script: list[str] = []
        self.gate: asyncio.Event | None = None
        self.made: list[UpstreamConnection] = []

    async def connect(self, port: int) -> UpstreamConnection:
        self.connects += 1
        step = self.script.pop(0) if self.script else "ok"
        if step == "refused":
            raise ChildUnreachable(f"connect to 127.0.0.1:{port} failed: refused")
        if step == "timeout":
            raise ChildConnectTimeout(f"connect to 127.0.0.1:{port} timed out")
        if step == "wait":
            assert self.gate is not None
            await self.gate.wait()
        conn = UpstreamConnection(self, port)
        conn.connection_made(MockTransport())  # type: ignore[arg-type]
        self.made.append(conn)
        return conn


async def settle() -> None:
    """Let the tasks the connection started run until they wait on something."""
    for _ in range(20):
        await asyncio.sleep(0)


class Harness:
    """One client connection over a MockTransport, with a pooled child connection ready."""

    def __init__(self, *, router: Router | None = None, pool: UpstreamPool | None = None, **settings: Any) -> None:
        self.loop = MockLoop(tasks=router is not None)
        self.settings = ProxySettings(**settings)
        self.pool = pool if pool is not None else UpstreamPool()
        self.observed: list[tuple[str | None, int]] = []
        self.ctx = ProxyContext(
            router=router if router is not None else StaticRouter({"m": CHILD_PORT}),
            pool=self.pool,
            settings=self.settings,
            observe=lambda slot, status, _s, _t: self.observed.append((slot, status)),
        )
        self.client = MockTransport()
        self.conn = ClientConnection(self.ctx, loop=self.loop)  # type: ignore[arg-type]
        self.conn.connection_made(self.client)  # type: ignore[arg-type]
        self.child = MockTransport()
        self.upstream = UpstreamConnection(self.pool, CHILD_PORT)
        self.upstream.connection_made(self.child)  # type: ignore[arg-type]
        self.pool.release(self.upstream)

    def send(self, data: bytes) -> None:
        self.conn.data_received(data)


def chat_request(model: str = "m", *, stream: bool = False, extra: bytes = b"") -> bytes:
    body = b'{"model":"%s","stream":%s,"messages":[]}' % (model.encode(), b"true" if stream else b"false")
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n%b\r\n%b" % (len(body), extra, body)
    )


MODELS_REQUEST = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
JSON_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def event_chunk(i: int) -> bytes:
    payload = b'data: {"i":%d}\n\n' % i
    return b"%x\r\n%b\r\n" % (len(payload), payload)
