"""Per-function cost of the relay's pure per-request steps, on the bytes the relay benchmark sends.

    python -m bench.micro                       # µs per call of each step, this working copy
    python -m bench.micro --baseline REV        # the same steps as of git revision REV, side by side
    python -m bench.micro --json FILE           # also write the figures as JSON

Each case runs its function on realistic input: the request wrk posts in ``bench.relay``, the
response heads of ``bench.fastchild`` and of a real llama-server (cpp-httplib's header set),
one chunk-framed SSE event as the paced child sends it. A case is timed with ``timeit`` on the
process's CPU clock (best of ``--repeat`` rounds of ``--number`` calls, the rounds interleaved
over all cases), so load on a shared machine inflates no figure. Only public entry points that
exist in the baseline too are timed, so the columns compare like with like.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path

import orjson
import uvloop

__all__ = ["main", "measure", "render"]

REPO = Path(__file__).resolve().parents[1]

WRK_BODY = b'{"model":"fast","messages":[{"role":"user","content":"Say something about foxes."}],"max_tokens":8}'
# What wrk sends for bench.relay's script (its header order; wrk adds Host and Content-Length).
WRK_REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(WRK_BODY), WRK_BODY)
)
# What the openai Python client sends (httpx's header set), with the same body.
SDK_REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept-Encoding: gzip, deflate\r\n"
    b"Connection: keep-alive\r\nAccept: application/json\r\nContent-Type: application/json\r\n"
    b"User-Agent: OpenAI/Python 1.99.9\r\nX-Stainless-Lang: python\r\nX-Stainless-Package-Version: 1.99.9\r\n"
    b"X-Stainless-OS: Linux\r\nX-Stainless-Arch: x64\r\nX-Stainless-Runtime: CPython\r\n"
    b"X-Stainless-Runtime-Version: 3.11.2\r\nAuthorization: Bearer unused\r\nX-Stainless-Async: false\r\n"
    b"X-Stainless-Retry-Count: 0\r\nX-Stainless-Read-Timeout: 600\r\nContent-Length: %d\r\n\r\n%s"
    % (len(WRK_BODY), WRK_BODY)
)
FAST_JSON = (
    b'{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}]}'
)
# bench.fastchild's heads
FASTCHILD_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d" % len(FAST_JSON)
FASTCHILD_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked"
)
# a real llama-server's (cpp-httplib) non-streaming head
LLAMA_HEAD = (
    b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: \r\nContent-Length: %d\r\n"
    b"Content-Type: application/json; charset=utf-8\r\nKeep-Alive: timeout=5, max=100\r\nServer: llama.cpp"
    % len(FAST_JSON)
)
SSE_PAYLOAD = (
    b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":" fox"}}],"created":1764400000,'
    b'"id":"chatcmpl-x","model":"paced","object":"chat.completion.chunk","emu_t_ns":123456789012345}\n\n'
)
SSE_CHUNK = b"%x\r\n%b\r\n" % (len(SSE_PAYLOAD), SSE_PAYLOAD)


def _cases() -> dict[str, Callable[[], object]]:
    """name -> a zero-argument call of the step on its input (imports the package under test)."""
    from hal0proxy.http.framing import ChunkedScanner, LengthScanner
    from hal0proxy.http.messages import HttpRequest
    from hal0proxy.http.request_head import parse_request_head
    from hal0proxy.http.response_reader import ResponseReader, parse_head
    from hal0proxy.metrics import Metrics
    from hal0proxy.proxy.context import ProxyContext
    from hal0proxy.proxy.downstream import ClientConnection
    from hal0proxy.proxy.reader import RequestReader
    from hal0proxy.proxy.settings import ProxySettings
    from hal0proxy.proxy.upstream import UpstreamConnection, UpstreamPool
    from hal0proxy.proxy.wire import downstream_head, upstream_request
    from hal0proxy.routing.classify import classify
    from hal0proxy.routing.contract import StaticRouter

    settings = ProxySettings()

    def read_request(data: bytes) -> Callable[[], object]:
        def run() -> object:
            reader = RequestReader(65536, 1 << 26, "127.0.0.1")
            reader.feed(data)
            return reader.next_request()

        return run

    def parsed(data: bytes) -> HttpRequest:
        reader = RequestReader(65536, 1 << 26, "127.0.0.1")
        reader.feed(data)
        req = reader.next_request()
        assert req is not None
        return req

    wrk_req = parsed(WRK_REQUEST)
    sdk_req = parsed(SDK_REQUEST)
    fast_head, _ = parse_head(FASTCHILD_HEAD, False)
    llama_head, _ = parse_head(LLAMA_HEAD, False)
    sse_head, _ = parse_head(FASTCHILD_SSE_HEAD, False)
    metrics = Metrics()

    def read_response(head: bytes) -> Callable[[], object]:
        data = head + b"\r\n\r\n" + FAST_JSON

        def run() -> object:
            done = ResponseReader(False).feed(data)
            assert done is not None
            return done[1].feed(done[2])

        return run

    def chunked_event() -> object:
        scanner = ChunkedScanner()
        return scanner.feed(SSE_CHUNK)

    scanner = ChunkedScanner()

    def chunked_feed() -> object:
        return scanner.feed(SSE_CHUNK)  # a long stream: one event per read

    def length_feed() -> object:
        return LengthScanner(len(FAST_JSON)).feed(FAST_JSON)

    def relay(request: bytes, *responses: bytes) -> tuple[ClientConnection, UpstreamConnection]:
        """A client connection and a pooled child connection over null transports, on an event
        loop that never runs (the relay's fast path needs no task and schedules no timer), that
        has taken ``request`` and been answered ``responses`` by the child."""
        loop = uvloop.new_event_loop()
        ctx = ProxyContext(router=StaticRouter({"fast": 9}), pool=UpstreamPool(), observe=Metrics().observe_request)
        conn = ClientConnection(ctx, loop=loop)
        conn.connection_made(_NullTransport())  # type: ignore[arg-type]
        child = UpstreamConnection(ctx.pool, 9)
        child.connection_made(_NullTransport())  # type: ignore[arg-type]
        ctx.pool.release(child)
        conn.data_received(request)
        for response in responses:
            child.data_received(response)
        return conn, child

    json_answer = FASTCHILD_HEAD + b"\r\n\r\n" + FAST_JSON

    def whole_request(request: bytes) -> Callable[[], object]:
        conn, child = relay(request, json_answer)
        assert conn.exchange is None, "the relay did not complete the request"

        def run() -> object:
            conn.data_received(request)
            return child.data_received(json_answer)

        return run

    def controller_lease() -> Callable[[], object]:
        """The lemond-mode router's hot path: a lease on a ready slot and its release (the slot
        goes serving and back, in-flight accounting, the journal's slot events)."""
        from hal0proxy.config import Config, SlotConfig
        from hal0proxy.control.controller import Controller
        from hal0proxy.lemond.adapter import LemondAdapter
        from hal0proxy.lemond.events import ModelLoaded
        from hal0proxy.routing.classify import Classified

        config = Config(slots=(SlotConfig(name="primary", model="fast"),))
        controller = Controller(config, LemondAdapter("http://127.0.0.1:1", api_key=None))
        controller.adapter._publish(ModelLoaded(model="fast", port=9, pid=42, observed_at=controller.clock()))
        controller.adapter.routes.mark_proven("fast", 9)
        asked = Classified("primary", ("chat", "primary"), b"/v1/chat/completions", False)

        def run() -> object:
            lease = controller.acquire_now(asked)
            assert lease is not None
            lease.release()
            return lease

        return run

    def sse_event() -> Callable[[], object]:
        conn, child = relay(WRK_REQUEST, FASTCHILD_SSE_HEAD + b"\r\n\r\n")
        assert conn.exchange is not None, "the stream ended"
        return lambda: child.data_received(SSE_CHUNK)

    # Real clients change the Content-Length on every request, and a new client's head is new.
    lengths = itertools.cycle(
        [SDK_REQUEST.replace(b"Content-Length: %d" % len(WRK_BODY), b"Content-Length: %d" % n) for n in range(64)]
    )
    unseen = itertools.cycle(
        [SDK_REQUEST.replace(b"User-Agent: OpenAI/Python", b"User-Agent: Client-%d" % n) for n in range(4096)]
    )
    return {
        "parse_request_head (wrk)": lambda: parse_request_head(WRK_REQUEST),
        "parse_request_head (openai SDK)": lambda: parse_request_head(SDK_REQUEST),
        "parse_request_head (openai SDK, length varies)": lambda: parse_request_head(next(lengths)),
        "parse_request_head (openai SDK, head never seen)": lambda: parse_request_head(next(unseen)),
        "RequestReader feed+next_request (wrk)": read_request(WRK_REQUEST),
        "RequestReader feed+next_request (openai SDK)": read_request(SDK_REQUEST),
        "classify (chat JSON body)": lambda: classify(
            wrk_req.path, wrk_req.query, wrk_req.header(b"content-type") or b"", wrk_req.body
        ),
        "upstream_request (wrk)": lambda: upstream_request(wrk_req, b"/v1/chat/completions", settings),
        "upstream_request (openai SDK)": lambda: upstream_request(sdk_req, b"/v1/chat/completions", settings),
        "parse_head (fastchild JSON)": lambda: parse_head(FASTCHILD_HEAD, False),
        "parse_head (llama-server JSON)": lambda: parse_head(LLAMA_HEAD, False),
        "parse_head (fastchild SSE)": lambda: parse_head(FASTCHILD_SSE_HEAD, False),
        "ResponseReader feed+body (fastchild JSON)": read_response(FASTCHILD_HEAD),
        "ResponseReader feed+body (llama-server JSON)": read_response(LLAMA_HEAD),
        "downstream_head (fastchild JSON)": lambda: downstream_head(fast_head, True, False),
        "downstream_head (llama-server JSON)": lambda: downstream_head(llama_head, True, False),
        "downstream_head (SSE)": lambda: downstream_head(sse_head, True, False),
        "ChunkedScanner.feed (one SSE event)": chunked_feed,
        "ChunkedScanner() + feed (one SSE event)": chunked_event,
        "LengthScanner() + feed": length_feed,
        "Metrics.observe_request": lambda: metrics.observe_request("fast", 200, 0.000123, 0.0001),
        "whole request, client read to response written (wrk)": whole_request(WRK_REQUEST),
        "whole request, client read to response written (openai SDK)": whole_request(SDK_REQUEST),
        "one SSE event, child read to client write": sse_event(),
        "Controller lease + release (lemond mode, ready slot)": controller_lease(),
    }


class _NullTransport:
    """A transport that takes every write and does nothing (what the Python side costs, no syscall)."""

    def write(self, data: bytes) -> None:
        return None

    def writelines(self, pieces: object) -> None:
        return None

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None

    def close(self) -> None:
        return None

    def abort(self) -> None:
        return None


def measure(number: int, repeat: int) -> dict[str, float]:
    """µs of CPU per call of every case: the best of ``repeat`` rounds of ``number`` calls.

    Rounds go over all cases in turn (a burst of load on the shared machine hits one round of
    every case, not every round of one case), and the timer is the process's CPU time, so time
    spent preempted by other processes is not counted.
    """
    cases = _cases()
    best = dict.fromkeys(cases, float("inf"))
    for call in cases.values():
        call()  # warm caches and fail early on a broken case
    for _ in range(repeat):
        for name, call in cases.items():
            best[name] = min(best[name], timeit.timeit(call, number=number, timer=time.process_time))
    return {name: seconds * 1e6 / number for name, seconds in best.items()}


def _baseline(rev: str, number: int, repeat: int) -> dict[str, float]:
    """Run the same cases in a subprocess on the package as of ``rev`` (exported to a temporary tree)."""
    with tempfile.TemporaryDirectory(prefix="hal0micro-") as tmp:
        archive = subprocess.run(["git", "archive", rev, "hal0proxy"], cwd=REPO, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        argv = [sys.executable, "-P", "-m", "bench.micro", "--emit-json", "--number", str(number)]
        argv += ["--repeat", str(repeat)]
        env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{REPO}"}
        done = subprocess.run(argv, cwd=tmp, env=env, capture_output=True, check=False, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"baseline run failed:\n{done.stderr.decode()[-2000:]}")
        result = orjson.loads(done.stdout.splitlines()[-1])
        origin = result.pop("__package__")
        if not str(origin).startswith(tmp):
            raise RuntimeError(f"baseline imported the working copy ({origin}), not revision {rev}")
        return {k: float(v) for k, v in result.items()}


def render(current: dict[str, float], before: dict[str, float] | None, rev: str | None) -> str:
    lines = ["| step | " + (f"{rev} µs | " if before else "") + "now µs |" + (" now ÷ before |" if before else "")]
    lines.append("|---|---|" + ("---|---|" if before else ""))
    for name, now in current.items():
        if before:
            was = before.get(name)
            shown = "—" if was is None else f"{was:.2f}"
            ratio = "—" if not was else f"{now / was:.2f}"
            lines.append(f"| {name} | {shown} | {now:.2f} | {ratio} |")
        else:
            lines.append(f"| {name} | {now:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__)
    parser.add_argument("--baseline", default=None, help="git revision to time side by side")
    parser.add_argument("--number", type=int, default=2000, help="calls per timing round")
    parser.add_argument("--repeat", type=int, default=30, help="timing rounds; the best is kept")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--emit-json", action="store_true", help=argparse.SUPPRESS)  # the baseline subprocess
    args = parser.parse_args(argv)
    if args.emit_json:
        import hal0proxy

        current = measure(args.number, args.repeat)
        print(orjson.dumps({**current, "__package__": str(Path(hal0proxy.__file__).parent)}).decode())
        return 0
    before: dict[str, float] | None = None
    if not args.baseline:
        current = measure(args.number, args.repeat)
    else:
        # Both sides in turns (three of each, a third of the rounds each time), best of all
        # turns: a stretch of load on the machine then weighs on both columns alike.
        rounds = max(1, args.repeat // 3)
        current, before = {}, {}
        for _ in range(3):
            for name, value in measure(args.number, rounds).items():
                current[name] = min(value, current.get(name, value))
            for name, value in _baseline(args.baseline, args.number, rounds).items():
                before[name] = min(value, before.get(name, value))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"Command: `python -m bench.micro {' '.join(argv if argv is not None else sys.argv[1:])}`".rstrip())
    print(f"CPU µs per call, best of {args.repeat} rounds of {args.number} calls; load average {load}\n")
    print(render(current, before, args.baseline))
    if args.json is not None:
        args.json.write_bytes(orjson.dumps({"now": current, "before": before, "baseline": args.baseline}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
