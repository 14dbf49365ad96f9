"""LemondClient and the h11 HTTP client over real loopback sockets, against canned
lemond answers taken from the reference fixtures; plus the pure SSE and health parsers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import orjson
import pytest

from hal0proxy.http import client as http
from hal0proxy.http.sse import SSEEvent, SSEParser
from hal0proxy.lemond.client import LemondClient
from hal0proxy.lemond.errors import (
    LemondAuthError,
    LemondTimeout,
    LemondUnavailable,
    LoadFailedError,
    ModelNotFound,
    NotLoaded,
    PullFailed,
    SlotsPinned,
    error_from_response,
)
from hal0proxy.lemond.health import parse_health, port_from_backend_url

from .fakes import FakeHTTP, Seen, fixture, json_reply


@pytest.fixture
async def fake() -> AsyncIterator[FakeHTTP]:
    server = await FakeHTTP().start()
    yield server
    await server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- pure parsers ------------------------------------------------------------------------


def test_health_fixture_two_loaded() -> None:
    snap = parse_health(orjson.loads(fixture("health_two_loaded.json")), observed_at=7.0)
    assert snap.version == "11.7.0" and snap.websocket_port == 9000 and snap.observed_at == 7.0
    assert snap.max_models["llm"] == 2 and snap.model_loaded == "Qwen3-4B-GGUF"
    assert [(m.model, m.port, m.pid, m.type, m.pinned) for m in snap.loaded] == [
        ("Qwen3-4B-GGUF", 8001, 48213, "llm", False),
        ("nomic-embed-text-v1-GGUF", 8002, 48377, "embedding", True),
    ]


def test_health_legacy_has_no_pid() -> None:
    snap = parse_health(orjson.loads(fixture("health_legacy_v10_0.json")))
    assert snap.loaded[0].pid is None and snap.loaded[0].port == 8001
    assert snap.max_models["audio"] == 1


def test_health_idle_and_junk() -> None:
    snap = parse_health(orjson.loads(fixture("health_idle.json")))
    assert snap.loaded == ()
    odd = parse_health({"all_models_loaded": [{"model_name": "c", "backend_url": "http://127.0.0.1:0/v1"}, 5]})
    assert odd.loaded == () and odd.websocket_port is None
    with pytest.raises(ValueError):
        parse_health([1, 2])


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("http://127.0.0.1:8001/v1", 8001),
        ("http://127.0.0.1:65535", 65535),
        ("http://[::1]:8003/v1", 8003),
        ("http://127.0.0.1:0/v1", None),
        ("http://127.0.0.1/v1", None),
        ("garbage", None),
    ],
)
def test_port_from_backend_url(url: str, port: int | None) -> None:
    assert port_from_backend_url(url) == port


def test_sse_parser_pull_fixture_split_anywhere() -> None:
    # The fixture's last event has no closing blank line; per the SSE spec an
    # unterminated event is never dispatched, so terminate it here.
    raw = fixture("pull_stream.sse").rstrip(b"\n") + b"\n\n"
    whole = SSEParser().feed(raw)
    assert [e.event for e in whole] == ["progress", "progress", "complete", "complete", "error"]
    for step in (1, 3, 17):
        p = SSEParser()
        parts: list[SSEEvent] = []
        for i in range(0, len(raw), step):
            parts.extend(p.feed(raw[i : i + step]))
        assert parts == whole


def test_sse_parser_crlf_multiline_and_comments() -> None:
    p = SSEParser()
    out = p.feed(b": ping\r\nevent: x\r\ndata: a\r")
    out += p.feed(b"\ndata:b\r\n\r\ndata: c\n\n")
    assert out == [SSEEvent("x", "a\nb"), SSEEvent("message", "c")]


@pytest.mark.parametrize(
    ("op", "status", "name", "cls"),
    [
        ("load", 404, "load_error_model_not_found.json", ModelNotFound),
        ("load", 500, "load_error_load_failed.json", LoadFailedError),
        ("load", 409, "load_error_slots_pinned.json", SlotsPinned),
        ("unload", 404, "unload_error_not_loaded.json", NotLoaded),
        ("health", 401, "error_unauthorized.json", LemondAuthError),
    ],
)
def test_error_mapping_from_fixtures(op: str, status: int, name: str, cls: type) -> None:
    err = error_from_response(op, status, fixture(name))
    assert type(err) is cls and err.status == status
    assert err.message


def test_error_mapping_keeps_code_and_model() -> None:
    err = error_from_response("load", 500, fixture("load_error_load_failed.json"))
    assert err.code == "model_load_error" and err.model == "Qwen3-4B-GGUF"
    assert "llama-server failed to start" in str(err)


# -- HTTP client over sockets ------------------------------------------------------------


async def test_request_round_trip_json(fake: FakeHTTP) -> None:
    fake.routes[("POST", "/echo")] = lambda s: (201, s.body, "application/json")
    resp = await http.request("POST", f"{fake.base_url}/echo", json={"a": [1, 2]}, timeout=5)
    assert resp.status == 201 and resp.json() == {"a": [1, 2]}
    assert resp.header("content-type") == "application/json"
    assert fake.seen[0].headers["content-type"] == "application/json"


async def test_request_connect_refused_and_timeout() -> None:
    with pytest.raises(http.ConnectFailed):
        await http.request("GET", f"http://127.0.0.1:{free_port()}/x", timeout=5)

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(http.RequestTimeout):
            await http.request("GET", f"http://127.0.0.1:{port}/x", timeout=0.3)
    finally:
        server.close()


async def test_request_peer_closes_early() -> None:
    async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(rude, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(http.ProtocolFailure):
            await http.request("GET", f"http://127.0.0.1:{port}/x", timeout=5)
    finally:
        server.close()


# -- LemondClient ------------------------------------------------------------------------


async def test_health_and_auth_header(fake: FakeHTTP) -> None:
    fake.routes[("GET", "/v1/health")] = json_reply(200, fixture("health_two_loaded.json"))
    client = LemondClient(fake.base_url, api_key="sekrit")
    snap = await client.health()
    assert len(snap.loaded) == 2 and snap.observed_at > 0
    assert fake.seen[-1].headers["authorization"] == "Bearer sekrit"
    anon = LemondClient(fake.base_url, api_key=None)
    await anon.health()
    assert "authorization" not in fake.seen[-1].headers


async def test_api_key_defaults_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEMONADE_API_KEY", "from-env")
    assert LemondClient("http://127.0.0.1:1").api_key == "from-env"
    monkeypatch.delenv("LEMONADE_API_KEY")
    assert LemondClient("http://127.0.0.1:1").api_key is None


async def test_load_sends_model_name_and_options(fake: FakeHTTP) -> None:
    fake.routes[("POST", "/v1/load")] = json_reply(200, fixture("load_response.json"))
    client = LemondClient(fake.base_url, api_key=None)
    doc = await client.load("Qwen3-4B-GGUF", ctx_size=8192)
    assert doc["status"] == "success"
    assert orjson.loads(fake.seen[0].body) == {"model_name": "Qwen3-4B-GGUF", "ctx_size": 8192}


async def test_load_errors_are_mapped_and_not_retried(fake: FakeHTTP) -> None:
    fake.routes[("POST", "/v1/load")] = json_reply(500, fixture("load_error_load_failed.json"))
    client = LemondClient(fake.base_url, api_key=None)
    with pytest.raises(LoadFailedError) as info:
        await client.load("Qwen3-4B-GGUF")
    assert info.value.model == "Qwen3-4B-GGUF"
    assert len(fake.seen) == 1  # exactly one attempt


async def test_load_timeout_is_lemond_timeout(fake: FakeHTTP) -> None:
    async def slow(_s: Seen) -> tuple[int, bytes, str]:
        await asyncio.sleep(5)
        return 200, b"{}", "application/json"

    fake.routes[("POST", "/v1/load")] = slow
    client = LemondClient(fake.base_url, api_key=None)
    with pytest.raises(LemondTimeout):
        await client.load("m", timeout=0.3)
    assert len(fake.seen) == 1


async def test_unload_one_all_and_not_loaded(fake: FakeHTTP) -> None:
    answers = iter(
        [
            (200, fixture("unload_response.json")),
            (200, fixture("unload_all_response.json")),
            (404, fixture("unload_error_not_loaded.json")),
        ]
    )

    def unload(_s: Seen) -> tuple[int, bytes, str]:
        status, body = next(answers)
        return status, body, "application/json"

    fake.routes[("POST", "/v1/unload")] = unload
    client = LemondClient(fake.base_url, api_key=None)
    assert (await client.unload("Qwen3-4B-GGUF"))["status"] == "success"
    assert orjson.loads(fake.seen[-1].body) == {"model_name": "Qwen3-4B-GGUF"}
    await client.unload()
    assert orjson.loads(fake.seen[-1].body) == {}
    with pytest.raises(NotLoaded):
        await client.unload("Qwen3-4B-GGUF")


async def test_models_and_live(fake: FakeHTTP) -> None:
    fake.routes[("GET", "/v1/models")] = json_reply(200, fixture("models.json"))
    fake.routes[("GET", "/live")] = json_reply(200, fixture("live.json"))
    client = LemondClient(fake.base_url, api_key=None)
    models = await client.models(show_all=True)
    assert models and all("id" in m for m in models)
    assert fake.seen[0].path == "/v1/models?show_all=true"
    assert await client.live() is True
    assert await LemondClient(f"http://127.0.0.1:{free_port()}", api_key=None).live() is False


async def test_unreachable_lemond_is_unavailable() -> None:
    client = LemondClient(f"http://127.0.0.1:{free_port()}", api_key=None)
    with pytest.raises(LemondUnavailable):
        await client.health()


async def test_pull_streams_progress_until_complete(fake: FakeHTTP) -> None:
    raw = fixture("pull_stream.sse")
    fake.routes[("POST", "/v1/pull")] = lambda _s: (200, raw, "text/event-stream")
    client = LemondClient(fake.base_url, api_key=None)
    events = [p async for p in client.pull("Qwen3-4B-GGUF")]
    assert [e.event for e in events] == ["progress", "progress", "complete"]
    assert events[0].percent == 40.0
    assert orjson.loads(fake.seen[0].body)["stream"] is True


async def test_pull_error_event_raises(fake: FakeHTTP) -> None:
    body = (
        b'event: progress\ndata: {"percent":1}\n\nevent: error\ndata: {"error":"Failed to download file: HTTP 404"}\n\n'
    )
    fake.routes[("POST", "/v1/pull")] = lambda _s: (200, body, "text/event-stream")
    client = LemondClient(fake.base_url, api_key=None)
    got = []
    with pytest.raises(PullFailed, match="HTTP 404"):
        async for p in client.pull("x"):
            got.append(p)
    assert [p.event for p in got] == ["progress"]


async def test_pull_http_error_is_mapped(fake: FakeHTTP) -> None:
    fake.routes[("POST", "/v1/pull")] = json_reply(404, fixture("load_error_model_not_found.json"))
    client = LemondClient(fake.base_url, api_key=None)
    with pytest.raises(ModelNotFound):
        async for _ in client.pull("Qwen9-Imaginary-GGUF"):
            pass
