"""A keep-alive load generator on raw asyncio protocols, run as its own process.

    python -m bench.loadgen latency --port P --conns 16 --duration 5 [--rate 2000]
    python -m bench.loadgen stream  --port P --conns 4 --duration 5 --max-tokens 1000000
    python -m bench.loadgen stream  --port P --conns 256 --duration 5 --stamp
    python -m bench.loadgen hold    --port P --conns 10000

Prints one JSON object on stdout (``hold`` prints a first one when every stream is open,
then waits for a line on stdin before closing them). Running in a separate process keeps the
generator's CPU out of the process being measured; timestamps are ``perf_counter_ns`` /
``monotonic_ns``, which on Linux share CLOCK_MONOTONIC with the fake child's ``emu_t_ns``.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from typing import cast

import orjson

from bench.httpwire import EventCounter, ResponseScanner, chat_request
from bench.stats import summarize

__all__ = ["main", "raise_nofile"]


def raise_nofile(want: int = 65536) -> int:
    """Raise RLIMIT_NOFILE as far as allowed (root may raise the hard limit too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (max(want, hard), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(want, target)), target))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class _Client(asyncio.Protocol):
    """One keep-alive connection that sends a request and waits for its whole response."""

    __slots__ = ("counter", "done", "lost", "on_stamps", "scanner", "sent_ns", "transport")

    def __init__(self, *, stamps: bool = False, count_events: bool = False) -> None:
        self.transport: asyncio.Transport | None = None
        self.scanner = ResponseScanner()
        self.counter = EventCounter(stamps=stamps) if (stamps or count_events) else None
        self.done: asyncio.Future[int] | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent_ns = 0
        self.on_stamps: list[int] | None = [] if stamps else None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)

    def send(self, request: bytes) -> asyncio.Future[int]:
        assert self.transport is not None
        self.done = asyncio.get_running_loop().create_future()
        self.sent_ns = time.perf_counter_ns()
        self.transport.write(request)
        return self.done

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        complete = self.scanner.feed(data)
        counter = self.counter
        if counter is not None:
            stamps = counter.feed(self.scanner.body_part)
            if stamps and self.on_stamps is not None:
                self.on_stamps.extend(now - s for s in stamps)
            if complete:
                counter.end_of_response()
        if complete and self.done is not None and not self.done.done():
            self.done.set_result(self.scanner.status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("connection closed mid-response"))
        if not self.lost.done():
            self.lost.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def _connect(host: str, port: int, **kwargs: bool) -> _Client:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: _Client(**kwargs), host, port)
    return proto


# -- latency: non-streaming requests ---------------------------------------------------------


async def run_latency(args: argparse.Namespace) -> dict[str, object]:
    request = chat_request(args.host, args.port, args.model, stream=False, max_tokens=args.max_tokens)
    clients = [await _connect(args.host, args.port) for _ in range(args.conns)]
    samples: list[int] = []
    counts = {"ok": 0, "errors": 0, "non200": 0, "sent": 0}
    loop = asyncio.get_running_loop()
    start = loop.time()
    warm_until = start + args.warmup
    stop_at = warm_until + args.duration if args.requests == 0 else float("inf")
    per_conn_quota = args.requests // args.conns if args.requests else 0
    interval = args.conns / args.rate if args.rate > 0 else 0.0

    async def worker(index: int, client: _Client) -> None:
        next_at = start + (interval * index / args.conns)
        sent = 0
        while loop.time() < stop_at and (not per_conn_quota or sent < per_conn_quota):
            if interval:
                delay = next_at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at += interval
            counts["sent"] += 1
            sent += 1
            try:
                status = await client.send(request)
            except ConnectionError:
                counts["errors"] += 1
                client = await _connect(args.host, args.port)
                client_ref[index] = client
                continue
            elapsed = time.perf_counter_ns() - client.sent_ns
            if status != 200:
                counts["non200"] += 1
                continue
            counts["ok"] += 1
            if loop.time() >= warm_until or per_conn_quota:
                samples.append(elapsed)
            if client.scanner.closes:
                client.close()
                client = await _connect(args.host, args.port)
                client_ref[index] = client

    client_ref = list(clients)
    measured_from = time.perf_counter()
    await asyncio.gather(*(worker(i, c) for i, c in enumerate(clients)))
    wall = time.perf_counter() - measured_from
    for client in client_ref:
        client.close()
    measured_wall = wall - (args.warmup if not per_conn_quota else 0.0)
    return {
        "mode": "latency",
        "conns": args.conns,
        "rate_target": args.rate,
        **counts,
        "measured": len(samples),
        "rps": len(samples) / measured_wall if measured_wall > 0 else 0.0,
        "latency": summarize(samples),
    }


# -- stream: SSE relay throughput and per-event delay ------------------------------------------


