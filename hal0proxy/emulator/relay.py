"""lemond's OpenAI surface: auto-load the requested model, then relay to its child.

lemond forwards the JSON body to ``http://127.0.0.1:<port>/v1/<endpoint>`` and passes the
child's response back: streamed bytes unchanged, with ``data: [DONE]`` appended only when the
child did not send one (SPEC §3.3, §6). This relay reads the child with h11 in the client role
and writes every body piece downstream as its own chunk.
"""

from __future__ import annotations

import asyncio
import contextlib

import h11
import orjson

from hal0proxy.emulator.httpserver import Request, Response, Stream, json_response
from hal0proxy.emulator.logs import LogHub
from hal0proxy.emulator.router import LoadError, Router
from hal0proxy.emulator.views import error_envelope

__all__ = ["INFERENCE_ROUTES", "Relay"]

#: lemond route (after the prefix) -> the child's path
INFERENCE_ROUTES = {
    "chat/completions": "/v1/chat/completions",
    "completions": "/v1/completions",
    "responses": "/v1/responses",
    "embeddings": "/v1/embeddings",
    "rerank": "/v1/rerank",
    "reranking": "/v1/rerank",
    "reranker": "/v1/rerank",
}
_HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length"}
_DONE = b"data: [DONE]\n\n"


class Relay:
    def __init__(self, router: Router, logs: LogHub) -> None:
        self.router = router
        self.logs = logs
        self.requests = 0

    async def handle(self, sub: str, request: Request, stream: Stream) -> Response | None:
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError as exc:
            return json_response(400, {"error": f"Invalid JSON in request body: {exc}"})
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str) or not model:
            return json_response(400, {"error": "Missing 'model' field in request"})
        model = model.removesuffix(":latest")
        backend = self.router.backends.get(model)
        if backend is not None and self.router.alive(backend) and not backend.watchdog_reset:
            self.logs.debug("Server", f"Model already loaded: {model} (residency=standard)")
        else:
            self.logs.info("Server", f"Auto-loading model: {model}")
            options = {"ctx_size": body["ctx_size"]} if isinstance(body.get("ctx_size"), int) else {}
            try:
                backend = await self.router.load(model, options)
            except LoadError as exc:
                return json_response(exc.status, error_envelope(exc.code, exc.message, model))
            self.logs.info("Server", f"Model loaded successfully: {model}")
        backend.last_use_ms = int(asyncio.get_running_loop().time() * 1000)
        self.requests += 1
        streaming = body.get("stream") is True
        endpoint = "/api/v1/" + sub
        if streaming:
            self.logs.info("Server", f"POST {endpoint} - Streaming")
        return await self._forward(backend.port, INFERENCE_ROUTES[sub], request.body, stream, endpoint, streaming)

    async def _forward(
        self, port: int, path: str, payload: bytes, stream: Stream, endpoint: str, streaming: bool
    ) -> Response | None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            message = f"Network error: CURL error: Couldn't connect to server ({exc})"
            return json_response(503, {"error": {"message": message, "type": "network_error"}})
        conn = h11.Connection(h11.CLIENT)
        head = h11.Request(
            method="POST",
            target=path,
            headers=[
                ("Host", f"127.0.0.1:{port}"),
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
            ],
        )
        writer.write(
            (conn.send(head) or b"")
            + (conn.send(h11.Data(data=payload)) or b"")
            + (conn.send(h11.EndOfMessage()) or b"")
        )
        try:
            return await self._read(conn, reader, stream, endpoint, streaming)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read(
        self, conn: h11.Connection, reader: asyncio.StreamReader, stream: Stream, endpoint: str, streaming: bool
    ) -> Response | None:
        response: h11.Response | None = None
        parts: list[bytes] = []
        tail = b""
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                break  # the child died mid-response; end what was started
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
                continue
            if isinstance(event, h11.Response):
                response = event
                ctype = dict(event.headers).get(b"content-type", b"")
                if ctype.startswith(b"text/event-stream"):
                    headers = [(k.decode(), v.decode()) for k, v in event.headers if k not in _HOP_BY_HOP]
                    stream.start(event.status_code, [("Vary", "Origin"), *headers])
            elif isinstance(event, h11.Data):
                if stream.started:
                    tail = (tail + bytes(event.data))[-len(_DONE) :]
                    stream.write_chunk(bytes(event.data))
                    if stream.write_paused:
                        await stream.drain()
                else:
                    parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        if response is None:
            error = {"error": {"message": "Backend closed the connection", "type": "network_error"}}
            return json_response(503, error)
        if stream.started:
            if tail != _DONE:
                self.logs.warn("StreamingProxy", "WARNING: Backend did not send [DONE] marker, adding it")
                stream.write_chunk(_DONE)
            stream.end()
            self.logs.info("Server", f"Streaming completed - {response.status_code} OK")
            return None
        if not streaming:
            self.logs.info("Server", f"POST {endpoint} - {response.status_code} OK")
        content_type = dict(response.headers).get(b"content-type", b"application/json").decode()
        return Response(response.status_code, b"".join(parts), [("Vary", "Origin")], content_type)
