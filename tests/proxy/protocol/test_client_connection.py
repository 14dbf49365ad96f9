"""The client connection's states and timers at the protocol tier: bytes in, bytes out, a mock clock.

No sockets and no sleeps: a ``MockTransport`` records what the connection writes and how it
pauses reading, and a ``MockLoop`` runs timers only when the test moves its clock.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from hal0proxy.proxy.flow import FlowControl
from tests.proxy.protocol.mocks import (
    JSON_RESPONSE,
    MODELS_REQUEST,
    SSE_HEAD,
    Harness,
    MockTransport,
    chat_request,
    event_chunk,
)


def _status(data: bytes) -> int:
    return int(data[9:12])


def _error_code(data: bytes) -> str:
    body = data.split(b"\r\n\r\n", 1)[1]
    code = orjson.loads(body)["error"]["code"]
    assert isinstance(code, str)
    return code


# -- 408: the request is not received in time --------------------------------------------------


def test_partial_request_gets_408_at_the_request_timeout_and_not_before() -> None:
    h = Harness(request_timeout_s=30.0)
    h.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    h.loop.advance(29.9)
    assert h.client.buffer == b"" and not h.client.closing
    h.loop.advance(0.2)
    out = h.client.take()
    assert _status(out) == 408 and _error_code(out) == "request.timeout"
    assert h.client.closing


def test_request_timeout_counts_from_the_first_byte_not_from_the_connect() -> None:
    h = Harness(request_timeout_s=30.0, keepalive_timeout_s=75.0)
    h.loop.advance(20.0)
    h.send(b"GET /v1/mo")
    h.loop.advance(29.0)
    assert not h.client.closing
    h.loop.advance(2.0)
    assert _status(h.client.take()) == 408


def test_request_timeout_does_not_hit_a_request_being_answered() -> None:
    h = Harness(request_timeout_s=30.0, upstream_first_byte_timeout_s=600.0)
    h.send(chat_request())
    h.loop.advance(100.0)  # past the request timeout, the child still thinking
    assert h.client.buffer == b"" and not h.client.closing
    h.upstream.data_received(JSON_RESPONSE)
    assert _status(h.client.take()) == 200


def test_an_incomplete_request_pipelined_behind_a_forwarded_one_gets_408() -> None:
    """Its clock starts when the answer before it is complete; the connection is not idle."""
    h = Harness(request_timeout_s=30.0, keepalive_timeout_s=75.0)
    h.send(chat_request() + b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{")
    h.upstream.data_received(JSON_RESPONSE)
    assert _status(h.client.take()) == 200 and h.conn.busy
    h.loop.advance(29.9)
    assert h.client.buffer == b"" and not h.client.closing
    h.loop.advance(0.2)
    out = h.client.take()
    assert _status(out) == 408 and _error_code(out) == "request.timeout" and h.client.closing


def test_blank_lines_pipelined_behind_a_request_leave_the_connection_idle() -> None:
    h = Harness(request_timeout_s=30.0, keepalive_timeout_s=75.0)
    h.send(chat_request() + b"\r\n")
    h.upstream.data_received(JSON_RESPONSE)
    assert _status(h.client.take()) == 200 and not h.conn.busy
    h.loop.advance(74.0)
    assert not h.client.closing
    h.loop.advance(2.0)
    assert h.client.closing and h.client.buffer == b""  # the silent keep-alive close, no 408


# -- keep-alive ------------------------------------------------------------------------------


def test_idle_connection_is_closed_silently_at_the_keepalive_timeout() -> None:
    h = Harness(keepalive_timeout_s=75.0)
    h.loop.advance(74.9)
    assert not h.client.closing
    h.loop.advance(0.2)
    assert h.client.closing and h.client.buffer == b""


def test_keepalive_timeout_restarts_after_each_response() -> None:
    h = Harness(keepalive_timeout_s=75.0)
    h.loop.advance(60.0)
    h.send(MODELS_REQUEST)
    assert _status(h.client.take()) == 200
    h.loop.advance(60.0)  # 120 s after the connect, 60 s after the response
    assert not h.client.closing
    h.loop.advance(16.0)
    assert h.client.closing


# -- 504: no response head from the child ----------------------------------------------------


def test_child_silent_past_the_first_byte_timeout_gets_504_and_is_dropped() -> None:
    h = Harness(upstream_first_byte_timeout_s=600.0)
    h.send(chat_request())
    assert h.child.buffer.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    h.loop.advance(599.0)
    assert h.client.buffer == b""
    h.loop.advance(2.0)
    out = h.client.take()
    assert _status(out) == 504 and _error_code(out) == "upstream.timeout"
    assert h.child.aborted and h.pool.idle_count() == 0
    assert not h.client.closing  # the client may send its next request


def test_first_byte_timeout_is_never_applied_to_a_flowing_stream() -> None:
    h = Harness(upstream_first_byte_timeout_s=5.0, keepalive_timeout_s=75.0)
    h.send(chat_request(stream=True))
    h.upstream.data_received(SSE_HEAD + event_chunk(0))
    h.loop.advance(3600.0)  # an hour between two events
    h.upstream.data_received(event_chunk(1) + b"0\r\n\r\n")
    out = h.client.take()
    assert _status(out) == 200 and b'data: {"i":1}' in out and out.endswith(b"0\r\n\r\n")
    assert not h.child.aborted and h.pool.idle_count() == 1


# -- timers are re-armed lazily --------------------------------------------------------------


def test_steady_keepalive_requests_schedule_no_new_timer() -> None:
    h = Harness()
    h.send(chat_request())
    h.upstream.data_received(JSON_RESPONSE)
    created = h.loop.timers_created
    for _ in range(50):
        h.loop.advance(0.001)
        h.send(chat_request())
        h.upstream.data_received(JSON_RESPONSE)
    out = h.client.take()
    assert out.count(b"HTTP/1.1 200 OK") == 51
    assert h.loop.timers_created == created
    assert h.loop.pending() == 1


def test_connection_lost_cancels_the_timer() -> None:
    h = Harness()
    h.conn.connection_lost(None)
    assert h.loop.pending() == 0


# -- flow control ----------------------------------------------------------------------------


def test_a_client_not_reading_pauses_the_child_and_resumes_it_once() -> None:
    h = Harness()
    h.send(chat_request(stream=True))
    h.upstream.data_received(SSE_HEAD + event_chunk(0))
    h.conn.pause_writing()
    h.conn.pause_writing()  # idempotent: the child is paused once
    assert h.child.read_paused and h.child.pause_calls == 1
    h.conn.resume_writing()
    h.conn.resume_writing()
    assert not h.child.read_paused and h.child.resume_calls == 1


def test_a_request_sent_while_the_client_is_not_reading_starts_with_the_child_paused() -> None:
    h = Harness()
    h.conn.pause_writing()
    h.conn.resume_writing()
    h.send(chat_request(stream=True))
    h.conn.pause_writing()
    assert h.child.read_paused
    h.upstream.data_received(SSE_HEAD + event_chunk(0) + event_chunk(1) + b"0\r\n\r\n")
    # the response finished while paused: the pooled connection is handed back reading again
    assert not h.child.read_paused and h.pool.idle_count() == 1


def test_pipelined_input_past_the_bound_pauses_reading_until_the_response_is_done() -> None:
    h = Harness(pipeline_buffer_bytes=1024)
    h.send(chat_request())
    assert not h.client.read_paused
    h.send(MODELS_REQUEST * 40)  # ~1.4 KB queued behind a request in flight
    assert h.client.read_paused and h.client.pause_calls == 1
    h.send(MODELS_REQUEST)
    assert h.client.pause_calls == 1
    h.upstream.data_received(JSON_RESPONSE)
    # the burst is answered up to the per-turn budget, the rest on the next turn of the loop
    h.loop.advance(0.0)
    h.loop.advance(0.0)
    out = h.client.take()
    assert out.count(b"HTTP/1.1 200 OK") == 42
    assert not h.client.read_paused


def test_answers_stop_while_the_client_does_not_read_them() -> None:
    h = Harness()
    h.conn.pause_writing()
    h.send(MODELS_REQUEST * 3)
    assert h.client.buffer == b"" and h.client.read_paused
    h.conn.resume_writing()
    assert h.client.take().count(b"HTTP/1.1 200 OK") == 3
    assert not h.client.read_paused


# -- FlowControl on its own ------------------------------------------------------------------


def test_flow_control_pause_and_resume_reading_are_idempotent() -> None:
    transport = MockTransport()
    flow = FlowControl(transport)  # type: ignore[arg-type]
    flow.pause_reading()
    flow.pause_reading()
    flow.set_reading(True)
    assert transport.pause_calls == 1 and flow.read_paused
    flow.resume_reading()
    flow.set_reading(False)
    assert transport.resume_calls == 1 and not flow.read_paused


@pytest.mark.asyncio
async def test_flow_control_drain_waits_for_resume_writing() -> None:
    flow = FlowControl(MockTransport())  # type: ignore[arg-type]
    await asyncio.wait_for(flow.drain(), 1.0)  # not paused: returns at once
    source = MockTransport()
    flow.pause_writing(source)  # type: ignore[arg-type]
    assert source.read_paused
    waiter = asyncio.ensure_future(flow.drain())
    await asyncio.sleep(0)
    assert not waiter.done()
    flow.resume_writing(source)  # type: ignore[arg-type]
    await asyncio.wait_for(waiter, 1.0)
    assert not source.read_paused
    flow.pause_writing()
    waiter = asyncio.ensure_future(flow.drain())
    await asyncio.sleep(0)
    flow.release()  # the connection is gone: nobody waits for ever
    await asyncio.wait_for(waiter, 1.0)


# -- what reaches the child ------------------------------------------------------------------


def test_hop_by_hop_and_policy_headers_never_reach_the_child() -> None:
    h = Harness(api_keys=("k1",))
    extra = (
        b"Connection: keep-alive, X-Private\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\n"
        b"X-Conversation-Id: c1\r\nAuthorization: Bearer k1\r\nX-Trace: t1\r\n"
    )
    h.send(chat_request(extra=extra))
    sent = bytes(h.child.buffer)
    head = sent.split(b"\r\n\r\n", 1)[0].lower()
    assert b"x-trace: t1" in head and b"host: 127.0.0.1" in head
    for gone in (b"x-private", b"keep-alive", b"connection", b"x-conversation-id", b"authorization"):
        assert gone not in head, gone


def test_the_conversation_id_is_forwarded_when_configured() -> None:
    h = Harness(forward_conversation_id=True)
    h.send(chat_request(extra=b"X-Conversation-Id: c1\r\nAuthorization: Bearer child-key\r\n"))
    head = bytes(h.child.buffer).split(b"\r\n\r\n", 1)[0].lower()
    assert b"x-conversation-id: c1" in head and b"authorization: bearer child-key" in head


# -- the next request after a forwarded one --------------------------------------------------


def test_a_request_arriving_after_the_response_is_forwarded_on_the_same_child_connection() -> None:
    h = Harness()
    h.send(chat_request())
    h.upstream.data_received(JSON_RESPONSE)
    assert _status(h.client.take()) == 200
    assert not h.client.read_paused and h.conn.exchange is None
    h.child.take()
    h.send(chat_request())  # a later read, nothing was pipelined
    assert h.child.take().startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    h.upstream.data_received(JSON_RESPONSE)
    assert _status(h.client.take()) == 200
    assert h.observed == [("m", 200), ("m", 200)] and not h.client.closing


def test_a_request_pipelined_behind_a_forwarded_one_is_sent_when_the_response_ends() -> None:
    h = Harness()
    h.send(chat_request() + chat_request(extra=b"x-second: yes\r\n"))
    assert h.child.take().count(b"POST ") == 1  # one exchange at a time
    h.upstream.data_received(JSON_RESPONSE)
    assert b"x-second: yes\r\n" in h.child.take()  # the second request went out on the pooled connection
    h.upstream.data_received(JSON_RESPONSE)
    assert h.client.take().count(b"HTTP/1.1 200 OK") == 2
    assert h.observed == [("m", 200), ("m", 200)]