async def run_stream(args: argparse.Namespace) -> dict[str, object]:
    request = chat_request(args.host, args.port, args.model, stream=True, max_tokens=args.max_tokens, stamp=args.stamp)
    loop = asyncio.get_running_loop()
    clients: list[_Client] = []
    for _ in range(args.conns):
        clients.append(await _connect(args.host, args.port, stamps=args.stamp, count_events=True))
    counts = {"streams_ok": 0, "errors": 0, "non200": 0}
    per_stream_events: list[int] = []
    start = loop.time()
    warm_until = start + args.warmup
    fixed = args.streams > 0
    stop_at = warm_until + args.duration if not fixed else float("inf")
    window = {"events_at_warm": -1, "t_warm": 0.0}

    def total_events() -> int:
        return sum(c.counter.events for c in clients if c.counter is not None)

    async def mark_warm() -> None:
        await asyncio.sleep(max(0.0, warm_until - loop.time()))
        window["events_at_warm"] = total_events()
        window["t_warm"] = time.perf_counter()
        for client in clients:
            if client.on_stamps is not None:
                client.on_stamps.clear()

    async def worker(index: int) -> None:
        done_streams = 0
        while loop.time() < stop_at and (not fixed or done_streams < args.streams):
            client = clients[index]
            assert client.counter is not None
            before = client.counter.events
            try:
                status = await asyncio.wait_for(client.send(request), max(0.01, stop_at - loop.time()))
            except TimeoutError:
                return  # the window closed mid-stream (the normal end of an endless stream)
            except ConnectionError:
                counts["errors"] += 1
                return
            done_streams += 1
            if status != 200:
                counts["non200"] += 1
                continue
            counts["streams_ok"] += 1
            per_stream_events.append(client.counter.events - before)
            if client.scanner.closes:
                old = client
                clients[index] = await _connect(args.host, args.port, stamps=args.stamp, count_events=True)
                # keep the counts of the closed connection
                fresh = clients[index].counter
                assert fresh is not None and old.counter is not None
                fresh.events = old.counter.events
                if old.on_stamps is not None:
                    clients[index].on_stamps = old.on_stamps
                old.close()

    warm_task = asyncio.ensure_future(mark_warm()) if not fixed else None
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(args.conns)))
    t_end = time.perf_counter()
    events = total_events()
    if warm_task is not None:
        await warm_task
        events_measured = events - max(0, int(window["events_at_warm"]))
        seconds = t_end - float(window["t_warm"])
    else:
        events_measured = events
        seconds = t_end - t0
    delays: list[int] = []
    for client in clients:
        if client.on_stamps is not None:
            delays.extend(client.on_stamps)
        client.close()
    return {
        "mode": "stream",
        "conns": args.conns,
        **counts,
        "events": events_measured,
        "events_total": events,
        "seconds": seconds,
        "events_per_s": events_measured / seconds if seconds > 0 else 0.0,
        "per_stream_events": sorted(set(per_stream_events)),
        "delay": summarize(delays) if args.stamp else None,
    }


# -- hold: many concurrent open streams ---------------------------------------------------------


async def run_hold(args: argparse.Namespace) -> dict[str, object]:
    request = chat_request(args.host, args.port, args.model, stream=True, max_tokens=args.max_tokens)
    loop = asyncio.get_running_loop()
    clients: list[_Client] = []
    failed: list[str] = []
    sem = asyncio.Semaphore(args.batch)

    async def open_one() -> None:
        async with sem:
            try:
                client = await asyncio.wait_for(_connect(args.host, args.port, count_events=True), args.connect_timeout)
            except (OSError, TimeoutError) as exc:
                failed.append(type(exc).__name__ + ": " + str(exc)[:80])
                return
            client.send(request)
            clients.append(client)
            # the chat stream's first (role) event arrives at once: the stream is really open
            deadline = loop.time() + args.connect_timeout
            while client.counter is not None and client.counter.events == 0 and loop.time() < deadline:
                if client.lost.done():
                    break
                await asyncio.sleep(0.02)

    t0 = time.perf_counter()
    await asyncio.gather(*(open_one() for _ in range(args.conns)))
    open_s = time.perf_counter() - t0
    live = sum(1 for c in clients if c.counter is not None and c.counter.events > 0 and not c.lost.done())
    print(orjson.dumps({"phase": "open", "live": live, "failed": len(failed), "open_s": open_s}).decode(), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    still = sum(1 for c in clients if not c.lost.done())
    events = sum(c.counter.events for c in clients if c.counter is not None)
    for client in clients:
        client.close()
    return {
        "mode": "hold",
        "conns": args.conns,
        "live": live,
        "still_open": still,
        "failed": len(failed),
        "fail_examples": sorted(set(failed))[:3],
        "events": events,
        "open_s": open_s,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.loadgen")
    parser.add_argument("mode", choices=("latency", "stream", "hold"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="bench")
    parser.add_argument("--conns", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds (after --warmup)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--requests", type=int, default=0, help="latency: fixed total instead of a duration")
    parser.add_argument("--streams", type=int, default=0, help="stream: fixed streams per connection")
    parser.add_argument("--rate", type=float, default=0.0, help="latency: total requests/s (0 = back to back)")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--stamp", action="store_true", help="stream: ask for emu_t_ns stamps")
    parser.add_argument("--batch", type=int, default=256, help="hold: concurrent connection attempts")
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile()
    runner = {"latency": run_latency, "stream": run_stream, "hold": run_hold}[args.mode]
    try:
        import uvloop

        result = uvloop.run(runner(args))
    except ImportError:  # pragma: no cover - uvloop is a runtime dependency of the project
        result = asyncio.run(runner(args))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
