"""The benchmark harness in its fixed-count ``tiny`` mode: every number is checked for consistency.

Not a performance test (no timing thresholds): it proves that the load generator, the process
management and the report still work, so the benchmark cannot silently rot.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bench.httpwire import Dechunker, EventCounter, ResponseScanner
from bench.profiles import PROFILES
from bench.stats import percentile, summarize

REPO = Path(__file__).resolve().parents[1]
TINY = PROFILES["tiny"]


def _finite_positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, object], str]:
    out = tmp_path_factory.mktemp("bench") / "tiny.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--tiny", "--targets", "direct,hal0proxy", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return orjson.loads(out.read_bytes()), done.stdout.decode()


def test_non_streaming_requests_all_succeed(tiny_run: tuple[dict[str, object], str]) -> None:
    results, _ = tiny_run
    for section in ("latency", "latency_paced"):
        by_target = results[section]
        assert isinstance(by_target, dict) and set(by_target) == {"direct", "hal0proxy"}
        for name, result in by_target.items():
            assert result["errors"] == 0 and result["non200"] == 0, (section, name, result)
            assert result["ok"] == result["sent"] == TINY.latency_requests, (section, name, result)
            latency = result["latency"]
            assert latency["n"] == TINY.latency_requests
            assert 0 < latency["p50_us"] <= latency["p99_us"] <= latency["max_us"]
    assert _finite_positive(results["latency"]["hal0proxy"]["relay_cpu_us_per_req"])


def test_streams_deliver_every_event(tiny_run: tuple[dict[str, object], str]) -> None:
    results, _ = tiny_run
    # a chat stream is the role event, max_tokens token events, the finish event and [DONE]
    for name, result in results["stream_throughput"].items():
        assert result["errors"] == 0 and result["non200"] == 0, (name, result)
        assert result["streams_ok"] == TINY.stream_conns * TINY.stream_streams
        assert result["per_stream_events"] == [TINY.stream_max_tokens + 3]
        assert result["events"] == result["streams_ok"] * (TINY.stream_max_tokens + 3)
        assert _finite_positive(result["events_per_s"])
    for name, result in results["stream_delay"].items():
        assert result["streams_ok"] == TINY.stamp_conns * TINY.stamp_streams, (name, result)
        assert result["per_stream_events"] == [TINY.stamp_max_tokens + 3]
        # every event but [DONE] carries a stamp, and each was matched exactly once
        assert result["delay"]["n"] == result["streams_ok"] * (TINY.stamp_max_tokens + 2)
        assert 0 < result["delay"]["p50_us"] <= result["delay"]["p99_us"]


def test_open_streams_are_held_and_measured(tiny_run: tuple[dict[str, object], str]) -> None:
    results, stdout = tiny_run
    hold = results["hold"]
    assert "error" not in hold, hold
    assert hold["live"] == hold["still_open"] == hold["requested"] == TINY.hold_streams
    assert hold["failed"] == 0
    assert hold["rss_open_mb"] >= hold["rss_idle_mb"] > 0
    # both sides of every stream are open in the proxy
    assert hold["proxy_fds"] >= 2 * TINY.hold_streams
    assert "| non-stream p50 µs (16 conns, back to back) |" in stdout
    assert f"streams requested / live / failed | {TINY.hold_streams} / {TINY.hold_streams} / 0" in stdout


def test_scanners_handle_arbitrary_read_boundaries() -> None:
    events = [b'data: {"x":%d,"emu_t_ns":%d}\n\n' % (i, 1000 + i) for i in range(50)]
    # re-chunk at boundaries that do not match the events, the way a buffering relay may
    payload = b"".join(events)
    chunks = [payload[i : i + 37] for i in range(0, len(payload), 37)]
    body = b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    scanner, counter, stamps, done = ResponseScanner(), EventCounter(stamps=True), [], []
    for i in range(0, len(wire), 11):
        done.append(scanner.feed(wire[i : i + 11]))
        stamps += counter.feed(scanner.body_part)
    assert done[-1] and not any(done[:-1])
    assert scanner.status == 200
    assert counter.events == 50
    assert stamps == [1000 + i for i in range(50)]
    assert Dechunker().feed(body) == payload


def test_content_length_responses_and_percentiles() -> None:
    scanner = ResponseScanner()
    wire = b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nhello"
    assert not scanner.feed(wire[:20])
    assert scanner.feed(wire[20:])
    assert scanner.status == 404
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile(list(range(1, 101)), 99) == 99
    summary = summarize([1000, 2000, 3000])
    assert summary["n"] == 3 and summary["p50_us"] == 2.0 and summary["max_us"] == 3.0


def test_relay_quick_run_measures_every_row(tmp_path: Path) -> None:
    """``bench.relay --quick``: the fast child, wrk and the load generator through hal0proxy."""
    out = tmp_path / "relay.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.relay", "--quick", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    targets = orjson.loads(out.read_bytes())["targets"]
    assert set(targets) == {"direct", "hal0proxy"}
    for name, rows in targets.items():
        assert len(rows) == 1, (name, rows)
        row = rows[0]
        assert row["non2xx"] == 0 and row["sse_errors"] == 0, (name, row)
        assert _finite_positive(row["c16_rps"]) and _finite_positive(row["c1_p50_us"]), (name, row)
        assert row["sse_events"] > 0 and 0 < row["delay_p50_us"] <= row["delay_p99_us"], (name, row)
    proxy = targets["hal0proxy"][0]
    assert _finite_positive(proxy["cpu_us_per_req"]) and _finite_positive(proxy["cpu_us_per_event"])
    assert "| 16 clients req/s (wrk -c16) |" in done.stdout.decode()


def test_relay_report_gives_the_median_ratio_past_two_rounds() -> None:
    from bench.relay import render

    def rows(scale: float) -> list[dict[str, float]]:
        keys = ("c1_p50_us", "c16_rps", "cpu_us_per_req", "cpu_us_per_event", "delay_p50_us", "delay_p99_us")
        return [{k: scale * r for k in keys} | {"sse_events": 10, "non2xx": 0, "sse_errors": 0} for r in (1, 2, 4)]

    context = {"date": "d", "cpus": 2, "loadavg_before": [0], "loadavg_after": [0], "seconds": 1}
    targets = {"direct": rows(1.0), "hal0proxy": rows(3.0), "nginx": rows(2.0)}
    text = render({"targets": targets, "context": context}, "python -m bench.relay --rounds 3")
    assert "| relay CPU per request | 1.50 / 1.50 / 1.50 (median 1.50) | ≤ 2 |" in text
    assert "| 16 clients req/s (wrk -c16) | 1 / 2 / 4 |" in text  # the direct column of three rounds


def test_fast_child_events_carry_stamps_and_end_the_chunked_body() -> None:
    from bench.fastchild import event_bytes

    first = event_bytes(b'{"x":1,')
    body = first + b"0\r\n\r\n"
    payload = Dechunker().feed(body)
    counter = EventCounter(stamps=True)
    stamps = counter.feed(body)
    assert payload.startswith(b'data: {"x":1,"emu_t_ns":') and payload.endswith(b"}\n\n")
    assert counter.events == 1 and len(stamps) == 1 and stamps[0] > 0


def test_uvloop_floor_splices_requests_and_streams(tmp_path: Path) -> None:
    """``bench.floor`` (the relay table's uvloop-floor target) relays keep-alive requests and a stream."""
    import http.client

    from bench.relay import _start_fast_child, _start_floor

    child, child_port = _start_fast_child("fast", tmp_path, 0.0)
    try:
        floor, ports = _start_floor(tmp_path, {"fast": child_port})
        try:
            conn = http.client.HTTPConnection("127.0.0.1", ports["fast"], timeout=10)
            body = b'{"model":"fast","messages":[{"role":"user","content":"hi"}],"max_tokens":4}'
            answers = []
            for _ in range(3):  # one client connection, kept alive across requests
                conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                answers.append((resp.status, resp.read()))
            direct = http.client.HTTPConnection("127.0.0.1", child_port, timeout=10)
            direct.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            expected = direct.getresponse().read()
            assert answers == [(200, expected)] * 3
            stream = body.replace(b'"max_tokens":4', b'"max_tokens":4,"stream":true')
            conn.request("POST", "/v1/chat/completions", stream, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200 and resp.getheader("Transfer-Encoding") == "chunked"
            counter = EventCounter(stamps=False)
            counter.feed(resp.read())  # de-chunked by http.client already
            assert counter.events == 4 + 3  # role, 4 tokens, finish, [DONE] as the child sends them
        finally:
            floor.stop()
    finally:
        child.stop()


def test_micro_benchmark_times_every_step(tmp_path: Path) -> None:
    """``bench.micro``: every case runs on its bytes and gets a positive, finite time."""
    out = tmp_path / "micro.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.micro", "--number", "20", "--repeat", "1", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    figures = orjson.loads(out.read_bytes())["now"]
    assert len(figures) >= 15
    assert all(_finite_positive(value) for value in figures.values()), figures
    assert "| parse_request_head (wrk) |" in done.stdout.decode()
