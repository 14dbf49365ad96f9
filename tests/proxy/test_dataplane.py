"""Data-plane behaviour over real loopback sockets: proxy listener <-> programmable child."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from hal0proxy.proxy.context import ProxyContext
from hal0proxy.proxy.server import start_listener
from hal0proxy.proxy.settings import ProxySettings
from hal0proxy.proxy.upstream import UpstreamPool
from hal0proxy.routing.classify import Classified
from hal0proxy.routing.contract import Lease, StaticLease, StaticRouter
from tests.proxy.upstream_stub import StubState, start_stub
from tests.support.rawhttp import build_request, read_response, roundtrip


@dataclass
class Rig:
    proxy_port: int
    child_port: int
    child: StubState
    ctx: ProxyContext


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    stub_server, child_port, state = await start_stub()
    settings = ProxySettings(
        max_body_bytes=1024 * 1024,
        request_timeout_s=0.5,
        upstream_first_byte_timeout_s=0.5,
        write_high_water=64 * 1024,
        write_low_water=16 * 1024,
    )
    ctx = ProxyContext(router=StaticRouter({"m": child_port}), pool=UpstreamPool(), settings=settings)
    server = await start_listener(ctx, "127.0.0.1", 0)
    yield Rig(server.sockets[0].getsockname()[1], child_port, state, ctx)
    server.close()
    ctx.pool.close()
    stub_server.close()


def body(**fields: object) -> bytes:
    return json.dumps({"model": "m", **fields}).encode()


async def test_json_passthrough_and_header_hygiene(rig: Rig) -> None:
    resp = await roundtrip(rig.proxy_port, "POST", "/v1/chat/completions", body(mode="json"))
    assert resp.status == 200
    assert json.loads(resp.body) == {"ok": True, "model": "m"}
    assert resp.headers[b"content-type"] == b"application/json"


async def test_sse_is_byte_for_byte_identical_to_direct(rig: Rig) -> None:
    direct = await roundtrip(rig.child_port, "POST", "/v1/chat/completions", body(mode="sse", n=50, stream=True))
    proxied = await roundtrip(rig.proxy_port, "POST", "/v1/chat/completions", body(mode="sse", n=50, stream=True))
    assert proxied.status == 200
    assert proxied.raw_body == direct.raw_body  # same chunk framing, same bytes
    assert proxied.headers[b"x-accel-buffering"] == b"no"
    assert b"keep-alive" not in proxied.headers  # hop-by-hop header of the child is dropped
    assert proxied.body.endswith(b"data: [DONE]\n\n")


async def test_request_headers_are_filtered(rig: Rig) -> None:
    resp = await roundtrip(
        rig.proxy_port,
        "POST",
        "/v1/chat/completions",
        body(mode="echo"),
        [("X-Conversation-Id", "abc"), ("Connection", "keep-alive, X-Secret"), ("X-Secret", "1"), ("X-Keep", "yes")],
    )
    head = json.loads(resp.body)["head"].lower()
    assert "x-conversation-id" not in head
    assert "x-secret" not in head
    assert "x-keep: yes" in head


async def test_keepalive_reuses_one_upstream_connection(rig: Rig) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.proxy_port)
    for _ in range(5):
        writer.write(build_request("POST", "/v1/chat/completions", body(mode="json")))
        resp = await read_response(reader)
        assert resp.status == 200
    writer.close()
    assert rig.child.connections == 1


async def test_pipelined_requests_answer_in_order(rig: Rig) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.proxy_port)
    writer.write(
        build_request("POST", "/v1/chat/completions", body(mode="sse", n=3))
        + build_request("POST", "/v1/chat/completions", body(mode="json"))
        + build_request("POST", "/v1/chat/completions", body(mode="error"))
    )
    first, second, third = [await read_response(reader) for _ in range(3)]
    writer.close()
    assert first.status == 200 and first.body.endswith(b"[DONE]\n\n")
    assert second.status == 200 and json.loads(second.body)["ok"] is True
    assert third.status == 400


async def test_child_error_passes_through_verbatim(rig: Rig) -> None:
    resp = await roundtrip(rig.proxy_port, "POST", "/v1/chat/completions", body(mode="error"))
    assert resp.status == 400
    assert resp.body == b'{"error":{"code":400,"message":"bad things","type":"invalid_request_error"}}'


async def test_close_after_stream_quirk_causes_no_errors(rig: Rig) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.proxy_port)
    for i in range(200):
        writer.write(build_request("POST", "/v1/chat/completions", body(mode="sse_close", n=2, stream=True)))
        resp = await read_response(reader)
        assert resp.status == 200, f"request {i}"
        assert resp.body.endswith(b"data: [DONE]\n\n")
    writer.close()


async def test_child_crash_between_events_ends_with_error_event(rig: Rig) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.proxy_port)
    writer.write(build_request("POST", "/v1/chat/completions", body(mode="sse_crash", n=3, stream=True)))
    resp = await read_response(reader)
    assert resp.status == 200
    events = [e for e in resp.body.split(b"\n\n") if e]
    assert len(events) == 4
    last = json.loads(events[-1][len(b"data: ") :])
    assert last["error"]["code"] == "upstream.stream_interrupted"
    # The chunked body ended cleanly, so the client connection is still usable.
    writer.write(build_request("POST", "/v1/chat/completions", body(mode="json")))
    assert (await read_response(reader)).status == 200
    writer.close()


async def test_child_crash_mid_event_aborts_client(rig: Rig) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.proxy_port)
    writer.write(build_request("POST", "/v1/chat/completions", body(mode="sse_crash_mid", stream=True)))
    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
        await read_response(reader)
    writer.close()


async def test_client_disconnect_closes_child_connection_quickly(rig: Rig) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.proxy_port)
    writer.write(build_request("POST", "/v1/chat/completions", body(mode="sse_forever", stream=True)))
    await reader.readuntil(b"tok3")
    closed_at = time.monotonic()
    writer.transport.abort()
    for _ in range(100):
        if rig.child.disconnects:
            break
        await asyncio.sleep(0.005)
    assert rig.child.disconnects, "child connection was not closed"
    assert rig.child.disconnects[0] - closed_at < 0.1


async def test_body_limit_by_content_length_and_by_chunks(rig: Rig) -> None:
    big = b'{"model":"m","x":"' + b"a" * (1024 * 1024) + b'"}'
    resp = await roundtrip(rig.proxy_port, "POST", "/v1/chat/completions", big)
    assert resp.status == 413
    assert json.loads(resp.body)["error"]["code"] == "request.too_large"
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in [big[i : i + 65536] for i in range(0, len(big), 65536)])
    resp = await roundtrip(
        rig.proxy_port, "POST", "/v1/chat/completions", chunked + b"0\r\n\r\n", [("Transfer-Encoding", "chunked")]
    )
    assert resp.status == 413


async def test_chunked_request_body_is_forwarded_with_length(rig: Rig) -> None:
    payload = body(mode="echo", pad="z" * 200_000)
    chunked = b"".join(
        b"%x\r\n%s\r\n" % (len(p), p) for p in [payload[i : i + 1000] for i in range(0, len(payload), 1000)]
    )
    resp = await roundtrip(
        rig.proxy_port, "POST", "/v1/chat/completions", chunked + b"0\r\n\r\n", [("Transfer-Encoding", "chunked")]
    )
    assert resp.status == 200
    echoed = json.loads(resp.body)
    assert echoed["body_len"] == len(payload)
    assert f"content-length: {len(payload)}" in echoed["head"]


async def test_bad_requests_get_precise_errors(rig: Rig) -> None:
    cases = [
        (b"{not json", 400, "request.invalid_json"),
        (b'{"messages":[]}', 400, "request.missing_model"),
        (b'{"model":"nope"}', 404, "dispatch.no_route"),
        (b'{"model":5}', 400, "request.invalid_json"),
    ]
    for raw, status, code in cases:
        resp = await roundtrip(
            rig.proxy_port, "POST", "/v1/chat/completions", raw, [("Content-Type", "application/json")]
        )
        assert resp.status == status, raw
        err = json.loads(resp.body)["error"]
        assert err["code"] == code
        assert err["message"] and "type" in err


async def test_malformed_http_and_huge_headers(rig: Rig) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.proxy_port)
    writer.write(b"GARBAGE\r\n\r\n")
    resp = await read_response(reader)
    assert resp.status == 400
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.proxy_port)
    writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    resp = await read_response(reader)
    assert resp.status == 431
    writer.close()


async def test_first_byte_timeout_is_504(rig: Rig) -> None:
    resp = await roundtrip(rig.proxy_port, "POST", "/v1/chat/completions", body(mode="hang"))
    assert resp.status == 504
    assert json.loads(resp.body)["error"]["code"] == "upstream.timeout"


async def test_slow_request_is_408(rig: Rig) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.proxy_port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    resp = await read_response(reader)
    assert resp.status == 408
    writer.close()


async def test_connect_failure_is_502_without_reroute(rig: Rig) -> None:
    rig.ctx.router = StaticRouter({"m": 1})  # nothing listens on port 1
    resp = await roundtrip(rig.proxy_port, "POST", "/v1/chat/completions", body(mode="json"))
    assert resp.status == 502
    assert json.loads(resp.body)["error"]["code"] == "dispatch.upstream_unavailable"


class MovingRouter(StaticRouter):
    """First answers a dead port; on reroute answers the live one (a child that moved)."""

    def __init__(self, live_port: int) -> None:
        super().__init__({"m": 1})
        self.live_port = live_port
        self.reroutes = 0

    async def reroute(self, lease: Lease) -> Lease | None:
        self.reroutes += 1
        return StaticLease(port=self.live_port, slot=lease.slot)

    async def acquire(self, request: Classified) -> Lease:
        return StaticLease(port=1, slot="m")


async def test_connect_failure_reroutes_instead_of_502(rig: Rig) -> None:
    router = MovingRouter(rig.child_port)
    rig.ctx.router = router
    resp = await roundtrip(rig.proxy_port, "POST", "/v1/chat/completions", body(mode="json"))
    assert resp.status == 200
    assert router.reroutes == 1


async def test_slow_client_pauses_child_and_bounds_buffering(rig: Rig) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.proxy_port, limit=1024)
    writer.transport.set_write_buffer_limits(0)
    sock = writer.transport.get_extra_info("socket")
    import socket

    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    writer.write(build_request("POST", "/v1/chat/completions", body(mode="flood", n=5000, stream=True)))
    got = 0
    while got < 300_000:
        got += len(await reader.read(1024))
        await asyncio.sleep(0.0005)
    assert rig.child.paused_writes > 0, "the child was never paused"
    writer.transport.abort()


async def test_long_pipeline_of_locally_answered_requests(rig: Rig) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.proxy_port)
    batch = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n" * 3000
    writer.write(batch)
    for _ in range(3000):
        resp = await read_response(reader, b"GET")
        assert resp.status == 200
    writer.write(build_request("POST", "/v1/chat/completions", body(mode="json")))
    assert (await read_response(reader)).status == 200
    writer.close()


async def test_lemond_style_api_v1_prefix_is_accepted(rig: Rig) -> None:
    resp = await roundtrip(rig.proxy_port, "POST", "/api/v1/chat/completions", body(mode="echo"))
    assert resp.status == 200
    assert json.loads(resp.body)["head"].startswith("POST /v1/chat/completions HTTP/1.1")
    models = await roundtrip(rig.proxy_port, "GET", "/api/v1/models")
    assert models.status == 200 and json.loads(models.body)["data"][0]["id"] == "m"


class BrokenRouter(StaticRouter):
    """A router with a bug: the proxy must answer 500 and stay up, not hang the client."""

    def acquire_now(self, request: Classified) -> Lease | None:
        return None

    async def acquire(self, request: Classified) -> Lease:
        raise RuntimeError("boom")


async def test_an_internal_bug_costs_one_request_a_500(rig: Rig) -> None:
    rig.ctx.router = BrokenRouter({"m": rig.child_port})
    resp = await asyncio.wait_for(roundtrip(rig.proxy_port, "POST", "/v1/chat/completions", body(mode="json")), 5)
    assert resp.status == 500
    assert json.loads(resp.body)["error"]["code"] == "system.internal"
    rig.ctx.router = StaticRouter({"m": rig.child_port})
    assert (await roundtrip(rig.proxy_port, "POST", "/v1/chat/completions", body(mode="json"))).status == 200
