"""The hostile-request corpus against a real proxy process and a recording child.

For every case: the exact status line (RFC 9110's reason phrase) and error envelope, whether
the connection is closed (or, when it must stay open, that it still serves a request in
step), how many requests reached the child — none for every smuggling form — and that another
client is served normally right after.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.hardening.children import ScriptedChild
from tests.hardening.corpus_requests import CASES, CHAT, Case
from tests.hardening.wire import loopback_request, one_shot, request
from tests.http.test_reason_phrases import STANDARD
from tests.support.emulator import start_emulator
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


def _status_line(head: bytes) -> bytes:
    return head.split(b"\r\n", 1)[0]


def test_corpus_is_large_enough() -> None:
    assert len(CASES) + len(NAMED) >= 80
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
        assert _status_line(answer.raw_head) == b"HTTP/1.1 %d %s" % (case.status, STANDARD[case.status])
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


# Names and the admin API need the control plane: a proxy in front of the lemond emulator,
# with an admin token, so that names are checked before anything else and auth after that.
# A request trusted for coming from loopback must name a loopback host (DNS rebinding), so
# these name one.
ADMIN_TOKEN = "s3cret-token"


NAMED = [
    # A slot segment may be any lemond model name: only what cannot name anything is refused.
    Case("name_uppercase", loopback_request("GET", "/api/slots/UPPER"), 404, "slot.not_found", False, method=b"GET"),
    Case(
        "name_dotdot",
        loopback_request("GET", "/api/slots/..%2f..%2fetc"),
        400,
        "slot.invalid_name",
        False,
        method=b"GET",
    ),
    Case("name_dot", loopback_request("GET", "/api/slots/a.b"), 404, "slot.not_found", False, method=b"GET"),
    Case(
        "name_257_chars",
        loopback_request("GET", "/api/slots/" + "a" * 257),
        400,
        "slot.invalid_name",
        False,
        method=b"GET",
    ),
    Case("name_leading_dash", loopback_request("GET", "/api/slots/-a"), 404, "slot.not_found", False, method=b"GET"),
    Case(
        "name_encoded_space",
        loopback_request("GET", "/api/slots/a%20b"),
        400,
        "slot.invalid_name",
        False,
        method=b"GET",
    ),
    Case(
        "name_encoded_nul", loopback_request("GET", "/api/slots/a%00b"), 400, "slot.invalid_name", False, method=b"GET"
    ),
    Case("name_not_utf8", loopback_request("GET", "/api/slots/a%ffb"), 400, "slot.invalid_name", False, method=b"GET"),
    Case(
        "name_non_ascii",
        b"GET /api/slots/\xc3\xa9 HTTP/1.1\r\nHost: localhost\r\n\r\n",
        404,
        "slot.not_found",
        False,
        method=b"GET",
    ),
    Case(
        "name_checked_before_auth", loopback_request("POST", "/api/slots/a%2Fb/load"), 400, "slot.invalid_name", False
    ),
    Case("admin_without_token", loopback_request("POST", "/api/slots/primary/load"), 401, "auth.required", False),
    Case(
        "admin_wrong_token",
        loopback_request("POST", "/api/slots/primary/load", headers=[("Authorization", "Bearer nope")]),
        403,
        "auth.forbidden",
        False,
    ),
    Case(
        "admin_wrong_method",
        loopback_request("DELETE", "/api/slots/primary"),
        405,
        "request.method_not_allowed",
        False,
        method=b"DELETE",
    ),
    Case(
        "admin_get_on_action",
        loopback_request("GET", "/api/slots/primary/load"),
        405,
        "request.method_not_allowed",
        False,
        method=b"GET",
    ),
    Case("admin_unknown_slot", loopback_request("GET", "/api/slots/nope"), 404, "slot.not_found", False, method=b"GET"),
    # A page rebinding its own name to 127.0.0.1 sends that name as Host: refused, not read.
    Case("admin_rebound_host", request("GET", "/api/slots/primary"), 403, "auth.forbidden", False, method=b"GET"),
    Case(
        "admin_deep_path",
        loopback_request("GET", "/api/slots/primary/x/y"),
        404,
        "resource.not_found",
        False,
        method=b"GET",
    ),
]


@pytest.fixture(scope="module")
def named_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    token = tmp_path_factory.mktemp("admin") / "token"
    token.write_text(ADMIN_TOKEN)
    emulator = start_emulator()
    config = f'admin_token_file = "{token}"\n[[slot]]\nname = "primary"\nmodel = "Qwen3-0.6B-GGUF"\n'
    proxy = start_proxy(emulator.base_url, config)
    try:
        yield proxy
    finally:
        proxy.stop()
        emulator.stop()


@pytest.mark.parametrize("case", NAMED, ids=[c.id for c in NAMED])
def test_hostile_names_and_admin_requests(named_rig: ProxyProcess, case: Case) -> None:
    answer, conn = one_shot(named_rig.port, case.raw, case.method)
    try:
        assert answer.status == case.status, (answer.status, answer.body[:300])
        assert _status_line(answer.raw_head) == b"HTTP/1.1 %d %s" % (case.status, STANDARD[case.status])
        error = answer.json()["error"]
        assert error["code"] == case.code and error["message"], error
        conn.send(request("GET", "/healthz"))  # the connection stays open and in step
        assert conn.read_answer().status == 200
    finally:
        conn.close()
    assert named_rig.slots()["primary"]["state"] != "error"  # nothing was loaded or broken by it
