"""The client's EOF, in each state of its connection, at the protocol tier (no sockets, no sleeps).

An EOF while a forwarded request is in flight is the client leaving (nginx's default reading
of it): the exchange is cancelled as if the connection were lost, the child connection is
aborted, the lease is released once, and the transport is left to close itself
(``eof_received`` answers falsy). An EOF on an idle connection or in the middle of a request
head keeps its old meaning: close, and answer nothing that was not complete. A local answer
being prepared is still written to the half-open connection; a local event stream ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from hal0proxy.http.errors import json_response
from hal0proxy.http.messages import FullResponse, HttpRequest, LocalResponse, StreamResponse
from hal0proxy.proxy.exchange import Exchange
from hal0proxy.proxy.exchange_state import ExchangeState
from tests.proxy.protocol.mocks import (
    MODELS_REQUEST,
    SSE_HEAD,
    Harness,
    ScriptedPool,
    ScriptedRouter,
    chat_request,
    event_chunk,
    settle,
)

S = ExchangeState


def _current(h: Harness) -> Exchange:
    exchange = h.conn.exchange
    assert exchange is not None
    return exchange


def _client_eof(h: Harness) -> None:
    """The client's FIN, then what the transport does when ``eof_received`` answers falsy."""
    keep_half_open = h.conn.eof_received()
    assert not keep_half_open
    h.client.close()
    h.conn.connection_lost(None)


async def test_eof_while_routing_cancels_the_wait_and_the_load_is_not_asked_again() -> None:
    router = ScriptedRouter(fast=False)
    router.gate = asyncio.Event()  # a cold load the request waits for
    pool = ScriptedPool()
    h = Harness(router=router, pool=pool)
    h.send(chat_request())
    exchange = _current(h)
    await settle()
    assert exchange.state is S.ROUTING
    assert not h.conn.eof_received()
    assert exchange.state is S.CANCELLED  # at the EOF itself, not when the transport has closed
    h.client.close()
    h.conn.connection_lost(None)
    router.gate.set()  # the load finishes after the waiter left
    await settle()
    assert router.leases == [] and pool.connects == 0
    # No child connection was cut: not a client disconnect in the metric's sense.
    assert h.ctx.stats.client_disconnects == 0
    assert h.client.buffer == b"" and h.observed == []


async def test_eof_while_connecting_releases_the_lease_once() -> None:
    router = ScriptedRouter()
    pool = ScriptedPool()
    h = Harness(router=router, pool=pool)
    pool.take_idle(9)  # no pooled connection: a connect is needed
    pool.gate = asyncio.Event()
    pool.script = ["wait"]
    h.send(chat_request())
    exchange = _current(h)
    await settle()
    assert exchange.state is S.CONNECTING
    _client_eof(h)
    assert exchange.state is S.CANCELLED
    pool.gate.set()
    await settle()
    assert len(router.leases) == 1 and router.all_released_once()
    assert h.client.buffer == b"" and h.observed == []


def test_eof_while_waiting_for_the_childs_head_aborts_the_child() -> None:
    router = ScriptedRouter()
    h = Harness(router=router)
    h.send(chat_request())
    exchange = _current(h)
    assert exchange.state is S.SENT
    assert not h.conn.eof_received()
    assert exchange.state is S.CANCELLED and h.child.aborted
    assert h.ctx.stats.client_disconnects == 1 and router.all_released_once()
    h.client.close()
    h.conn.connection_lost(None)  # the transport's close: nothing counted or released twice
    assert h.ctx.stats.client_disconnects == 1 and router.all_released_once()
    assert h.ctx.stats.connections_open == 0
    assert h.client.buffer == b"" and h.observed == []
    # The child's late answer cannot revive the exchange.
    h.upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    assert exchange.state is S.CANCELLED and h.client.buffer == b""


