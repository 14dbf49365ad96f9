"""lemond's WebSocket log stream (SPEC.md §5.2), kept connected.

Where: ``ws://host:main_port/logs/stream`` on lemond v10.8+; older releases (v10.1-
v10.7) answer that upgrade with a plain 404 and serve the stream only on the
``websocket_port`` reported by ``/v1/health``. :class:`LogStream` tries the main
port first and falls back through a discovery callback, then sticks with what works.

Protocol: send ``{"type":"logs.subscribe","after_seq":N|null}``, receive one
``logs.snapshot`` and then ``logs.entry`` frames. Ordering, de-duplication, resume,
gap and restart detection live in the pure :class:`~hal0proxy.lemond.sequencer.Sequencer`;
this module does the I/O, the reconnect loop (capped exponential backoff with
jitter) and reports to a :class:`LogStreamListener`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from hal0proxy.lemond.sequencer import Outcome, Sequencer
from hal0proxy.lemond.wsclient import (
    WebSocketClient,
    WSConnectFailed,
    WSError,
    WSRejected,
)

__all__ = ["LogStream", "LogStreamListener", "LogStreamStats", "backoff_delay"]

log = logging.getLogger(__name__)

LOG_PATH = "/logs/stream"
SUBPROTOCOL = "lemonade-realtime"

DiscoverPort = Callable[[], Awaitable[int | None]]


class LogStreamListener:
    """Callbacks from :class:`LogStream`; override what you need. Called on the loop thread."""

    def on_entry(self, seq: int, line: str, observed_at: float, *, replay: bool = False) -> None:
        """One log line, in seq order, exactly once per lemond process.

        ``replay`` is True for the snapshot of a fresh (not resumed) subscription:
        history, possibly minutes old, rather than news.
        """

    def on_connected(self, url: str, resumed: bool) -> None:
        """Subscribed and the snapshot has been delivered: the view is current."""

    def on_dropped(self, reason: str) -> None:
        """The connection was lost or could not be (re)established."""

    def on_gap(self, expected: int, got: int) -> None:
        """Entries ``expected .. got-1`` were lost (lemond's ring rolled over)."""

    def on_restart(self) -> None:
        """lemond restarted: seq went backwards. Entries of the new process follow from seq 1."""


@dataclass(slots=True)
class LogStreamStats:
    connects: int = 0
    reconnects: int = 0
    drops: int = 0
    gaps: int = 0
    restarts: int = 0
    entries: int = 0


def backoff_delay(attempt: int, *, initial: float, cap: float, rng: random.Random) -> float:
    """Delay before reconnect attempt ``attempt`` (0 = first retry, at once).

    Exponential with "equal jitter": half fixed, half random, so a fleet of clients
    does not reconnect in lockstep yet the delay never collapses to zero.
    """
    if attempt <= 0:
        return 0.0
    base = min(cap, initial * (2 ** (attempt - 1)))
    return base / 2 + rng.uniform(0, base / 2)


def bearer_subprotocol(api_key: str) -> str:
    token = base64.urlsafe_b64encode(api_key.encode()).decode().rstrip("=")
    return f"bearer.{token}"


class _ServerError(WSError):
    """lemond answered with a ``{"type":"error"}`` frame."""


class LogStream:
    """Keeps one subscription alive and feeds a listener. ``start()``/``stop()``."""

    def __init__(
        self,
        host: str,
        port: int,
        listener: LogStreamListener,
        *,
        api_key: str | None = None,
        discover_ws_port: DiscoverPort | None = None,
        ping_interval: float = 5.0,
        connect_timeout: float = 5.0,
        snapshot_timeout: float = 10.0,
        backoff_initial: float = 0.1,
        backoff_cap: float = 5.0,
        seed: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.listener = listener
        self.api_key = api_key
        self._discover = discover_ws_port
        self.ping_interval = ping_interval
        self.connect_timeout = connect_timeout
        self.snapshot_timeout = snapshot_timeout
        self.backoff_initial = backoff_initial
        self.backoff_cap = backoff_cap
        self._rng = random.Random(seed)
        self.seq = Sequencer()
        self.stats = LogStreamStats()
        self.connected = False
        self.use_ws_port = False  # sticky once the main port refused the upgrade
        self.url: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._ws: WebSocketClient | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="lemond-logstream")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        self.connected = False

    async def drop(self) -> None:
        """Close the current socket (the loop reconnects); used by tests and on demand."""
        if self._ws is not None:
            await self._ws.close()

    # -- connecting -------------------------------------------------------------------

    def _auth(self) -> tuple[list[str], list[tuple[str, str]]]:
        if not self.api_key:
            return [], []
        return (
            [SUBPROTOCOL, bearer_subprotocol(self.api_key)],
            [("Authorization", f"Bearer {self.api_key}")],
        )

    async def _connect_to(self, port: int) -> WebSocketClient:
        protos, headers = self._auth()
        ws = await WebSocketClient.connect(
            self.host,
            port,
            LOG_PATH,
            subprotocols=protos,
            headers=headers,
            timeout=self.connect_timeout,
            ping_interval=self.ping_interval,
        )
        self.url = f"ws://{self.host}:{port}{LOG_PATH}"
        return ws

    async def _open(self) -> WebSocketClient:
        if not self.use_ws_port:
            try:
                return await self._connect_to(self.port)
            except WSRejected as exc:
                if exc.status in (401, 403) or self._discover is None:
                    raise
                # v10.1-v10.7: the main port does not upgrade; use the dedicated WS port.
                self.use_ws_port = True
        port = await self._discover() if self._discover is not None else None
        if port is None:
            self.use_ws_port = False
            raise WSConnectFailed("lemond reports no websocket_port")
        return await self._connect_to(port)

    # -- the loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0  # consecutive attempts that never reached a live subscription
        while True:
            delay = backoff_delay(failures, initial=self.backoff_initial, cap=self.backoff_cap, rng=self._rng)
            if delay:
                await asyncio.sleep(delay)
            try:
                self._ws = await self._open()
            except (WSError, OSError) as exc:
                failures += 1
                self._notify_dropped(f"connect failed: {exc}")
                continue
            reached_live = False
            try:
                await self._session(self._ws)  # returns only when lemond restarted
                reached_live = True
            except (WSError, OSError, ValueError) as exc:
                reached_live = self.connected
                self._notify_dropped(str(exc) or type(exc).__name__)
            finally:
                ws, self._ws = self._ws, None
                if ws is not None:
                    await ws.close()
            # A connection that worked and then dropped is retried at once (resume is
            # cheap and events are waiting); repeated failures back off.
            failures = 0 if reached_live else failures + 1

    def _notify_dropped(self, reason: str) -> None:
        was = self.connected
        self.connected = False
        if was:
            self.stats.drops += 1
        log.debug("lemond log stream: %s", reason)
        self.listener.on_dropped(reason)

    async def _session(self, ws: WebSocketClient) -> None:
        """Subscribe and pump entries. Returns when lemond restarted (resubscribe)."""
        after = self.seq.begin()
        resumed = after is not None
        await ws.send_text(orjson.dumps({"type": "logs.subscribe", "after_seq": after}).decode())
        async with asyncio.timeout(self.snapshot_timeout):
            while self.seq.awaiting_snapshot:
                text, at = await ws.recv()
                if self._handle(text, at):
                    return
        self.stats.connects += 1
        if self.stats.connects > 1:
            self.stats.reconnects += 1
        self.connected = True
        self.listener.on_connected(self.url or "", resumed)
        while True:
            text, at = await ws.recv()
            if self._handle(text, at):
                return

    def _handle(self, text: str, at: float) -> bool:
        """Process one frame; True means a restart was detected."""
        msg: Any = orjson.loads(text)
        if not isinstance(msg, dict):
            return False
        kind = msg.get("type")
        if kind == "logs.entry":
            entry = msg.get("entry")
            if not isinstance(entry, dict):
                return False
            pair = _entry(entry)
            if pair is None:
                return False
            return self._apply(self.seq.on_entry(pair[0], pair[1], at), replay=False)
        if kind == "logs.snapshot":
            raw = msg.get("entries")
            pairs = [p for p in (_entry(e) for e in (raw if isinstance(raw, list) else ())) if p]
            fresh = self.seq.last == 0
            return self._apply(self.seq.on_snapshot(pairs, at), replay=fresh)
        if kind == "error":
            raise _ServerError(f"lemond log stream error: {msg.get('error')}")
        return False

    def _apply(self, out: Outcome, *, replay: bool) -> bool:
        if out.restart:
            self.stats.restarts += 1
            self.seq.reset()
            self.connected = False
            self.listener.on_restart()
            return True
        if out.gap is not None:
            self.stats.gaps += 1
            self.listener.on_gap(*out.gap)
        for d in out.deliver:
            self.stats.entries += 1
            try:
                self.listener.on_entry(d.seq, d.line, d.observed_at, replay=replay)
            except Exception:  # one bad line must not take the stream down
                log.exception("log stream listener failed on seq %d", d.seq)
        return False


def _entry(entry: Any) -> tuple[int, str] | None:
    if not isinstance(entry, dict):
        return None
    seq = entry.get("seq")
    line = entry.get("line")
    if isinstance(seq, bool) or not isinstance(seq, int) or not isinstance(line, str):
        return None
    return seq, line
