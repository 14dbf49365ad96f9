"""Every legal move of an exchange, one test each, at the protocol tier (no sockets, no sleeps).

The client and the child are MockTransports, the router and the pool's connects are
scripted, and the clock only moves when a test moves it. Each test asserts the state the
exchange went through, what the client read, the counters, and that every lease the router
gave out was released exactly once.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from hal0proxy.http.errors import ProxyError
from hal0proxy.proxy.exchange import Exchange
from hal0proxy.proxy.exchange_state import ENDS, LEGAL_MOVES, ExchangeState, IllegalExchangeMove
from hal0proxy.proxy.upstream import UpstreamConnection
from tests.proxy.protocol.mocks import (
    CHILD_PORT,
    JSON_RESPONSE,
    SSE_HEAD,
    Harness,
    MockTransport,
    ScriptedPool,
    ScriptedRouter,
    chat_request,
    event_chunk,
    settle,
)

S = ExchangeState
OTHER_PORT = 10


def _status(data: bytes) -> int:
    return int(data[9:12])


def _error(data: bytes) -> tuple[str, bytes]:
    head, body = data.split(b"\r\n\r\n", 1)
    code = orjson.loads(body)["error"]["code"]
    assert isinstance(code, str)
    return code, head.lower()


def _current(h: Harness) -> Exchange:
    exchange = h.conn.exchange
    assert exchange is not None
    return exchange


def _sent(*, stream: bool = False, **settings: float) -> tuple[Harness, ScriptedRouter, Exchange]:
    """A harness whose client has sent one chat request, forwarded on the fast path."""
    router = ScriptedRouter()
    h = Harness(router=router, **settings)  # type: ignore[arg-type]
    h.send(chat_request(stream=stream))
    return h, router, _current(h)


def _scripted(
    *, fast: bool = True, pooled: bool = True, **settings: float
) -> tuple[Harness, ScriptedRouter, ScriptedPool]:
    router = ScriptedRouter(fast=fast)
    pool = ScriptedPool()
    h = Harness(router=router, pool=pool, **settings)  # type: ignore[arg-type]
    if not pooled:
        pool.take_idle(CHILD_PORT)  # the harness's pooled connection is not there
    return h, router, pool


def _child(pool: ScriptedPool, index: int = -1) -> tuple[UpstreamConnection, MockTransport]:
    conn = pool.made[index]
    transport = conn.transport
    assert isinstance(transport, MockTransport)
    return conn, transport


# -- the table itself -------------------------------------------------------------------------


def test_the_table_names_every_state_and_ends_are_final() -> None:
    assert set(LEGAL_MOVES) == set(ExchangeState)
    for end in ENDS:
        assert LEGAL_MOVES[end] == frozenset()
    # the only way back is the retry and the reroutes, and nothing leaves HEAD_RELAYED but an end
    assert LEGAL_MOVES[S.HEAD_RELAYED] == ENDS
    assert S.CONNECTING in LEGAL_MOVES[S.SENT] and S.ROUTING in LEGAL_MOVES[S.SENT]
    assert S.ROUTING in LEGAL_MOVES[S.CONNECTING]


def test_an_illegal_move_raises_and_leaves_the_state_alone() -> None:
    h = Harness()
    h.send(chat_request())
    exchange = _current(h)
    assert exchange.state is S.SENT
    with pytest.raises(IllegalExchangeMove) as caught:
        exchange._move(S.DONE)  # no response yet: DONE is not reachable from SENT
    assert caught.value.old is S.SENT and caught.value.new is S.DONE
    assert caught.value.status_hint == 500
    assert exchange.state is S.SENT


def test_a_late_callback_from_the_child_cannot_revive_an_ended_exchange() -> None:
    h = Harness()
    h.send(chat_request())
    exchange = _current(h)
    h.upstream.data_received(JSON_RESPONSE)
    assert exchange.state is S.DONE
    with pytest.raises(IllegalExchangeMove):
        exchange._move(S.HEAD_RELAYED)


# -- the fast path: RECEIVED -> SENT -> HEAD_RELAYED -> DONE -----------------------------------


def test_fast_path_moves_received_sent_head_relayed_done_without_a_task() -> None:
    router = ScriptedRouter()
    h = Harness(router=router)
    h.loop.tasks = False  # the fast path must not need a task
    h.send(chat_request())
    exchange = _current(h)
    assert exchange.state is S.SENT
    h.upstream.data_received(JSON_RESPONSE[:40])
    assert exchange.state is S.SENT  # a partial head is not a head
    h.upstream.data_received(JSON_RESPONSE[40:])
    assert exchange.state is S.DONE and h.conn.exchange is None
    assert _status(h.client.take()) == 200
    assert router.all_released_once() and len(router.leases) == 1
    assert h.observed == [("m", 200)]
    assert h.pool.idle_count() == 1 and not h.client.closing


def test_received_to_failed_on_a_bad_request_body() -> None:
    router = ScriptedRouter()
    h = Harness(router=router)
    body = b"{nope"
    h.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
    out = h.client.take()
    assert _status(out) == 400 and _error(out)[0] == "request.invalid_json"
    assert router.leases == [] and h.conn.exchange is None and not h.client.closing


def test_head_request_relays_the_head_only_and_keeps_the_connection() -> None:
    router = ScriptedRouter()
    h = Harness(router=router)
    h.loop.tasks = False
    h.send(b"HEAD /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    exchange = _current(h)
    assert exchange.is_head and h.child.buffer.startswith(b"HEAD ")
    h.upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n")
    assert exchange.state is S.DONE
    out = h.client.take()
    assert _status(out) == 200 and out.endswith(b"\r\n\r\n") and b"content-length: 2" in out.lower()
    assert h.pool.idle_count() == 1 and not h.client.closing


def test_an_http10_client_gets_a_chunked_stream_dechunked_and_closed() -> None:
    h = Harness()
    h.send(chat_request(stream=True).replace(b"HTTP/1.1", b"HTTP/1.0", 1))
    exchange = _current(h)
    assert exchange.wants_plain_body()
    h.upstream.data_received(SSE_HEAD + event_chunk(0) + event_chunk(1) + b"0\r\n\r\n")
    assert exchange.state is S.DONE
    out = h.client.take()
    head, body = out.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding" not in head.lower() and b"connection: close" in head.lower()
    assert body == b'data: {"i":0}\n\ndata: {"i":1}\n\n'
    assert h.client.closing


# -- routing: RECEIVED -> ROUTING -> CONNECTING -> SENT, ROUTING -> FAILED ----------------------


async def test_routing_waits_for_the_router_then_connects_and_sends() -> None:
    h, router, pool = _scripted(fast=False, pooled=False)
    router.gate = asyncio.Event()
    h.send(chat_request())
    exchange = _current(h)
    assert exchange.state is S.ROUTING
    await settle()
    assert exchange.state is S.ROUTING and h.client.buffer == b""
    router.gate.set()
    await settle()
    assert exchange.state is S.SENT and pool.connects == 1
    conn, child = _child(pool)
    assert child.buffer.startswith(b"POST /v1/chat/completions")
    conn.data_received(JSON_RESPONSE)
    assert exchange.state is S.DONE and _status(h.client.take()) == 200
    assert router.all_released_once() and len(router.leases) == 1


async def test_routing_to_failed_when_the_router_refuses() -> None:
    h, router, pool = _scripted(fast=False)
    router.acquire_error = ProxyError(404, "dispatch.no_route", "no route for model 'm'")
    h.send(chat_request())
    exchange = _current(h)
    await settle()
    assert exchange.state is S.FAILED
    out = h.client.take()
    assert _status(out) == 404 and _error(out)[0] == "dispatch.no_route"
    assert router.leases == [] and pool.connects == 0 and not h.client.closing


# -- connecting: RECEIVED -> CONNECTING -> SENT, CONNECTING -> FAILED (504) ---------------------


async def test_connecting_when_no_pooled_connection_is_idle() -> None:
    h, router, pool = _scripted(pooled=False)
    pool.gate = asyncio.Event()
    pool.script = ["wait"]
    h.send(chat_request())
    exchange = _current(h)
    assert exchange.state is S.CONNECTING
    await settle()
    assert exchange.state is S.CONNECTING
    pool.gate.set()
    await settle()
    assert exchange.state is S.SENT
    _child(pool)[0].data_received(JSON_RESPONSE)
    assert exchange.state is S.DONE and router.all_released_once()


async def test_connect_timeout_is_504_upstream_timeout() -> None:
    h, router, pool = _scripted(pooled=False)
    pool.script = ["timeout"]
    h.send(chat_request())
    exchange = _current(h)
    await settle()
    assert exchange.state is S.FAILED
    out = h.client.take()
    assert _status(out) == 504 and _error(out)[0] == "upstream.timeout"
    assert router.all_released_once() and h.ctx.stats.reroutes == 0


# -- reroute: CONNECTING -> ROUTING -> CONNECTING, x1, x2, exhausted, hopeless -----------------


@pytest.mark.parametrize("refusals", [1, 2])
async def test_a_refused_connect_is_rerouted_up_to_twice(refusals: int) -> None:
    h, router, pool = _scripted(pooled=False)
    pool.script = ["refused"] * refusals
    router.reroute_ports = [OTHER_PORT] * refusals
    h.send(chat_request())
    exchange = _current(h)
    await settle()
    assert exchange.state is S.SENT
    conn, _ = _child(pool)
    assert conn.port == OTHER_PORT
    conn.data_received(JSON_RESPONSE)
    assert exchange.state is S.DONE and _status(h.client.take()) == 200
    assert router.reroute_calls == refusals and h.ctx.stats.reroutes == refusals
    assert len(router.leases) == refusals + 1 and router.all_released_once()


async def test_a_third_refused_connect_is_503_slot_loading_with_retry_after() -> None:
    h, router, pool = _scripted(pooled=False)
    pool.script = ["refused"] * 3
    router.reroute_ports = [OTHER_PORT, OTHER_PORT, OTHER_PORT]
    h.send(chat_request())
    exchange = _current(h)
    await settle()
    assert exchange.state is S.FAILED
    out = h.client.take()
    code, head = _error(out)
    assert _status(out) == 503 and code == "slot.loading" and b"retry-after: 1" in head
    assert router.reroute_calls == 2  # the third failure is not asked about
    assert h.ctx.stats.reroutes == 3 and pool.connects == 3
    assert router.all_released_once() and len(router.leases) == 3


async def test_a_refused_connect_with_nowhere_else_to_go_is_502() -> None:
    h, router, pool = _scripted(pooled=False)
    pool.script = ["refused"]
    h.send(chat_request())
    exchange = _current(h)
    await settle()
    assert exchange.state is S.FAILED
    out = h.client.take()
    assert _status(out) == 502 and _error(out)[0] == "dispatch.upstream_unavailable"
    assert router.reroute_calls == 1 and router.all_released_once()


# -- retry: SENT -> CONNECTING, once; then SENT -> ROUTING ------------------------------------


async def test_a_reused_connection_closed_by_the_child_is_retried_once_on_a_fresh_one() -> None:
    h, router, pool = _scripted()
    h.upstream.requests = 1  # it has served a request before: reused
    h.send(chat_request())
    exchange = _current(h)
    h.upstream.connection_lost(None)  # closed by the child before any byte of the response
    assert exchange.state is S.CONNECTING
    await settle()
    assert exchange.state is S.SENT and h.ctx.stats.retries == 1
    conn, child = _child(pool)
    assert child.buffer.startswith(b"POST /v1/chat/completions")
    conn.data_received(JSON_RESPONSE)
    assert exchange.state is S.DONE and _status(h.client.take()) == 200
    assert len(router.leases) == 1 and router.all_released_once()


async def test_a_child_dying_before_it_answers_is_rerouted_not_retried_twice() -> None:
    h, router, pool = _scripted()
    router.reroute_ports = [OTHER_PORT]
    h.upstream.requests = 1
    h.send(chat_request())
    exchange = _current(h)
    h.upstream.connection_lost(None)
    await settle()
    conn, _ = _child(pool)
    conn.connection_lost(None)  # the fresh connection dies too: not retried again, rerouted
    assert exchange.state is S.ROUTING
    await settle()
    assert exchange.state is S.SENT and router.reroute_calls == 1
    conn2, _ = _child(pool)
    assert conn2.port == OTHER_PORT
    conn2.data_received(JSON_RESPONSE)
    assert exchange.state is S.DONE and _status(h.client.take()) == 200
    assert h.ctx.stats.retries == 1 and h.ctx.stats.reroutes == 1
    assert len(router.leases) == 2 and router.all_released_once()


async def test_a_fresh_connection_dying_with_nowhere_to_go_is_502() -> None:
    h, router, pool = _scripted(pooled=False)
    h.send(chat_request())
    exchange = _current(h)
    await settle()
    _child(pool)[0].connection_lost(None)
    assert exchange.state is S.ROUTING
    await settle()
    assert exchange.state is S.FAILED
    out = h.client.take()
    assert _status(out) == 502 and _error(out)[0] == "dispatch.upstream_unavailable"
    assert h.ctx.stats.retries == 0 and router.all_released_once()


# -- SENT -> FAILED: 504 first byte, garbage, a cut head ----------------------------------------


def test_first_byte_timeout_moves_sent_to_failed_with_504() -> None:
    h, router, exchange = _sent(upstream_first_byte_timeout_s=10.0)
    h.loop.advance(9.9)
    assert exchange.state is S.SENT
    h.loop.advance(0.2)
    assert exchange.state is S.FAILED and h.child.aborted
    out = h.client.take()
    assert _status(out) == 504 and _error(out)[0] == "upstream.timeout"
    assert router.all_released_once() and not h.client.closing


def test_garbage_from_the_child_moves_sent_to_failed_with_502() -> None:
    h, router, exchange = _sent()
    h.upstream.data_received(b"SPDY/9 banana\r\n\r\n")
    assert exchange.state is S.FAILED and h.child.aborted
    out = h.client.take()
    assert _status(out) == 502 and h.ctx.stats.upstream_bad_responses == 1
    assert router.all_released_once() and h.pool.idle_count() == 0


def test_a_child_lost_in_the_middle_of_its_head_is_502() -> None:
    h, router, exchange = _sent()
    h.upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-")
    h.upstream.connection_lost(None)
    assert exchange.state is S.FAILED
    out = h.client.take()
    assert _status(out) == 502 and _error(out)[0] == "dispatch.upstream_unavailable"
    assert h.ctx.stats.streams_interrupted == 1 and router.all_released_once()


# -- HEAD_RELAYED -> DONE / FAILED: stream termination ----------------------------------------


def test_a_stream_lost_between_events_ends_with_the_interrupted_event() -> None:
    h, router, exchange = _sent(stream=True)
    h.upstream.data_received(SSE_HEAD + event_chunk(0))
    assert exchange.state is S.HEAD_RELAYED
    h.upstream.connection_lost(None)
    assert exchange.state is S.DONE
    out = h.client.take()
    assert b"upstream.stream_interrupted" in out and out.endswith(b"0\r\n\r\n")
    assert not h.client.aborted and not h.client.closing  # a well-formed end: keep-alive holds
    assert h.ctx.stats.streams_interrupted == 1 and router.all_released_once()


def test_a_stream_lost_mid_event_is_cut() -> None:
    h, router, exchange = _sent(stream=True)
    h.upstream.data_received(SSE_HEAD + event_chunk(0)[:6])
    h.upstream.connection_lost(None)
    assert exchange.state is S.FAILED and h.client.aborted
    assert b"upstream.stream_interrupted" not in h.client.take()
    assert router.all_released_once()


def test_a_plain_body_lost_midway_is_cut() -> None:
    h, router, exchange = _sent()
    h.upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
    h.upstream.connection_lost(None)
    assert exchange.state is S.FAILED and h.client.aborted
    assert router.all_released_once()


def test_garbage_framing_after_the_head_is_cut_like_a_loss() -> None:
    h, router, exchange = _sent(stream=True)
    h.upstream.data_received(SSE_HEAD + event_chunk(0))
    h.upstream.data_received(b"zz\r\nnot a chunk\r\n")
    # between events when the framing broke: the interrupted event ends the stream
    assert exchange.state is S.DONE and h.ctx.stats.upstream_bad_responses == 1
    assert b"upstream.stream_interrupted" in h.client.take()
    assert router.all_released_once()


# -- the client goes away, in each state -----------------------------------------------------


async def test_client_gone_while_routing_cancels_the_wait() -> None:
    h, router, pool = _scripted(fast=False)
    router.gate = asyncio.Event()
    h.send(chat_request())
    exchange = _current(h)
    await settle()
    h.conn.connection_lost(None)
    assert exchange.state is S.CANCELLED
    router.gate.set()
    await settle()
    assert router.leases == [] and pool.connects == 0 and h.ctx.stats.client_disconnects == 0


async def test_client_gone_while_connecting_releases_the_lease_once() -> None:
    h, router, pool = _scripted(pooled=False)
    pool.gate = asyncio.Event()
    pool.script = ["wait"]
    h.send(chat_request())
    exchange = _current(h)
    await settle()
    h.conn.connection_lost(None)
    assert exchange.state is S.CANCELLED
    pool.gate.set()
    await settle()
    assert router.all_released_once() and len(router.leases) == 1


def test_client_gone_after_the_request_was_sent_aborts_the_child() -> None:
    h, router, exchange = _sent()
    h.conn.connection_lost(None)
    assert exchange.state is S.CANCELLED and h.child.aborted
    assert h.ctx.stats.client_disconnects == 1 and router.all_released_once()
    assert h.observed == []  # nothing was answered


def test_client_gone_mid_stream_aborts_the_child() -> None:
    h, router, exchange = _sent(stream=True)
    h.upstream.data_received(SSE_HEAD + event_chunk(0))
    h.conn.connection_lost(None)
    assert exchange.state is S.CANCELLED and h.child.aborted
    assert h.ctx.stats.client_disconnects == 1 and router.all_released_once()


def test_client_gone_after_a_cut_releases_nothing_twice() -> None:
    h, router, exchange = _sent()
    h.upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
    h.upstream.connection_lost(None)
    h.conn.connection_lost(None)  # the abort's consequence
    assert exchange.state is S.FAILED and router.all_released_once()


# -- shutdown ends the exchange, in each state -------------------------------------------------


async def test_shutdown_while_routing_answers_503_shutting_down() -> None:
    h, router, _ = _scripted(fast=False)
    router.gate = asyncio.Event()
    h.send(chat_request())
    exchange = _current(h)
    await settle()
    h.conn.end_now()
    assert exchange.state is S.CANCELLED
    out = h.client.take()
    code, head = _error(out)
    assert _status(out) == 503 and code == "proxy.shutting_down" and b"retry-after: 1" in head
    assert h.client.closing
    router.gate.set()
    await settle()
    assert router.leases == []


async def test_shutdown_while_connecting_answers_503_and_releases_the_lease() -> None:
    h, router, pool = _scripted(pooled=False)
    pool.gate = asyncio.Event()
    pool.script = ["wait"]
    h.send(chat_request())
    exchange = _current(h)
    await settle()
    h.conn.end_now()
    assert exchange.state is S.CANCELLED and _status(h.client.take()) == 503
    pool.gate.set()
    await settle()
    assert router.all_released_once()


def test_shutdown_after_the_request_was_sent_answers_503_and_aborts_the_child() -> None:
    h, router, exchange = _sent()
    h.conn.end_now()
    assert exchange.state is S.CANCELLED and h.child.aborted
    assert _status(h.client.take()) == 503 and h.client.closing
    assert router.all_released_once() and h.observed == [("m", 503)]


def test_shutdown_between_events_ends_the_stream_with_a_final_event() -> None:
    h, router, exchange = _sent(stream=True)
    h.upstream.data_received(SSE_HEAD + event_chunk(0))
    h.client.take()
    h.conn.end_now()
    assert exchange.state is S.CANCELLED and h.child.aborted
    out = h.client.take()
    assert b"the proxy is shutting down" in out and out.endswith(b"0\r\n\r\n")
    assert h.client.closing and not h.client.aborted
    assert h.ctx.stats.streams_interrupted == 1 and router.all_released_once()


def test_shutdown_mid_event_cuts_the_stream() -> None:
    h, router, exchange = _sent(stream=True)
    h.upstream.data_received(SSE_HEAD + event_chunk(0)[:5])
    h.conn.end_now()
    assert exchange.state is S.CANCELLED and h.client.aborted and h.child.aborted
    assert router.all_released_once()


def test_close_when_idle_waits_for_the_response_then_closes() -> None:
    h, router, exchange = _sent()
    h.ctx.draining = True
    h.conn.close_when_idle()
    assert not h.client.closing and exchange.state is S.SENT
    h.upstream.data_received(JSON_RESPONSE)
    assert exchange.state is S.DONE and _status(h.client.take()) == 200
    assert h.client.closing and router.all_released_once()


# -- the hang watch ends an exchange -----------------------------------------------------------


async def test_hang_before_the_head_reroutes_without_retrying_the_same_child() -> None:
    h, router, pool = _scripted()
    router.reroute_ports = [OTHER_PORT]
    h.upstream.requests = 1  # reused: would be retried once, were it not a hang
    h.send(chat_request())
    exchange = _current(h)
    mark = exchange.progress_mark()
    assert mark is not None and mark[0].port == CHILD_PORT
    exchange.end_hung_exchange()
    assert h.child.aborted
    h.upstream.connection_lost(None)  # what the abort leads to
    assert exchange.state is S.ROUTING
    await settle()
    conn, _ = _child(pool)
    assert conn.port == OTHER_PORT and exchange.state is S.SENT
    conn.data_received(JSON_RESPONSE)
    assert exchange.state is S.DONE and h.ctx.stats.retries == 0
    assert router.all_released_once()


def test_hang_mid_stream_ends_it_with_the_interrupted_event() -> None:
    h, router, exchange = _sent(stream=True)
    h.upstream.data_received(SSE_HEAD + event_chunk(0))
    mark = exchange.progress_mark()
    assert mark is not None and mark[1][2] == 1  # one chunk so far
    exchange.end_hung_exchange()
    h.upstream.connection_lost(None)
    assert exchange.state is S.DONE and b"upstream.stream_interrupted" in h.client.take()
    assert exchange.progress_mark() is None and router.all_released_once()


# -- a bug costs one request a 500 -------------------------------------------------------------


async def test_a_bug_in_a_slow_path_task_answers_500_and_keeps_the_connection() -> None:
    h, router, _ = _scripted(fast=False)
    router.acquire_error = RuntimeError("a bug")
    h.send(chat_request())
    exchange = _current(h)
    await settle()
    assert exchange.state is S.FAILED
    out = h.client.take()
    assert _status(out) == 500 and _error(out)[0] == "system.internal"
    assert not h.client.closing and h.conn.exchange is None
