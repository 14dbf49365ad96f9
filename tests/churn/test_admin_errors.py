"""Admin load/unload errors map like the data plane's: lemond down → 503 + Retry-After,
a model lemond does not know → 404; never ``500 slot.error``."""

from __future__ import annotations

import json

from tests.support.emulator import free_port, start_emulator
from tests.support.proxy import start_proxy

CONFIG = '[[slot]]\nname = "alpha"\nmodel = "Qwen3-0.6B-GGUF"\n[[slot]]\nname = "ghost"\nmodel = "No-Such-Model-GGUF"\n'


def test_admin_load_and_unload_while_lemond_is_down_are_503_with_retry_after() -> None:
    proxy = start_proxy(f"http://127.0.0.1:{free_port()}", CONFIG)
    try:
        for action in ("load", "unload"):
            status, headers, body = proxy.request("POST", f"/api/slots/alpha/{action}")
            assert status == 503, (action, body)
            assert headers.get("retry-after", "").isdigit(), (action, headers)
            assert json.loads(body)["error"]["code"] == "lemond.unavailable", body
    finally:
        proxy.stop()


def test_admin_load_of_a_model_lemond_does_not_know_is_404() -> None:
    with start_emulator() as emu:
        proxy = start_proxy(emu.base_url, CONFIG)
        try:
            status, _, body = proxy.request("POST", "/api/slots/ghost/load")
            assert status == 404, body
            assert json.loads(body)["error"]["code"] == "slot.not_found", body
            status, _, body = proxy.request("POST", "/api/slots/alpha/load")
            assert status == 200, body
        finally:
            proxy.stop()
