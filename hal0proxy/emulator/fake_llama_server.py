"""A fake ``llama-server``: its own process, llama-server's wire format, no model.

    python -m hal0proxy.emulator.fake_llama_server --port P [-m PATH] [--alias NAME]
        [--load-seconds S] [--tokens-per-second R] [--close-after-stream] [--stamp]
        [--embeddings | --reranking] [--fail-start]

lemond's own argument shape (``--ctx-size N --jinja --metrics`` ...) is accepted; unknown
arguments are ignored. The HTTP listener comes up first and answers 503 ``Loading model``
until the simulated load is over, as llama-server does.

With ``--tokens-per-second 0`` tokens are written as fast as the socket takes them: events
are pre-encoded and each is one HTTP chunk written with one ``transport.write``, pausing only
when the transport asks (``pause_writing``). A request header ``X-Emu-Stamp: 1`` (or
``--stamp``) adds ``"emu_t_ns": time.monotonic_ns()`` to every event JSON, taken right before
its write, so a benchmark can measure the per-chunk delay a proxy adds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time

import orjson

from hal0proxy.emulator import fake_wire as wire
from hal0proxy.emulator.httpserver import HttpServer, Request, Response, Stream

__all__ = ["FakeLlamaServer", "main", "parse_args"]

_JSON = "application/json; charset=utf-8"
_BASE_HEADERS = [("Server", "llama.cpp"), ("Keep-Alive", "timeout=5, max=100")]
_SSE_HEADERS = [*_BASE_HEADERS, ("Content-Type", "text/event-stream"), ("X-Accel-Buffering", "no")]
#: yield to the loop this often in an unthrottled stream so other connections progress
_YIELD_EVERY = 256
DEFAULT_MAX_TOKENS = 16


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    # No abbreviations: lemond passes llama-server flags we do not define (-np, -t, ...).
    parser = argparse.ArgumentParser(prog="fake_llama_server", allow_abbrev=False)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("-m", "--model", default="model.gguf")
    parser.add_argument("-a", "--alias", default=None)
    parser.add_argument("-c", "--ctx-size", type=int, default=4096)
    parser.add_argument("--load-seconds", type=float, default=0.0)
    parser.add_argument("--tokens-per-second", type=float, default=0.0)
    parser.add_argument("--close-after-stream", action="store_true")
    parser.add_argument("--stamp", action="store_true")
    parser.add_argument("--embeddings", "--embedding", action="store_true")
    parser.add_argument("--reranking", "--rerank", action="store_true")
    parser.add_argument("--metrics", action="store_true")
    parser.add_argument("--fail-start", action="store_true")
    args, _unknown = parser.parse_known_args(argv)
    return args


def _error(code: int, message: str, kind: str) -> Response:
    return Response(code, wire.error_body(code, message, kind), list(_BASE_HEADERS), _JSON)


def _json(payload: bytes) -> Response:
    return Response(200, payload, list(_BASE_HEADERS), _JSON)


def _prompt_text(body: dict[str, object]) -> str:
    messages = body.get("messages")
    if isinstance(messages, list):
        parts = []
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            parts.append(content if isinstance(content, str) else orjson.dumps(content).decode())
        return "\n".join(parts)
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else orjson.dumps(prompt).decode()


def _stall(header: str | None) -> tuple[int, float]:
    """``X-Emu-Stall: <tokens>,<seconds>``: go silent for ``seconds`` after ``tokens`` tokens
    of a stream (0 = before the response head; a non-streaming answer always waits first)."""
    if not header:
        return 0, 0.0
    try:
        after, seconds = header.split(",", 1)
        return max(0, int(after)), max(0.0, float(seconds))
    except ValueError:
        return 0, 0.0


def _max_tokens(body: dict[str, object]) -> int:
    for key in ("max_tokens", "max_completion_tokens", "n_predict"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return max(0, value) if value >= 0 else DEFAULT_MAX_TOKENS
    return DEFAULT_MAX_TOKENS


class FakeLlamaServer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ready = False
        self.model_id: str = args.alias or args.model
        self.created = int(time.time())
        self.counters = {"prompt_tokens_total": 0, "tokens_predicted_total": 0, "n_decode_total": 0}
        self.processing = 0
        # Pre-encoded chunks of the (few) distinct token texts, for streams without a stamp.
        self._word_json = [orjson.dumps(w) for w in wire.WORDS]

    async def handle(self, request: Request, stream: Stream) -> Response | None:
        path = request.path
        if path in ("/health", "/v1/health"):
            if not self.ready:
                return _error(503, "Loading model", "unavailable_error")
            return _json(b'{"status":"ok"}')
        if not self.ready:
            return _error(503, "Loading model", "unavailable_error")
        if request.method == "GET":
            if path in ("/v1/models", "/models"):
                return _json(self._models())
            if path == "/metrics":
                return self._metrics()
            if path == "/props":
                return _json(orjson.dumps({"model_alias": self.model_id, "model_path": self.args.model}))
        elif request.method == "POST":
            if path in ("/v1/chat/completions", "/chat/completions"):
                return await self._completion(request, stream, chat=True)
            if path in ("/v1/completions", "/completions"):
                return await self._completion(request, stream, chat=False)
            if path in ("/v1/embeddings", "/embeddings"):
                return self._embeddings(request)
            if path in ("/v1/rerank", "/v1/reranking", "/rerank", "/reranking"):
                return self._rerank(request)
        return _error(404, "File Not Found", "not_found_error")

    # -- endpoints --------------------------------------------------------------------------

    def _models(self) -> bytes:
        meta = {
            "vocab_type": 2,
            "n_vocab": 151936,
            "n_ctx_train": 40960,
            "n_embd": wire.EMBED_DIM,
            "n_params": 1000000,
            "size": 1000000,
        }
        return orjson.dumps(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.model_id,
                        "object": "model",
                        "created": self.created,
                        "owned_by": "llamacpp",
                        "meta": meta,
                    }
                ],
                "models": [{"name": self.model_id, "model": self.model_id, "type": "model"}],
            }
        )

    def _metrics(self) -> Response:
        if not self.args.metrics:
            return _error(
                501, "This server does not support metrics endpoint. Start it with `--metrics`", "not_supported_error"
            )
        lines = []
        for name, value in self.counters.items():
            lines += [f"# TYPE llamacpp:{name} counter", f"llamacpp:{name} {value}"]
        lines += ["# TYPE llamacpp:requests_processing gauge", f"llamacpp:requests_processing {self.processing}"]
        lines += ["# TYPE llamacpp:requests_deferred gauge", "llamacpp:requests_deferred 0"]
        body = ("\n".join(lines) + "\n").encode()
        headers = [*_BASE_HEADERS, ("Process-Start-Time-Unix", str(self.created))]
        return Response(200, body, headers, "text/plain; version=0.0.4")

    def _parse(self, request: Request) -> dict[str, object] | Response:
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError as exc:
            return _error(400, f"Invalid JSON: {exc}", "invalid_request_error")
        if not isinstance(body, dict):
            return _error(400, "Request body must be a JSON object", "invalid_request_error")
        return body

    def _embeddings(self, request: Request) -> Response:
        if not self.args.embeddings:
            return _error(
                501, "This server does not support embeddings. Start it with `--embeddings`", "not_supported_error"
            )
        body = self._parse(request)
        if isinstance(body, Response):
            return body
        raw = body.get("input", body.get("content"))
        inputs = [raw] if isinstance(raw, str) else raw
        if not isinstance(inputs, list) or not inputs or not all(isinstance(x, str) for x in inputs):
            return _error(400, '"input" must be a string or a non-empty array of strings', "invalid_request_error")
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            return _error(
                400, "The format to return the embeddings in. Can be either float or base64", "invalid_request_error"
            )
        model = body.get("model") if isinstance(body.get("model"), str) else self.model_id
        return _json(wire.embeddings_response(str(model), inputs, str(encoding)))

    def _rerank(self, request: Request) -> Response:
        if not self.args.reranking:
            return _error(
                501, "This server does not support reranking. Start it with `--reranking`", "not_supported_error"
            )
        body = self._parse(request)
        if isinstance(body, Response):
            return body
        query = body.get("query")
        documents = body.get("documents", body.get("texts"))
        if not isinstance(query, str) or not isinstance(documents, list):
            return _error(400, '"query" and "documents" are required', "invalid_request_error")
        top_n = body.get("top_n")
        model = body.get("model") if isinstance(body.get("model"), str) else self.model_id
        docs = [d if isinstance(d, str) else orjson.dumps(d).decode() for d in documents]
        return _json(wire.rerank_response(str(model), query, docs, top_n if isinstance(top_n, int) else None))

    async def _completion(self, request: Request, stream: Stream, *, chat: bool) -> Response | None:
        body = self._parse(request)
        if isinstance(body, Response):
            return body
        if chat and not isinstance(body.get("messages"), list):
            return _error(400, "'messages' is required", "invalid_request_error")
        started = time.perf_counter()
        prompt_n = wire.count_tokens(_prompt_text(body))
        n_tokens = _max_tokens(body)
        model = body.get("model") if isinstance(body.get("model"), str) else self.model_id
        stall_after, stall_s = _stall(request.header("x-emu-stall"))
        self.processing += 1
        try:
            if stall_s and (body.get("stream") is not True or stall_after == 0):
                await asyncio.sleep(stall_s)  # silent, as in a long prompt evaluation; /health answers
            if body.get("stream") is True:
                options = body.get("stream_options")
                include_usage = isinstance(options, dict) and options.get("include_usage") is True
                stamp = self.args.stamp or request.header("x-emu-stamp") == "1"
                stall = (stall_after, stall_s) if stall_s and stall_after > 0 else None
                await self._stream(stream, chat, str(model), prompt_n, n_tokens, include_usage, stamp, started, stall)
                return None
            tps = self.args.tokens_per_second
            if tps > 0 and n_tokens:
                await asyncio.sleep(n_tokens / tps)
        finally:
            self.processing -= 1
        self._count(prompt_n, n_tokens)
        text = "".join(wire.WORDS[i % len(wire.WORDS)] for i in range(n_tokens))
        elapsed = time.perf_counter() - started
        times = wire.timings(prompt_n, elapsed * 0.1, n_tokens, elapsed * 0.9)
        encode = wire.chat_response if chat else wire.completion_response
        return _json(encode(str(model), text, "length", prompt_n, n_tokens, times))

    def _count(self, prompt_n: int, n_tokens: int) -> None:
        self.counters["prompt_tokens_total"] += prompt_n
        self.counters["tokens_predicted_total"] += n_tokens
        self.counters["n_decode_total"] += n_tokens

    async def _stream(
        self,
        stream: Stream,
        chat: bool,
        model: str,
        prompt_n: int,
        n_tokens: int,
        include_usage: bool,
        stamp: bool,
        started: float,
        stall: tuple[int, float] | None = None,
    ) -> None:
        enc = wire.StreamEncoder(chat, model, int(time.time()), wire.random_id("chatcmpl-" if chat else "cmpl-"))
        before, after = enc.token_parts()
        words = self._word_json
        n_words = len(words)
        frame = wire.frame
        ns = time.monotonic_ns
        if stamp:
            after += b',"emu_t_ns":'
            closer = b"}\n\n"
        else:
            closer = b"}\n\n"
            chunks = [frame(before + w + after + closer) for w in words]
        stream.start(200, list(_SSE_HEADERS))

        def close_event(event: bytes) -> bytes:
            if stamp:
                return frame(event + b',"emu_t_ns":%d}\n\n' % ns())
            return frame(event + b"}\n\n")

        if chat:
            stream.write_framed(close_event(enc.role_event()))
        tps = self.args.tokens_per_second
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        first_token_at = time.perf_counter()
        for i in range(n_tokens):
            if tps > 0:
                delay = t0 + (i + 1) / tps - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif i % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)
            if stall is not None and i == stall[0]:
                await asyncio.sleep(stall[1])  # stalled mid-stream; the process still answers /health
            if stream.disconnected:
                return
            if stamp:
                stream.write_framed(frame(before + words[i % n_words] + after + b"%d}\n\n" % ns()))
            else:
                stream.write_framed(chunks[i % n_words])
            if stream.write_paused:
                await stream.drain()
        self._count(prompt_n, n_tokens)
        now = time.perf_counter()
        times = wire.timings(prompt_n, first_token_at - started, n_tokens, now - first_token_at)
        totals = wire.usage(prompt_n, n_tokens)
        if include_usage:
            stream.write_framed(close_event(enc.finish_event("length", {})))
            stream.write_framed(close_event(enc.usage_event({"usage": totals, "timings": times})))
        else:
            stream.write_framed(close_event(enc.finish_event("length", {"usage": totals, "timings": times})))
        stream.write_framed(wire.DONE_CHUNK)
        stream.end()
        if self.args.close_after_stream:
            # llama-server (cpp-httplib) closes after every streamed response although the
            # response advertised keep-alive (reference/llama-server.md §E).
            stream.close_after = True


async def _watch_parent(parent: int) -> None:
    # Belt and braces next to PR_SET_PDEATHSIG: if we were re-parented, the emulator is gone.
    while True:
        await asyncio.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


async def serve(args: argparse.Namespace) -> int:
    print(f"build: 7869 (fake0000) with python {sys.version.split()[0]} for {sys.platform}", flush=True)
    if args.fail_start:
        await asyncio.sleep(min(args.load_seconds, 0.05))
        print("llama_model_load: error loading model: unable to allocate Vulkan0 buffer", flush=True)
        return 1
    fake = FakeLlamaServer(args)
    server = HttpServer(fake.handle)
    try:
        await server.listen(args.host, args.port)
    except OSError:
        print(f"main: couldn't bind HTTP server socket, hostname: {args.host}, port: {args.port}", flush=True)
        return 1
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def on_term() -> None:
        print("srv    operator(): operator(): cleaning up before exit...", flush=True)
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_term)
    watcher = asyncio.ensure_future(_watch_parent(os.getppid()))
    if args.load_seconds > 0:
        await asyncio.sleep(args.load_seconds)
    fake.ready = True
    print(f"main: server is listening on http://{args.host}:{args.port} - starting the main loop", flush=True)
    await stop
    watcher.cancel()
    await server.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a runtime dependency
        return asyncio.run(serve(args))
    return int(uvloop.run(serve(args)))


if __name__ == "__main__":
    sys.exit(main())
