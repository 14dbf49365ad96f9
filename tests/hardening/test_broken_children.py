"""The broken-child corpus: a scripted child answers with exact bad bytes; the client must get
a clean 502 (or a visibly cut response when the head was already relayed), the child
connection must never be reused, and the event must be logged."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.hardening.children import ScriptedChild
from tests.hardening.corpus_responses import BAD, CORPUS, CUT, EVENT, INTERRUPTED, OK, Broken
from tests.hardening.wire import Conn, one_shot, request
from tests.support.emulator import wait_until
from tests.support.proxy import ProxyProcess, start_proxy

BODY = b'{"model":"b","messages":[]}'
LOGGED = "invalid response from the model server"


@pytest.fixture(scope="module")
def rig() -> Iterator[tuple[ProxyProcess, ScriptedChild]]:
    child = ScriptedChild(scripts={c.id: c.script for c in CORPUS}).start()
    proxy = start_proxy("http://127.0.0.1:1", "", "--static-route", f"b={child.port}")
    try:
        yield proxy, child
    finally:
        proxy.stop()
        child.stop()


def test_corpus_is_large_enough() -> None:
    assert sum(c.outcome != OK for c in CORPUS) >= 30


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_broken_child_response(rig: tuple[ProxyProcess, ScriptedChild], case: Broken) -> None:
    proxy, child = rig
    child.reset()
    logged_before = proxy.log_text().count(LOGGED)
    conn = Conn(proxy.port)
    try:
        conn.send(request("POST", "/v1/chat/completions", BODY, [("X-Script", case.id)]))
        if case.outcome == CUT:
            with pytest.raises(EOFError, match="inside"):
                conn.read_answer(b"POST")
        else:
            answer = conn.read_answer(b"POST")
            assert answer.status == case.status, (answer.status, answer.body[:300])
            if case.outcome == BAD:
                error = json.loads(answer.body)["error"]
                assert error["code"] == "dispatch.upstream_unavailable", error
                assert "model server" in error["message"], error
                assert wait_until(lambda: proxy.log_text().count(LOGGED) > logged_before, 5)
            elif case.outcome == INTERRUPTED:
                assert answer.body.startswith(EVENT * case.events), answer.body
                assert answer.body.count(EVENT) == case.events, answer.body
                assert b"upstream.stream_interrupted" in answer.body and b"[DONE]" not in answer.body
            else:
                assert answer.body == case.body, answer.body
    finally:
        conn.close()
    # The proxy still serves; a broken child connection is never reused for the next request.
    follow, follow_conn = one_shot(proxy.port, request("POST", "/v1/chat/completions", BODY), b"POST")
    follow_conn.close()
    assert follow.status == 200, follow.body
    seen = child.recorded()
    assert len(seen) == 2 and seen[0].script == case.id and seen[1].script is None, seen
    if case.outcome != OK or case.id == "trailing_garbage_after_body":
        assert seen[1].connection != seen[0].connection, "a connection that broke HTTP was reused"
