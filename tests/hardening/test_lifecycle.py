"""Shutdown's last phase and configuration reload, against real processes.

SIGTERM: the listener closes, responses in flight may finish within ``shutdown_grace_s``,
then a stream still running ends with the stream-interrupted event and a proper end of its
chunked body, a response not started gets ``503 proxy.shutting_down``, event subscribers get
a final event at once, and the process exits 0 within grace + 1 s.
SIGHUP: the file is read again; live keys apply without dropping any connection (header and
body limits to connections opened after the reload), restart-only keys are named in the log,
and an invalid file changes nothing.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from tests.hardening.children import Script, ScriptedChild
from tests.hardening.wire import Conn, request
from tests.support.emulator import start_emulator, wait_until
from tests.support.proxy import ProxyProcess, start_proxy

GRACE_S = 2.0
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
EVENT = b'data: {"i":0}\n\n'


def _config_path(proxy: ProxyProcess) -> Path:
    argv = list(proxy.proc.args)  # type: ignore[arg-type]
    return Path(argv[argv.index("--config") + 1])


def _wait_exit(proxy: ProxyProcess, timeout: float) -> float:
    started = time.monotonic()
    proxy.proc.wait(timeout=timeout)
    return time.monotonic() - started


def test_sigterm_ends_streams_left_after_the_grace_and_exits_in_time() -> None:
    scripts = {
        # One event, then silence for far longer than the grace.
        "slow_stream": Script(SSE_HEAD + b"%x\r\n%s\r\n" % (len(EVENT), EVENT), pause_s=30, later=b"0\r\n\r\n"),
        "no_answer": Script(b"", pause_s=30, later=b""),
    }
    child = ScriptedChild(scripts=scripts).start()
    config = f"[limits]\nshutdown_grace_s = {GRACE_S}\n"
    proxy = start_proxy("http://127.0.0.1:1", config, "--static-route", f"m={child.port}")
    body = b'{"model":"m","stream":true,"messages":[]}'
    try:
        streaming = Conn(proxy.port, timeout=30)
        streaming.send(request("POST", "/v1/chat/completions", body, [("X-Script", "slow_stream")]))
        while EVENT not in streaming.buf:
            assert streaming._more()
        waiting = Conn(proxy.port, timeout=30)
        waiting.send(request("POST", "/v1/chat/completions", body, [("X-Script", "no_answer")]))
        assert wait_until(lambda: len(child.recorded()) == 2, 10)

        proxy.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        # The stream in flight keeps going through the grace, then ends with a well-formed event.
        stream = streaming.read_answer(b"POST")
        ended_after = time.monotonic() - signalled
        assert stream.status == 200 and stream.headers[b"transfer-encoding"] == b"chunked"
        assert stream.body.startswith(EVENT)
        tail = json.loads(stream.body[len(EVENT) :].removeprefix(b"data: "))
        assert tail["error"]["code"] == "upstream.stream_interrupted"
        assert "shutting down" in tail["error"]["message"]
        assert ended_after >= GRACE_S - 0.2, ended_after  # it was given the whole grace
        # The response that had not started gets a clean 503 with Retry-After.
        unstarted = waiting.read_answer(b"POST")
        assert unstarted.status == 503 and unstarted.headers[b"retry-after"] == b"1"
        assert unstarted.json()["error"]["code"] == "proxy.shutting_down"
        exited_after = time.monotonic() - signalled + _wait_exit(proxy, 10)
        assert proxy.proc.returncode == 0
        print(f"SIGTERM: stream ended after {ended_after:.2f} s, exit after {exited_after:.2f} s (grace {GRACE_S} s)")
        # The requirement itself: exit within grace + 1 s of SIGTERM.
        assert exited_after < GRACE_S + 1.0, exited_after
        streaming.close()
        waiting.close()
    finally:
        proxy.stop()
        child.stop()


def test_sigterm_closes_event_subscribers_with_a_final_event_at_once() -> None:
    emulator = start_emulator()
    proxy = start_proxy(emulator.base_url, "[limits]\nshutdown_grace_s = 20\n")
    try:
        subscribers = []
        for version in ("1.1", "1.0"):
            conn = Conn(proxy.port, timeout=30)
            conn.send(f"GET /api/v1/adapter/events HTTP/{version}\r\nHost: localhost\r\n\r\n".encode())
            while b"event: snapshot" not in conn.buf:
                assert conn._more()
            subscribers.append(conn)
        chunked_head, _, _ = subscribers[0].buf.partition(b"\r\n\r\n")
        plain_head, _, _ = subscribers[1].buf.partition(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in chunked_head.lower()
        # HTTP/1.0 knows no chunked coding: a body delimited by the close instead.
        assert b"transfer-encoding" not in plain_head.lower() and b"connection: close" in plain_head.lower()

        proxy.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        for version, conn in zip(("1.1", "1.0"), subscribers, strict=True):
            assert conn.closed_by_peer(timeout=10), (version, conn.buf[-300:], proxy.log_text()[-3000:])
        closed_after = time.monotonic() - signalled
        assert closed_after < 5, closed_after  # not held for the 20 s grace: nothing is in flight
        assert subscribers[0].buf.endswith(b"\r\n0\r\n\r\n")
        assert b'event: shutdown\ndata: {"type":"shutdown"' in subscribers[0].buf
        assert subscribers[1].buf.endswith(b'"reason":"the proxy is shutting down"}\n\n')
        _wait_exit(proxy, 10)
        assert proxy.proc.returncode == 0
    finally:
        proxy.stop()
        emulator.stop()


def test_sighup_applies_live_keys_without_dropping_connections() -> None:
    child = ScriptedChild().start()
    proxy = start_proxy("http://127.0.0.1:1", "[limits]\nmax_body_bytes = 1000\n", "--static-route", f"m={child.port}")
    big = b'{"model":"m","pad":"' + b"x" * 2000 + b'"}'
    try:
        kept = Conn(proxy.port)
        kept.send(request("POST", "/v1/chat/completions", b'{"model":"m"}'))
        assert kept.read_answer(b"POST").status == 200
        refused = Conn(proxy.port)
        refused.send(request("POST", "/v1/chat/completions", big))
        assert refused.read_answer(b"POST").status == 413
        refused.close()

        path = _config_path(proxy)
        path.write_text(
            '[limits]\nmax_body_bytes = 100000\n[policy]\nmax_wait_s = 5\n[[slot]]\nname = "x"\nmodel = "y"\n'
        )
        proxy.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "configuration reloaded" in proxy.log_text(), 10)
        log = proxy.log_text()
        assert "limits.max_body_bytes" in log and "policy.max_wait_s" in log
        assert "need a restart: slot 'x' added" in log

        fresh = Conn(proxy.port)
        fresh.send(request("POST", "/v1/chat/completions", big))
        assert fresh.read_answer(b"POST").status == 200  # the new limit applies
        fresh.close()
        kept.send(request("POST", "/v1/chat/completions", b'{"model":"m"}'))
        assert kept.read_answer(b"POST").status == 200  # the old connection was not dropped

        path.write_text("[limits]\nmax_body_bytes = -1\n")
        proxy.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "configuration reload refused" in proxy.log_text(), 10)
        assert "limits.max_body_bytes: must be > 0" in proxy.log_text()
        again = Conn(proxy.port)
        again.send(request("POST", "/v1/chat/completions", big))
        assert again.read_answer(b"POST").status == 200  # still the last good configuration
        again.close()
        kept.send(request("POST", "/v1/chat/completions", b'{"model":"m"}'))
        assert kept.read_answer(b"POST").status == 200
        kept.close()
        assert proxy.proc.poll() is None
    finally:
        proxy.stop()
        child.stop()


def test_sighup_with_an_unchanged_file_changes_nothing() -> None:
    child = ScriptedChild().start()
    proxy = start_proxy("http://127.0.0.1:1", "", "--static-route", f"m={child.port}")
    try:
        proxy.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "applied: nothing changed" in proxy.log_text(), 10)
        assert "need a restart" not in proxy.log_text()
        assert proxy.proc.poll() is None
        conn = Conn(proxy.port)
        conn.send(request("GET", "/v1/models"))
        assert conn.read_answer().status == 200
        conn.close()
    finally:
        proxy.stop()
        child.stop()
