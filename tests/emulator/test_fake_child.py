"""The fake llama-server as its own process: llama-server's wire format, byte for byte."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.support.emulator import REPO, free_port, wait_until
from tests.support.rawhttp import build_request, read_response, roundtrip


class Child:
    def __init__(self, *args: str) -> None:
        self.port = free_port()
        argv = [
            sys.executable,
            "-m",
            "hal0proxy.emulator.fake_llama_server",
            "-m",
            "/models/tiny.gguf",
            "--ctx-size",
            "4096",
            "--port",
            str(self.port),
            "--jinja",
            "--metrics",
            *args,
        ]
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def wait_listening(self) -> None:
        async def probe() -> bool:
            try:
                return (await roundtrip(self.port, "GET", "/health")).status == 200
            except OSError:
                return False

        assert wait_until(lambda: asyncio.run(probe()), 15.0, 0.05)

    def stop(self) -> str:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return out.decode()


@pytest.fixture(scope="module")
def child() -> Iterator[Child]:
    c = Child("--embeddings")
    c.wait_listening()
    yield c
    c.stop()


def chat(stream: bool, **extra: object) -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "stream": stream, **extra}
    return json.dumps(body).encode()


def events(body: bytes) -> list[bytes]:
    assert body.endswith(b"\n\n")
    return body[:-2].split(b"\n\n")


async def test_streaming_chat_wire_format(child: Child) -> None:
    resp = await roundtrip(child.port, "POST", "/v1/chat/completions", chat(True, max_tokens=5))
    assert resp.status == 200
    assert resp.headers[b"content-type"] == b"text/event-stream"
    assert resp.headers[b"transfer-encoding"] == b"chunked"
    assert resp.headers[b"x-accel-buffering"] == b"no"
    assert b"content-length" not in resp.headers
    evs = events(resp.body)
    assert all(e.startswith(b"data: ") for e in evs)
    assert evs[-1] == b"data: [DONE]"
    # one event per HTTP chunk: re-frame the de-chunked events and compare with the wire bytes
    reframed = b"".join(b"%x\r\n%b\n\n\r\n" % (len(e) + 2, e) for e in evs) + b"0\r\n\r\n"
    assert resp.raw_body == reframed
    chunks = [json.loads(e[6:]) for e in evs[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    tokens = chunks[1:-1]
    assert len(tokens) == 5
    assert all(c["choices"][0]["finish_reason"] is None and "content" in c["choices"][0]["delta"] for c in tokens)
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] == "length" and final["choices"][0]["delta"] == {}
    assert final["usage"]["completion_tokens"] == 5
    assert {"prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "predicted_per_second"} <= set(final["timings"])
    assert {c["id"] for c in chunks} == {chunks[0]["id"]} and chunks[0]["id"].startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "m" for c in chunks)
    assert all("emu_t_ns" not in c for c in chunks)


async def test_include_usage_and_stamp(child: Child) -> None:
    body = chat(True, max_tokens=3, stream_options={"include_usage": True})
    resp = await roundtrip(child.port, "POST", "/v1/chat/completions", body, [("X-Emu-Stamp", "1")])
    chunks = [json.loads(e[6:]) for e in events(resp.body)[:-1]]
    finish, usage = chunks[-2], chunks[-1]
    assert finish["choices"][0]["finish_reason"] == "length" and "usage" not in finish
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 3 and "timings" in usage
    stamps = [c["emu_t_ns"] for c in chunks]
    assert stamps == sorted(stamps) and all(isinstance(s, int) for s in stamps)
    assert abs(stamps[-1] - time.monotonic_ns()) < 10 * 10**9


async def test_non_streaming_and_completions(child: Child) -> None:
    resp = await roundtrip(child.port, "POST", "/v1/chat/completions", chat(False, max_tokens=4))
    assert resp.status == 200 and resp.headers[b"content-type"].startswith(b"application/json")
    body = json.loads(resp.body)
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["completion_tokens"] == 4 and "timings" in body
    resp = await roundtrip(child.port, "POST", "/v1/completions", b'{"prompt":"hi","max_tokens":2,"stream":true}')
    chunks = [json.loads(e[6:]) for e in events(resp.body)[:-1]]
    assert [c["object"] for c in chunks] == ["text_completion"] * 3
    assert chunks[0]["choices"][0]["text"] and chunks[-1]["choices"][0]["finish_reason"] == "length"
    default = json.loads((await roundtrip(child.port, "POST", "/v1/completions", b'{"prompt":"x"}')).body)
    assert default["usage"]["completion_tokens"] == 16


async def test_embeddings_models_metrics_and_errors(child: Child) -> None:
    resp = await roundtrip(child.port, "POST", "/v1/embeddings", b'{"input":["a","b"],"model":"e"}')
    body = json.loads(resp.body)
    assert [d["index"] for d in body["data"]] == [0, 1] and body["object"] == "list"
    assert abs(sum(x * x for x in body["data"][0]["embedding"]) - 1.0) < 1e-6
    models = json.loads((await roundtrip(child.port, "GET", "/v1/models")).body)
    assert models["data"][0]["id"] == "/models/tiny.gguf" and models["data"][0]["owned_by"] == "llamacpp"
    metrics = await roundtrip(child.port, "GET", "/metrics")
    assert metrics.headers[b"content-type"] == b"text/plain; version=0.0.4"
    assert b"llamacpp:tokens_predicted_total" in metrics.body
    rerank = await roundtrip(child.port, "POST", "/v1/rerank", b'{"query":"a","documents":["a"]}')
    assert rerank.status == 501 and json.loads(rerank.body)["error"]["type"] == "not_supported_error"
    missing = await roundtrip(child.port, "GET", "/nope")
    assert json.loads(missing.body) == {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}}


async def test_rerank_sorted_and_top_n() -> None:
    c = Child("--reranking")
    try:
        await asyncio.to_thread(c.wait_listening)
        body = b'{"query":"red fox","documents":["blue sky","red fox jumps","a fox"],"top_n":2}'
        for path in ("/v1/rerank", "/v1/reranking"):
            results = json.loads((await roundtrip(c.port, "POST", path, body)).body)["results"]
            assert len(results) == 2 and results[0]["index"] == 1
            assert results[0]["relevance_score"] >= results[1]["relevance_score"]
    finally:
        c.stop()


async def test_503_while_loading_and_close_after_stream() -> None:
    c = Child("--load-seconds", "1.0", "--close-after-stream")
    try:
        deadline = time.monotonic() + 10
        loading = None
        while time.monotonic() < deadline and loading is None:
            try:
                loading = await roundtrip(c.port, "GET", "/health")
            except OSError:
                await asyncio.sleep(0.02)
        assert loading is not None and loading.status == 503
        assert json.loads(loading.body) == {
            "error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}
        }
        await asyncio.to_thread(c.wait_listening)
        reader, writer = await asyncio.open_connection("127.0.0.1", c.port)
        writer.write(build_request("POST", "/v1/chat/completions", chat(True, max_tokens=2)))
        first = await read_response(reader)
        assert first.status == 200 and first.headers.get(b"keep-alive") == b"timeout=5, max=100"
        assert await asyncio.wait_for(reader.read(), 5) == b"", "the child closes after a stream"
        writer.close()
    finally:
        out = c.stop()
    assert "main: server is listening on http://127.0.0.1:" in out


async def test_keep_alive_without_quirk(child: Child) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", child.port)
    try:
        for _ in range(3):
            writer.write(build_request("POST", "/v1/chat/completions", chat(True, max_tokens=2)))
            assert (await read_response(reader)).status == 200
    finally:
        writer.close()


async def test_fast_stream_many_tokens(child: Child) -> None:
    started = time.monotonic()
    resp = await roundtrip(child.port, "POST", "/v1/chat/completions", chat(True, max_tokens=5000))
    assert len(events(resp.body)) == 5000 + 3
    assert time.monotonic() - started < 10.0


async def test_token_rate_is_respected() -> None:
    c = Child("--tokens-per-second", "50")
    try:
        await asyncio.to_thread(c.wait_listening)
        started = time.monotonic()
        await roundtrip(c.port, "POST", "/v1/chat/completions", chat(True, max_tokens=10))
        assert time.monotonic() - started >= 0.18
    finally:
        c.stop()


def test_fail_start_exits_1() -> None:
    c = Child("--fail-start")
    assert c.proc.wait(timeout=15) == 1
    assert "error loading model" in c.stop()
