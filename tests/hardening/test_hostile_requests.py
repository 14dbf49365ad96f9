"""The hostile-request corpus against a real proxy process and a recording child.

For every case: the exact status and error envelope, whether the connection is closed (or,
when it must stay open, that it still serves a request in step), how many requests reached
the child — none for every smuggling form — and that another client is served normally
right after.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.hardening.children import ScriptedChild
from tests.hardening.corpus_requests import CASES, CHAT, Case
from tests.hardening.wire import one_shot, request
from tests.support.proxy import ProxyProcess, start_proxy

CONFIG = """
[limits]
max_body_bytes = 1048576
request_timeout_s = 20
"""


@pytest.fixture(scope="module")
def rig() -> Iterator[tuple[ProxyProcess, ScriptedChild]]:
    child = ScriptedChild().start()
    proxy = start_proxy("http://127.0.0.1:1", CONFIG, "--static-route", f"m={child.port}")
    try:
        yield proxy, child
    finally:
        proxy.stop()
        child.stop()


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 80
    assert sum(c.id.startswith("smuggle_") for c in CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_request(rig: tuple[ProxyProcess, ScriptedChild], case: Case) -> None:
    proxy, child = rig
    child.reset()
    started = time.monotonic()
    answer, conn = one_shot(proxy.port, case.raw, case.method)
    elapsed = time.monotonic() - started
    try:
        assert answer.status == case.status, (answer.status, answer.body[:300])
        # Every refusal is immediate: nothing waits for the 20 s request timeout.
        assert elapsed < 10, elapsed
        if case.code is not None:
            error = answer.json()["error"]
            assert error["code"] == case.code, error
            assert error["message"] and error["type"], error
        if case.closed:
            assert conn.closed_by_peer(), "the proxy kept a connection open after refusing its framing"
        else:
            # Still open and still in step: a second request on it is answered as itself.
            conn.send(request("GET", "/v1/models"))
            follow = conn.read_answer(b"GET")
            assert follow.status == 200 and follow.json()["object"] == "list"
    finally:
        conn.close()
    seen = child.recorded()
    assert not any(b"smuggled" in r.head or b"smuggled" in r.body for r in seen), seen
    assert len(seen) == case.child, [r.head[:80] for r in seen]
    if case.child:
        assert seen[0].body == CHAT  # re-framed with its own Content-Length, body intact
    # Another client is served normally right after.
    other, other_conn = one_shot(proxy.port, request("POST", "/v1/chat/completions", CHAT), b"POST")
    other_conn.close()
    assert other.status == 200 and other.json()["ok"] is True
