"""A known local path asked with the wrong method is 405 with ``Allow`` (RFC 9110 §15.5.6),
an unknown path stays 404, and the admin 401 names its scheme in ``WWW-Authenticate``
(RFC 9110 §11.6.1). Over real sockets, against a real proxy process and the emulator.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.emulator import EmulatorProcess, start_emulator
from tests.support.proxy import ProxyProcess, start_proxy

CONFIG = '[[slot]]\nname = "primary"\nmodel = "Qwen3-0.6B-GGUF"\n'
TOKEN = "methods-test-token"


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


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/healthz", "GET, HEAD"),
        ("PUT", "/readyz", "GET, HEAD"),
        ("POST", "/metrics", "GET, HEAD"),
        ("DELETE", "/api/slots", "GET, HEAD"),
        ("POST", "/api/slots/", "GET, HEAD"),
        ("POST", "/api/v1/adapter/events", "GET, HEAD"),
        ("POST", "/", "GET, HEAD"),
        ("DELETE", "/ui", "GET, HEAD"),
        ("DELETE", "/api/slots/primary", "GET, HEAD"),
        ("PATCH", "/api/slots/nomic-embed-text-v1-GGUF", "GET, HEAD"),
        ("GET", "/api/slots/x/load", "POST"),
        ("PUT", "/api/slots/primary/unload", "POST"),
    ],
)
def test_a_known_path_with_the_wrong_method_is_405_with_allow(
    proxy: ProxyProcess, method: str, path: str, allow: str
) -> None:
    status, headers, body = proxy.request(method, path)
    assert status == 405, (status, body)
    assert headers.get("allow") == allow, headers
    error = json.loads(body)["error"]
    assert error["code"] == "request.method_not_allowed" and allow in error["message"], error
    assert proxy.request("GET", "/healthz")[0] == 200  # the proxy is still there


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("POST", "/healthz/x"), ("DELETE", "/api/slot"), ("GET", "/api/slots/primary/restart")],
)
def test_an_unknown_path_stays_404(proxy: ProxyProcess, method: str, path: str) -> None:
    status, headers, body = proxy.request(method, path)
    assert status == 404 and "allow" not in headers, (status, headers)
    assert json.loads(body)["error"]["code"] == "resource.not_found"


def test_the_admin_401_names_the_bearer_scheme(token_proxy: ProxyProcess) -> None:
    status, headers, body = token_proxy.request("POST", "/api/slots/primary/load")
    assert status == 401 and json.loads(body)["error"]["code"] == "auth.required", body
    assert headers.get("www-authenticate") == "Bearer", headers
    status, headers, body = token_proxy.request(
        "POST", "/api/slots/primary/load", headers={"Authorization": "Bearer wrong"}
    )
    assert status == 403 and json.loads(body)["error"]["code"] == "auth.forbidden", body
    status, _, body = token_proxy.request(
        "POST", "/api/slots/primary/load", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 200 and json.loads(body)["state"] == "ready", body
