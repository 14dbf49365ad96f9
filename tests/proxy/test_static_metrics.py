"""With static routes (no lemond) ``/metrics`` still has the data plane's figures, and none of
lemond's or the slots' (a constant ``websocket_connected 0`` would fire the WebSocket alert)."""

from __future__ import annotations

from tests.proxy.test_children import fake
from tests.support.proxy import start_proxy


def test_static_routes_export_the_data_plane_figures_only() -> None:
    child = fake()
    proxy = start_proxy("http://127.0.0.1:1", "", "--static-route", f"m={child.port}")
    try:
        status, _, _ = proxy.request("POST", "/v1/chat/completions", {"model": "m", "messages": []})
        assert status == 200
        status, _, body = proxy.request("GET", "/metrics")
        text = body.decode()
        assert status == 200
        for name in ("connections_open", "client_disconnects_total", "streamed_chunks_total", "upstream_retries_total"):
            assert f"\nhal0proxy_{name} " in text, name
        assert 'hal0proxy_requests_total{code="200",slot="m"} 1.0' in text
        samples = [line for line in text.splitlines() if not line.startswith("#")]
        for absent in ("hal0proxy_websocket_connected", "hal0proxy_lemond_", "hal0proxy_slot_state"):
            assert not [line for line in samples if line.startswith(absent)], absent
    finally:
        proxy.stop()
        child.proc.kill()
