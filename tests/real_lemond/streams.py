"""Raw streaming requests through the proxy, classified the way the SLO counts them."""

from __future__ import annotations

import http.client
import json
from collections import Counter
from dataclasses import dataclass


@dataclass
class Outcome:
    status: int
    kind: str  # done | interrupted | truncated | error_status | transport_error
    body: bytes = b""
    retry_after: str | None = None


def classify(status: int, data: bytes, retry_after: str | None) -> Outcome:
    if status != 200:
        return Outcome(status, "error_status", data, retry_after)
    events = [e for e in data.split(b"\n\n") if e.strip()]
    if events and events[-1].strip() == b"data: [DONE]":
        return Outcome(status, "done", data)
    if events and b"upstream.stream_interrupted" in events[-1]:
        return Outcome(status, "interrupted", data)
    return Outcome(status, "truncated", data)


def stream_chat(port: int, model: str, max_tokens: int = 40, timeout: float = 90.0) -> Outcome:
    body = {"model": model, "stream": True, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "go"}]}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        return classify(resp.status, data, resp.getheader("retry-after"))
    except (OSError, http.client.HTTPException) as exc:
        return Outcome(0, "transport_error", f"{type(exc).__name__}: {exc}".encode())
    finally:
        conn.close()


def acceptable(outcome: Outcome) -> bool:
    """The SLO: never a 502, never a stream cut without an error event, never a dropped
    connection; a 503 must say when to retry."""
    if outcome.kind in ("done", "interrupted"):
        return True
    if outcome.kind == "error_status" and outcome.status == 503:
        return (outcome.retry_after or "").isdigit()
    return False


def tally(outcomes: list[Outcome]) -> Counter[str]:
    return Counter(o.kind if o.kind != "error_status" else f"status_{o.status}" for o in outcomes)
