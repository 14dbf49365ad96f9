"""A web page in the user's browser must not reach the loopback-only admin surface.

Over real sockets, against a real proxy process in front of the lemond emulator: a
cross-site ``POST`` (the ``Content-Type: text/plain`` kind a page sends with no preflight)
and a DNS-rebinding request (``Host: evil.example``) are refused ``403 auth.forbidden``
for the mutating endpoints, and the rebinding one for the read-only endpoints, the event
stream and the status page too; the proxy's own page (same origin, loopback ``Host``),
curl (no ``Origin``) and ``/v1/*`` keep working. The pure checks behind it are tested on
their own below.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from hal0proxy.api import guard
from tests.support.emulator import EmulatorProcess, start_emulator
from tests.support.proxy import ProxyProcess, start_proxy

MODEL = "bge-reranker-v2-m3-GGUF"
CONFIG = f'[[slot]]\nname = "rerank"\nmodel = "{MODEL}"\ntype = "reranking"\n'
TOKEN = "guard-test-token"
EVIL = "evil.example"


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProcess]:
    with start_emulator() as emu:
        yield emu


@pytest.fixture(scope="module")
def proxy(emulator: EmulatorProcess) -> Iterator[ProxyProcess]:
    with start_proxy(emulator.base_url, CONFIG) as running:
        yield running


@pytest.fixture(scope="module")
def token_proxy(emulator: EmulatorProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    token_file = tmp_path_factory.mktemp("admin") / "token"
    token_file.write_text(TOKEN)
    with start_proxy(emulator.base_url, f'admin_token_file = "{token_file}"\n' + CONFIG) as running:
        yield running


def _error(body: bytes) -> dict[str, str]:
    error: dict[str, str] = json.loads(body)["error"]
    return error


def _assert_forbidden(answer: tuple[int, dict[str, str], bytes], says: str) -> None:
    status, _, body = answer
    assert status == 403, (status, body[:300])
    error = _error(body)
    assert error["code"] == "auth.forbidden", error
    assert says in error["message"], error


# ------------------------------------------------------------------- cross-site requests
def test_a_cross_site_text_plain_post_cannot_load_a_model(proxy: ProxyProcess, emulator: EmulatorProcess) -> None:
    before = emulator.state()["load_requests"].get(MODEL, 0)
    answer = proxy.request(
        "POST",
        "/api/slots/rerank/load",
        b"x",
        headers={"Origin": f"http://{EVIL}", "Content-Type": "text/plain"},
    )
    _assert_forbidden(answer, "cross-origin")
    assert emulator.state()["load_requests"].get(MODEL, 0) == before  # nothing reached lemond


def test_an_origin_null_post_is_refused(proxy: ProxyProcess) -> None:
    answer = proxy.request("POST", "/api/slots/rerank/unload", headers={"Origin": "null"})
    _assert_forbidden(answer, "Origin: null")


def test_a_cross_site_post_is_refused_even_with_the_admin_token(token_proxy: ProxyProcess) -> None:
    headers = {"Origin": f"http://{EVIL}", "Authorization": f"Bearer {TOKEN}"}
    _assert_forbidden(token_proxy.request("POST", "/api/slots/rerank/unload", headers=headers), "cross-origin")
    # The same request without the foreign Origin is served: only the Origin made the difference.
    status, _, body = token_proxy.request(
        "POST", "/api/slots/rerank/unload", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 200, body


def test_the_proxys_own_origin_and_curl_may_load_and_unload(proxy: ProxyProcess) -> None:
    own = {"Origin": f"http://127.0.0.1:{proxy.port}"}
    status, _, body = proxy.request("POST", "/api/slots/rerank/load", headers=own)
    assert status == 200 and json.loads(body)["state"] == "ready", body
    status, _, body = proxy.request("POST", "/api/slots/rerank/unload")  # curl sends no Origin
    assert status == 200 and json.loads(body)["state"] == "offline", body


# ------------------------------------------------------------------- DNS rebinding
def test_a_rebound_host_cannot_unload_a_model(proxy: ProxyProcess) -> None:
    headers = {"Host": f"{EVIL}:{proxy.port}", "Origin": f"http://{EVIL}:{proxy.port}"}  # same-origin to the page
    _assert_forbidden(proxy.request("POST", "/api/slots/rerank/unload", headers=headers), "loopback host")
    _assert_forbidden(proxy.request("POST", "/api/slots/rerank/unload", headers={"Host": EVIL}), "DNS rebinding")


@pytest.mark.parametrize("path", ["/api/slots", "/api/slots/rerank", "/", "/ui", "/api/v1/adapter/events"])
def test_a_rebound_host_cannot_read_what_the_status_page_reads(proxy: ProxyProcess, path: str) -> None:
    _assert_forbidden(proxy.request("GET", path, headers={"Host": f"{EVIL}:{proxy.port}"}), "loopback host")


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST:80", "proxy.localhost:9", "127.0.0.1", "127.1.2.3:5", "[::1]"]
)
def test_loopback_host_names_are_served(proxy: ProxyProcess, host: str) -> None:
    status, _, body = proxy.request("GET", "/api/slots", headers={"Host": host})
    assert status == 200 and any(s["name"] == "rerank" for s in json.loads(body)), body
    status, _, body = proxy.request("GET", "/", headers={"Host": host})
    assert status == 200 and b"<html" in body.lower()


def test_an_http10_request_without_host_is_served(proxy: ProxyProcess) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"GET /api/slots HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:200]


def test_the_event_stream_opens_for_a_loopback_host(proxy: ProxyProcess) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(f"GET /api/v1/adapter/events HTTP/1.1\r\nHost: localhost:{proxy.port}\r\n\r\n".encode())
        data = b""
        while b"event: snapshot" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")


def test_the_openai_surface_and_probes_do_not_check_the_host(proxy: ProxyProcess) -> None:
    headers = {"Host": f"{EVIL}:{proxy.port}"}
    status, _, body = proxy.request("GET", "/v1/models", headers=headers)
    assert status == 200 and json.loads(body)["object"] == "list"
    assert proxy.request("GET", "/healthz", headers=headers)[0] == 200
    assert proxy.request("GET", "/metrics", headers=headers)[0] == 200


def test_the_admin_token_reaches_the_proxy_by_any_name(token_proxy: ProxyProcess) -> None:
    named = {"Host": "gpu-box.lan:8080"}
    _assert_forbidden(token_proxy.request("GET", "/api/slots", headers=named), "admin token")
    status, _, body = token_proxy.request("GET", "/api/slots", headers=named | {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, body
    status, _, body = token_proxy.request(
        "POST", "/api/slots/rerank/unload", headers=named | {"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 200, body


def test_docs_describe_the_rebinding_threat_and_what_guards_v1() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    assert "DNS rebinding" in text and "Origin" in text
    assert "api_keys" in text.split("DNS rebinding", 1)[1]  # the section says what guards /v1/*


# ------------------------------------------------------------------- pure units
@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        (None, True),
        (b"localhost", True),
        (b"localhost.", True),
        (b"a.b.localhost:1234", True),
        (b"127.0.0.1:8080", True),
        (b"127.255.0.9", True),
        (b"[::1]:80", True),
        (b"[::1]", True),
        (b"evil.example", False),
        (b"localhost.evil.example", False),
        (b"evillocalhost", False),
        (b"128.0.0.1", False),
        (b"0.0.0.0", False),
        (b"[::2]", False),
        (b"::1", False),  # an IPv6 literal needs its brackets in Host
        (b"127.0.0.1:99999", False),
        (b"127.0.0.1:x", False),
        (b"127.0.0.1@evil.example", False),
        (b"", False),
        (b"\xff", False),
    ],
)
def test_is_loopback_host(host: bytes | None, loopback: bool) -> None:
    assert guard.is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        (None, b"evil.example", True),  # not a browser
        (b"http://127.0.0.1:8080", b"127.0.0.1:8080", True),
        (b"HTTP://LOCALHOST:8080", b"localhost:8080", True),
        (b"http://localhost", b"localhost:80", True),  # default ports
        (b"https://localhost", b"localhost", True),
        (b"http://[::1]:9", b"[::1]:9", True),
        (b"http://127.0.0.1:8081", b"127.0.0.1:8080", False),
        (b"http://localhost:8080", b"127.0.0.1:8080", False),
        (b"https://localhost", b"localhost:80", False),
        (b"http://evil.example", b"127.0.0.1:8080", False),
        (b"null", b"127.0.0.1:8080", False),
        (b"", b"127.0.0.1:8080", False),
        (b"file://", b"127.0.0.1:8080", False),
        (b"http://127.0.0.1:8080", None, False),
    ],
)
def test_cross_origin_reason(origin: bytes | None, host: bytes | None, same: bool) -> None:
    assert (guard.cross_origin_reason(origin, host) is None) is same
