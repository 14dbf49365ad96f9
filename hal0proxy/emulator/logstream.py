"""The WebSocket ``/logs/stream`` protocol (SPEC §5.2).

Nothing is sent until the client's ``logs.subscribe``; then one ``logs.snapshot`` of the
retained entries with ``seq > after_seq`` and a ``logs.entry`` frame per new line. A second
subscribe on the same socket adds a second subscriber (live entries arrive twice), as in
lemond. Bad JSON and any other message get an ``error`` frame.
"""

from __future__ import annotations

import orjson

from hal0proxy.emulator.httpserver import WebSocket, WsApp
from hal0proxy.emulator.logs import LogEntry, LogHub

__all__ = ["WS_PATHS_ALL", "WS_PATHS_LEGACY", "LogStreamApp"]

WS_PATHS_ALL = frozenset(
    {"/logs/stream", "/v1/logs/stream", "/v0/logs/stream", "/api/v1/logs/stream", "/api/v0/logs/stream"}
)
#: v10.1-v10.7: only the exact path, and only on the dedicated WebSocket port
WS_PATHS_LEGACY = frozenset({"/logs/stream"})


def _error_frame(message: str) -> str:
    payload = {"error": {"message": message, "type": "invalid_request_error"}, "type": "error"}
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode()


def _bad_json_message(text: str) -> str:
    # nlohmann::json's wording, which lemond passes through (fixture ws_logs_error_bad_json.json).
    last = text[:1] or ""
    return (
        "Invalid JSON: [json.exception.parse_error.101] parse error at line 1, column 1: "
        f"syntax error while parsing value - invalid literal; last read: '{last}'"
    )


class LogStreamApp(WsApp):
    subprotocols = ("lemonade-realtime",)

    def __init__(self, hub: LogHub, sockets: set[WebSocket]) -> None:
        self._hub = hub
        self._sockets = sockets
        self._tokens: list[int] = []

    def on_open(self, ws: WebSocket) -> None:
        self._sockets.add(ws)

    def on_text(self, ws: WebSocket, text: str) -> None:
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            ws.send_text(_error_frame(_bad_json_message(text)))
            return
        if not isinstance(message, dict) or message.get("type") != "logs.subscribe":
            ws.send_text(_error_frame("Expected logs.subscribe message"))
            return
        after = message.get("after_seq")
        after_seq = after if isinstance(after, int) and not isinstance(after, bool) else None

        def deliver(entry: LogEntry) -> None:
            if ws.closed:
                return
            try:
                ws.send_text(entry.frame)
            except Exception:
                ws.abort()

        # Subscribe before the snapshot, as lemond does; in this single-threaded emulator no
        # entry can be produced in between, so the snapshot always comes first.
        self._tokens.append(self._hub.subscribe(deliver))
        entries = [e.as_json() for e in self._hub.snapshot(after_seq)]
        ws.send_text(orjson.dumps({"entries": entries, "type": "logs.snapshot"}, option=orjson.OPT_SORT_KEYS).decode())

    def on_close(self, ws: WebSocket) -> None:
        for token in self._tokens:
            self._hub.unsubscribe(token)
        self._tokens.clear()
        self._sockets.discard(ws)
