"""The real llama-server binary with the tiny GGUF, over loopback sockets.

These tests pin down the upstream behaviour the proxy relies on, measured
against the genuine binary rather than the fake one: the /health states during
startup, the OpenAI chat/completions/embeddings shapes (via the official
``openai`` client), and the connection-close-after-stream quirk that forces the
proxy's upstream pool to retry on a fresh connection.

Nothing is skipped when the binary is missing: ``ensure_llama_server()`` builds
it (several minutes, once per machine), hence the generous module timeout.
"""

from __future__ import annotations

import http.client
import select
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h11
import orjson
import pytest
from openai import AsyncOpenAI

from hal0proxy.emulator.realbin import (
    ensure_llama_server,
    llama_server_command,
    tiny_model_path,
)
from hal0proxy.emulator.tiny_model import N_EMBD, write_tiny_model

# Covers a cold build of the binary inside the first fixture; once cached the
# whole file runs in a few seconds.
pytestmark = pytest.mark.timeout(3900)

LOADING_BODY = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
STARTUP_TIMEOUT_S = 60.0


@dataclass
class RunningServer:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    # Every /health status seen while waiting for readiness, in order.
    health_statuses: list[int] = field(default_factory=list)
    health_bodies: list[bytes] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _post(port: int, path: str, body: object, timeout: float = 30.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, orjson.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _start(*, embeddings: bool = False, reranking: bool = False) -> RunningServer:
    binary = ensure_llama_server()
    model = tiny_model_path()
    # The port is picked before the child binds it; on the rare collision with
    # another process the child exits and we retry with a fresh port.
    failure = ""
    for _attempt in range(3):
        port = _free_port()
        log = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
        argv = llama_server_command(binary, model, port, embeddings=embeddings, reranking=reranking)
        with log.open("wb") as log_fh:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_fh, stderr=subprocess.STDOUT)
        server = RunningServer(proc=proc, port=port, log=log)
        try:
            if _wait_healthy(server):
                return server
        except BaseException:
            _stop(proc)
            log.unlink(missing_ok=True)
            raise
        _stop(proc)
        failure = log.read_text(errors="replace")[-3000:]
        log.unlink(missing_ok=True)
    raise AssertionError(f"llama-server never became healthy; last log:\n{failure}")


def _stop_server(server: RunningServer) -> None:
    _stop(server.proc)
    server.log.unlink(missing_ok=True)


def _wait_healthy(server: RunningServer) -> bool:
    # Poll as fast as possible so the 503 "Loading model" window is caught
    # when the load is slow enough to be observable.
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return False
        try:
            status, body = _get(server.port, "/health", timeout=2.0)
        except OSError:
            time.sleep(0.005)
            continue
        server.health_statuses.append(status)
        server.health_bodies.append(body)
        if status == 200:
            return True
        time.sleep(0.005)
    return False


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    srv = _start()
    try:
        yield srv
    finally:
        _stop_server(srv)


@pytest.fixture
def client(server: RunningServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=60.0)


def test_tiny_model_is_deterministic(tmp_path: Path) -> None:
    a = write_tiny_model(tmp_path / "a.gguf").read_bytes()
    b = write_tiny_model(tmp_path / "b.gguf").read_bytes()
    assert a == b
    assert 100_000 < len(a) < 2_000_000


def test_health_during_startup(server: RunningServer) -> None:
    statuses = server.health_statuses
    assert statuses and statuses[-1] == 200
    assert orjson.loads(server.health_bodies[-1]) == {"status": "ok"}
    # Before readiness the only allowed answer is the loading 503.
    for status, body in zip(statuses[:-1], server.health_bodies[:-1], strict=True):
        assert status == 503
        assert orjson.loads(body) == LOADING_BODY


def test_metrics_enabled(server: RunningServer) -> None:
    status, body = _get(server.port, "/metrics")
    assert status == 200
    assert b"llamacpp:prompt_tokens_total" in body


async def test_chat_non_streaming(client: AsyncOpenAI) -> None:
    resp = await client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hello there"}],
        max_tokens=16,
    )
    choice = resp.choices[0]
    assert resp.object == "chat.completion"
    assert choice.finish_reason == "length"
    assert choice.message.role == "assistant"
    text = choice.message.content or ""
    assert text and text.isprintable() and text.isascii()
    assert resp.usage is not None and resp.usage.completion_tokens == 16
    assert resp.usage.prompt_tokens > 0
    timings = (resp.model_extra or {})["timings"]
    assert timings["predicted_n"] == 16


async def test_chat_streaming(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "tell me a story"}],
        max_tokens=64,
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    assert len(chunks) >= 3
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and text.isascii() and text.isprintable()
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length"
    assert all(f is None for f in finishes[:-1])
    timings = (chunks[-1].model_extra or {}).get("timings")
    assert timings is not None
    assert timings["predicted_n"] == 64
    assert timings["predicted_per_second"] > 0
    print(f"tiny model decode: {timings['predicted_per_second']:.0f} tokens/s")


async def test_chat_streaming_include_usage(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "count"}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens == 8
    assert "timings" in (last.model_extra or {})


