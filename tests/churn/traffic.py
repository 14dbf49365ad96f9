"""Client traffic for the churn tests: steady requests and streams, every outcome classified.

An outcome is one of ``200`` (non-streaming), ``done`` / ``interrupted`` (a stream that ended
with ``[DONE]`` or with the proxy's ``upstream.stream_interrupted`` event), ``503`` (with a
numeric ``Retry-After``), or a problem: any other status, a 503 without ``Retry-After``, a
stream that ended without either marker, or a transport error.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    statuses: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, outcome)
    codes: Counter[str] = field(default_factory=Counter)  # error codes of the 503s
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: str, problem: str | None = None) -> None:
        with self.lock:
            self.outcomes[outcome] += 1
            self.statuses.append((time.monotonic(), outcome))
            if problem is not None:
                self.problems.append(problem)

    def summary(self) -> str:
        return f"outcomes={dict(self.outcomes)} problems={self.problems[:5]}"


def one_request(port: int, model: str, tally: Tally, *, stream: bool, max_tokens: int = 8, timeout: float = 60) -> None:
    body = {"model": model, "stream": stream, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "go"}]}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        tally.add("transport_error", f"{model}: {type(exc).__name__}: {exc}")
        return
    finally:
        conn.close()
    retry_after = resp.getheader("retry-after") or ""
    if resp.status == 200 and not stream:
        tally.add("200")
    elif resp.status == 200:
        events = [e for e in data.split(b"\n\n") if e.strip()]
        if events and events[-1] == b"data: [DONE]":
            tally.add("done")
        elif events and b"upstream.stream_interrupted" in events[-1]:
            tally.add("interrupted")
        else:
            tally.add("truncated", f"{model}: stream ended without [DONE] or error event: {data[-200:]!r}")
    elif resp.status == 503 and retry_after.isdigit():
        tally.add("503")
        try:
            code = json.loads(data)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = "?"
        with tally.lock:
            tally.codes[str(code)] += 1
    else:
        tally.add(f"status_{resp.status}", f"{model}: {resp.status} retry-after={retry_after!r} {data[:300]!r}")


class Hammer:
    """``clients`` threads sending requests for ``model`` back to back until ``stop()``."""

    def __init__(self, port: int, model: str, clients: int = 2, *, stream: bool = False, max_tokens: int = 8) -> None:
        self.tally = Tally()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(port, model, stream, max_tokens), daemon=True)
            for _ in range(clients)
        ]

    def _run(self, port: int, model: str, stream: bool, max_tokens: int) -> None:
        while not self._stop.is_set():
            answered = len(self.tally.statuses)
            one_request(port, model, self.tally, stream=stream, max_tokens=max_tokens)
            if len(self.tally.statuses) > answered and self.tally.statuses[-1][1] == "503":
                self._stop.wait(0.2)  # as an SDK honouring Retry-After would, but shorter

    def __enter__(self) -> Hammer:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> Tally:
        self._stop.set()
        for t in self._threads:
            t.join(90)
        return self.tally

    def __exit__(self, *exc: object) -> None:
        self.stop()
