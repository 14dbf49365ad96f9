"""lemond's HTTP API: routing under the four prefixes, bodies, status codes, request logging."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

import orjson

from hal0proxy.emulator import residency, views
from hal0proxy.emulator.catalog import CatalogModel
from hal0proxy.emulator.httpserver import Request, Response, Stream, json_response
from hal0proxy.emulator.logs import LogHub
from hal0proxy.emulator.relay import INFERENCE_ROUTES, Relay
from hal0proxy.emulator.router import LoadError, Router

__all__ = ["PREFIXES", "LemondApi"]

PREFIXES = ("/api/v1/", "/api/v0/", "/v1/", "/v0/")
#: POST-only routes whose GET answers 405 (every POST route but params and jobs)
_POST_ONLY = frozenset(
    {
        "load",
        "unload",
        "pull",
        "delete",
        "chat/completions",
        "completions",
        "responses",
        "embeddings",
        "rerank",
        "reranking",
        "reranker",
        "classify",
        "tokenize",
        "install",
        "uninstall",
        "log-level",
        "audio/transcriptions",
        "audio/speech",
        "images/generations",
        "models/register",
    }
)
#: requests lemond never logs (SPEC §5.1)
_SILENT = frozenset({"health", "stats", "system-stats", "downloads"})
#: frequent GETs that get the pre-routing line but no status line
_NO_STATUS_LINE = frozenset({"models", "system-info"})
_VARY = [("Vary", "Origin")]

Json = dict[str, object]


def _split(path: str) -> str | None:
    for prefix in PREFIXES:
        if path.startswith(prefix):
            return path[len(prefix) :]
    return None


def _json(status: int, payload: object) -> Response:
    return json_response(status, payload, headers=list(_VARY))


class _BadBody(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _body(request: Request, *, required: bool) -> Json:
    if not request.body.strip():
        if required:
            raise _BadBody("Request body is required but was empty")
        return {}
    try:
        data = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise _BadBody(f"Invalid JSON in request body: {exc}") from exc
    if not isinstance(data, dict):
        raise _BadBody("Invalid JSON in request body: expected an object")
    return data


class LemondApi:
    def __init__(
        self,
        router: Router,
        logs: LogHub,
        websocket_port: Callable[[], int | None],
        extra: Callable[[Request], Awaitable[Response | None]] | None = None,
    ) -> None:
        self.router = router
        self.logs = logs
        self._websocket_port = websocket_port
        #: the fault API, tried before the lemond routes
        self._extra = extra
        self.relay = Relay(router, logs)

    async def handle(self, request: Request, stream: Stream) -> Response | None:
        if self._extra is not None and request.path.startswith("/_emu/"):
            return await self._extra(request)
        sub = _split(request.path)
        log_request = sub is None or sub not in _SILENT
        if request.path == "/live":
            log_request = False
        if log_request:
            self.logs.debug("Server", f"{request.method} {request.path}")
        try:
            response = await self._route(request, sub, stream)
        except _BadBody as exc:
            response = _json(400, {"error": exc.message})
        if response is None:
            return None
        if response.status >= 400:
            self.logs.error("Server", f"Error {response.status}: {request.method} {request.path}")
        if response.status == 400:  # server.cpp's error handler adds this line for every 400
            self.logs.error(
                "Server",
                f"400 Bad Request details - Body length: {len(request.body)}, "
                f"Content-Type: {request.header('content-type')}",
            )
        if log_request and (sub not in _NO_STATUS_LINE or request.method != "GET"):
            self.logs.debug("Server", f"{request.method} {request.path} - {response.status}")
        return response

    async def _route(self, request: Request, sub: str | None, stream: Stream) -> Response | None:
        method = request.method
        if sub is None:
            if request.path == "/live" and method in ("GET", "HEAD"):
                return _json(200, {"status": "ok"})
            if request.path == "/metrics" and method in ("GET", "HEAD"):
                return Response(200, self._metrics(), list(_VARY), "text/plain; version=0.0.4")
            if request.path == "/internal/pin" and method == "POST" and self.router.release.has_residency_controls:
                return await residency.handle_pin(self.router, request)
            return _json(404, views.not_found_body(request.path))
        if method in ("GET", "HEAD"):
            if sub == "health":
                return self.health()
            if sub == "models":
                show_all = "show_all=true" in request.query
                return _json(200, self.models(show_all))
            if sub.startswith("models/") and sub.count("/") == 1:
                return self.model(sub.split("/", 1)[1])
            if sub == "stats":
                return _json(200, self.stats())
            if sub == "system-stats":
                return _json(
                    200, {"cpu_percent": 3.5, "gpu_percent": 0.0, "memory_gb": 1.2, "npu_percent": None, "vram_gb": 0.0}
                )
            if sub in _POST_ONLY:
                return _json(405, {"error": "Method Not Allowed. Use POST for this endpoint"})
        elif method == "POST":
            if sub == "load":
                return await self.load(request)
            if sub == "unload":
                return await self.unload(request)
            if sub == "pull":
                return await self.pull(request, stream)
            if sub == "delete":
                return await self.delete(request)
            if sub in INFERENCE_ROUTES:
                return await self.relay.handle(sub, request, stream)
        return _json(404, views.not_found_body(request.path))

    # -- endpoints ---------------------------------------------------------------------------

    def health(self) -> Response:
        router = self.router
        backends = [b for b in router.backends.values() if router.alive(b)]
        body = views.health_body(
            (
                views.BackendView(b.model, b.port, b.child.pid, b.options, b.pinned, b.last_use_ms, b.status)
                for b in backends
            ),
            router.release,
            router.max_loaded,
            self._websocket_port(),
        )
        return _json(200, body)

    def models(self, show_all: bool) -> Json:
        data = [
            views.model_entry(m, m.name in self.router.downloaded)
            for m in self.router.catalog.values()
            if show_all or m.name in self.router.downloaded
        ]
        return {"data": data, "object": "list"}

    def model(self, name: str) -> Response:
        model = self.router.catalog.get(name)
        if model is None:
            err = views.error_envelope("model_not_found", f"Model '{name}' was not found.", name)
            return _json(404, err)
        return _json(200, views.model_entry(model, name in self.router.downloaded))

    def stats(self) -> Json:
        return {
            "cache_tokens": 0,
            "cache_tokens_total": 0,
            "input_tokens": 0,
            "input_tokens_total": 0,
            "output_tokens": 0,
            "output_tokens_total": 0,
            "prompt_tokens": 0,
            "prompt_tokens_total": 0,
            "request_count_total": self.relay.requests,
            "routing_decisions_total": 0,
            "routing_switches_total": 0,
            "time_to_first_token": 0.0,
            "tokens_per_second": 0.0,
        }

    def _metrics(self) -> bytes:
        loaded = sum(1 for b in self.router.backends.values() if self.router.alive(b))
        self.logs.info("Server", "GET /metrics")
        return f"# TYPE lemonade_models_loaded gauge\nlemonade_models_loaded {loaded}\n".encode()

    async def load(self, request: Request) -> Response:
        self.logs.debug("Server", f"===== LOAD ENDPOINT ENTERED (Thread: {threading.get_ident()}) =====")
        body = _body(request, required=True)
        name = body.get("model_name")
        if not isinstance(name, str) or not name:
            err = views.error_envelope("invalid_request", "model_name is required", "")
            return _json(400, err)
        if name not in self.router.catalog:
            # lemond checks the model before it logs anything about loading it.
            self.logs.error("Server", f"Model not found: {name}")
            return _json(404, views.error_envelope("model_not_found", self.router.not_found_message(name), name))
        options = {k: v for k, v in body.items() if k != "model_name"}
        opts = ", ".join(f"{k}={v}" for k, v in options.items())
        self.logs.info("Server", f"Ensuring model loaded: {name} {opts}")
        try:
            backend = await self.router.load(name, body)
        except LoadError as exc:
            if exc.status == 500:
                self.logs.error("Server", f"Failed to load model: {exc.message.split(': ', 1)[-1]}")
            return _json(exc.status, views.error_envelope(exc.code, exc.message, name))
        model = backend.model
        return _json(
            200, {"checkpoint": model.checkpoint, "model_name": model.name, "recipe": model.recipe, "status": "success"}
        )

    async def unload(self, request: Request) -> Response:
        try:
            body = _body(request, required=False)
        except _BadBody:
            body = {}  # an unparsable body unloads everything (SPEC §2.5)
        raw = body.get("model_name", body.get("model"))
        name = raw if isinstance(raw, str) and raw else None
        self.logs.info("Server", "Unload request received")
        try:
            await self.router.unload(name)
        except KeyError:
            self.logs.error("Server", f"Unload failed: Model not loaded: {name}")
            return _json(404, {"error": f"Model not loaded: {name}"})
        if name is None:
            self.logs.info("Server", "All models unloaded successfully")
            return _json(200, {"message": "All models unloaded successfully", "status": "success"})
        self.logs.info("Server", f"Model '{name}' unloaded successfully")
        return _json(200, {"message": "Model unloaded successfully", "model_name": name, "status": "success"})

    def _register(self, name: str, body: Json) -> CatalogModel | None:
        checkpoint, recipe = body.get("checkpoint"), body.get("recipe")
        if not isinstance(checkpoint, str) or not isinstance(recipe, str):
            return None
        kind = "embedding" if body.get("embedding") else "reranking" if body.get("reranking") else "llm"
        model = CatalogModel(name=name, type=kind, checkpoint=checkpoint, recipe=recipe)
        self.router.catalog[name] = model
        return model

    async def pull(self, request: Request, stream: Stream) -> Response | None:
        body = _body(request, required=True)
        raw = body.get("model_name", body.get("model"))
        name = raw if isinstance(raw, str) else ""
        model = self.router.catalog.get(name) or self._register(name, body)
        if model is None:
            message = f"Model '{name}' was not found."
            return _json(404, views.error_envelope("model_not_found", message, name))
        already = name in self.router.downloaded
        self.router.downloaded.add(name)
        if body.get("stream") is not True:
            return _json(200, {"model_name": name, "status": "success"})
        stream.start(200, [*_VARY, ("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
        events = [("complete", {"status": "ok"})] if already else views.pull_progress_events(model)
        for event, data in events:
            payload = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
            stream.write_chunk(b"event: %b\ndata: %b\n\n" % (event.encode(), payload))
            await asyncio.sleep(0)
        stream.end()
        return None

    async def delete(self, request: Request) -> Response:
        body = _body(request, required=True)
        raw = body.get("model_name", body.get("model"))
        name = raw if isinstance(raw, str) else ""
        if name not in self.router.catalog or name not in self.router.downloaded:
            return _json(422, {"error": f"Model not found: {name}"})
        if name in self.router.backends:
            await self.router.unload(name)
        self.router.downloaded.discard(name)
        return _json(200, {"message": f"Deleted model: {name}", "status": "success"})