async def test_completions(client: AsyncOpenAI) -> None:
    resp = await client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=12)
    assert resp.object == "text_completion"
    assert resp.choices[0].finish_reason == "length"
    assert resp.choices[0].text and resp.choices[0].text.isprintable()
    assert resp.usage is not None and resp.usage.completion_tokens == 12


def _exchange(sock: socket.socket, body: dict[str, object]) -> tuple[h11.Response, bytes]:
    """Send one keep-alive POST on ``sock`` and read the whole response."""
    conn = h11.Connection(h11.CLIENT)
    payload = orjson.dumps(body)
    request = h11.Request(
        method="POST",
        target="/v1/chat/completions",
        headers=[
            ("Host", "127.0.0.1"),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("Connection", "keep-alive"),
        ],
    )
    sock.sendall(conn.send(request) + conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage()))
    response: h11.Response | None = None
    data = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(65536))
            continue
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            data += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
        elif isinstance(event, h11.ConnectionClosed):
            raise ConnectionError("closed before the response ended")
    assert response is not None
    return response, bytes(data)


def _second_request_fails(sock: socket.socket, body: dict[str, object]) -> bool:
    try:
        _exchange(sock, body)
    except (ConnectionError, h11.RemoteProtocolError):
        return True
    return False


def test_keep_alive_survives_non_streamed_response(server: RunningServer) -> None:
    body: dict[str, object] = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        first, _ = _exchange(sock, body)
        second, payload = _exchange(sock, body)
    assert first.status_code == 200 and second.status_code == 200
    assert orjson.loads(payload)["choices"][0]["finish_reason"] == "length"


def _eof_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the peer's FIN is readable on an idle socket, or None."""
    start = time.monotonic()
    readable, _, _ = select.select([sock], [], [], seconds)
    if not readable:
        return None
    return time.monotonic() - start if sock.recv(1) == b"" else None


def test_connection_closed_after_streamed_response(server: RunningServer) -> None:
    """The quirk: the stream advertises keep-alive, then the server closes.

    Measured with this build: the SSE response carries ``Keep-Alive:
    timeout=5, max=100`` and no ``Connection: close``, yet the server sends FIN
    right after the terminating chunk (cpp-httplib ends the connection once a
    chunked content provider finishes). The FIN is already readable when the
    last chunk has been parsed, and a second request on that socket gets EOF
    instead of a response. A pooled upstream connection is therefore dead
    after every streamed response.
    """
    body: dict[str, object] = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        "stream": True,
    }
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        response, payload = _exchange(sock, body)
        headers = {k.decode().lower(): v.decode() for k, v in response.headers}
        assert response.status_code == 200
        assert headers["content-type"].startswith("text/event-stream")
        assert headers["transfer-encoding"] == "chunked"
        assert headers["x-accel-buffering"] == "no"
        assert headers["keep-alive"] == "timeout=5, max=100"
        assert "content-length" not in headers
        assert "connection" not in headers
        assert payload.startswith(b"data: {")
        assert payload.endswith(b"}\n\ndata: [DONE]\n\n")
        closed_after = _eof_within(sock, 2.0)
        assert closed_after is not None and closed_after < 1.0
        assert _second_request_fails(sock, body)


def test_idle_keep_alive_closed_after_five_seconds(server: RunningServer) -> None:
    """Non-streamed responses keep the connection, but only for the advertised
    ``Keep-Alive: timeout=5``; an upstream pool must retire idle connections
    sooner than that."""
    body: dict[str, object] = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        response, _ = _exchange(sock, body)
        headers = {k.decode().lower(): v.decode() for k, v in response.headers}
        assert headers["keep-alive"] == "timeout=5, max=100"
        closed_after = _eof_within(sock, 15.0)
    assert closed_after is not None and 3.0 < closed_after < 10.0


async def test_embeddings() -> None:
    srv = _start(embeddings=True)
    try:
        client = AsyncOpenAI(base_url=srv.base_url + "/v1", api_key="unused", max_retries=0, timeout=60.0)
        resp = await client.embeddings.create(model="tiny", input=["hello world", "second text"])
        assert [d.index for d in resp.data] == [0, 1]
        for item in resp.data:
            assert len(item.embedding) == N_EMBD
            norm = sum(x * x for x in item.embedding) ** 0.5
            assert abs(norm - 1.0) < 1e-3  # llama-server L2-normalises by default
        assert resp.data[0].embedding != resp.data[1].embedding
        assert resp.usage.prompt_tokens > 0
    finally:
        _stop_server(srv)


def test_rerank() -> None:
    srv = _start(reranking=True)
    try:
        body = {
            "query": "which one is about a fox",
            "documents": ["the quick brown fox", "a lazy dog", "hello world"],
            "top_n": 2,
        }
        status, raw = _post(srv.port, "/v1/rerank", body)
        assert status == 200, raw
        resp = orjson.loads(raw)
        results = resp["results"]
        assert len(results) == 2
        assert {r["index"] for r in results} <= {0, 1, 2}
        scores = [r["relevance_score"] for r in results]
        assert scores == sorted(scores, reverse=True)
        assert resp["usage"]["prompt_tokens"] > 0
    finally:
        _stop_server(srv)