def test_eof_while_relaying_a_stream_aborts_the_child() -> None:
    router = ScriptedRouter()
    h = Harness(router=router)
    h.send(chat_request(stream=True))
    exchange = _current(h)
    h.upstream.data_received(SSE_HEAD + event_chunk(0))
    assert exchange.state is S.HEAD_RELAYED
    h.client.take()
    _client_eof(h)
    assert exchange.state is S.CANCELLED and h.child.aborted
    assert h.ctx.stats.client_disconnects == 1 and router.all_released_once()
    assert h.client.buffer == b""


def test_eof_on_an_idle_keepalive_connection_just_closes() -> None:
    h = Harness()
    h.send(chat_request())
    h.upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    assert h.conn.exchange is None and h.observed == [("m", 200)]
    h.client.take()
    _client_eof(h)
    assert h.ctx.stats.client_disconnects == 0 and not h.child.aborted
    assert h.client.buffer == b""


def test_eof_in_the_middle_of_a_request_head_closes_without_an_answer() -> None:
    h = Harness()
    h.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
    _client_eof(h)
    assert h.conn.exchange is None and h.client.buffer == b"" and h.observed == []
    assert h.ctx.stats.client_disconnects == 0


def test_eof_right_behind_a_request_answered_at_once_loses_nothing() -> None:
    h = Harness()
    h.send(MODELS_REQUEST)  # answered synchronously, before the EOF is read
    _client_eof(h)
    assert h.client.buffer.startswith(b"HTTP/1.1 200 OK\r\n") and h.observed == [(None, 200)]


async def test_eof_while_a_local_answer_is_prepared_keeps_it_and_then_closes() -> None:
    gate = asyncio.Event()

    async def local(req: HttpRequest) -> LocalResponse:
        await gate.wait()  # an admin action under way
        return FullResponse(json_response(200, {"ok": True}))

    h = Harness(router=ScriptedRouter())
    h.ctx.local = local
    h.send(b"GET /api/slots HTTP/1.1\r\nHost: x\r\n\r\n")
    await settle()
    assert h.conn.eof_received() is True  # half-open: the answer is still written
    gate.set()
    await settle()
    assert h.client.buffer.startswith(b"HTTP/1.1 200 OK\r\n") and h.client.buffer.endswith(b'{"ok":true}')
    assert h.client.closing  # and nothing pipelined behind it is taken


async def test_eof_ends_a_local_event_stream_at_once() -> None:
    closed: list[bool] = []
    forever = asyncio.Event()

    async def events() -> AsyncIterator[bytes]:
        yield b"event: snapshot\ndata: {}\n\n"
        await forever.wait()  # a quiet subscription (the next keep-alive comment is far away)
        yield b": keep-alive\n\n"

    async def local(req: HttpRequest) -> LocalResponse:
        return StreamResponse(200, [(b"content-type", b"text/event-stream")], events(), lambda: closed.append(True))

    h = Harness(router=ScriptedRouter())
    h.ctx.local = local
    h.send(b"GET /api/v1/adapter/events HTTP/1.1\r\nHost: x\r\n\r\n")
    await settle()
    assert b"event: snapshot" in h.client.take()
    assert not h.conn.eof_received()
    await settle()
    assert closed == [True]  # the subscription ended before the transport even closed
    h.client.close()
    h.conn.connection_lost(None)
    await settle()
    assert closed == [True] and h.ctx.stats.connections_open == 0


async def test_eof_before_a_local_event_stream_starts_never_starts_it() -> None:
    gate = asyncio.Event()
    closed: list[bool] = []

    async def events() -> AsyncIterator[bytes]:
        yield b"event: snapshot\ndata: {}\n\n"

    async def local(req: HttpRequest) -> LocalResponse:
        await gate.wait()
        return StreamResponse(200, [(b"content-type", b"text/event-stream")], events(), lambda: closed.append(True))

    h = Harness(router=ScriptedRouter())
    h.ctx.local = local
    h.send(b"GET /api/v1/adapter/events HTTP/1.1\r\nHost: x\r\n\r\n")
    await settle()
    assert h.conn.eof_received() is True  # not a stream yet: a local answer being prepared
    gate.set()
    await settle()
    assert closed == [True] and h.client.buffer == b"" and h.client.closing
