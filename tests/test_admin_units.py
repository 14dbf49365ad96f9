"""Pure units of the admin surface: peer, Host and Origin rules, the headers errors carry, and
the event journal's slow-subscriber drop."""

from __future__ import annotations

import asyncio

import pytest

from hal0proxy.api.admin import AdminApi, method_not_allowed
from hal0proxy.config import Config
from hal0proxy.control.controller import Controller
from hal0proxy.control.journal import Journal
from hal0proxy.http.errors import ProxyError, error_response
from hal0proxy.http.messages import HttpRequest
from hal0proxy.lemond.adapter import LemondAdapter


def request(peer: str, token: bytes | None = None, *extra: tuple[bytes, bytes]) -> HttpRequest:
    headers = [(b"authorization", b"Bearer " + token)] if token else []
    return HttpRequest(b"POST", b"/api/slots/x/load", "/api/slots/x/load", b"", [*headers, *extra], peer_host=peer)


async def test_without_a_token_only_loopback_peers_may_mutate() -> None:
    controller = Controller(Config(), LemondAdapter("http://127.0.0.1:1", api_key=None))
    api = AdminApi(controller, admin_token=None)
    for peer in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        api._authorize(request(peer))  # no exception
    for peer in ("192.0.2.10", "10.0.0.5", "2001:db8::1"):
        with pytest.raises(ProxyError) as err:
            api._authorize(request(peer))
        assert err.value.status == 403 and err.value.code == "auth.forbidden"
    with_token = AdminApi(controller, admin_token="t0k")
    with_token._authorize(request("192.0.2.10", b"t0k"))  # a token works from anywhere
    with pytest.raises(ProxyError) as err:
        with_token._authorize(request("127.0.0.1"))
    assert err.value.status == 401  # and is needed even on loopback


def _refused(api: AdminApi, req: HttpRequest) -> ProxyError:
    with pytest.raises(ProxyError) as err:
        api._authorize(req)
    return err.value


async def test_loopback_trust_needs_a_loopback_host_and_no_foreign_origin() -> None:
    controller = Controller(Config(), LemondAdapter("http://127.0.0.1:1", api_key=None))
    api = AdminApi(controller, admin_token=None)
    api._authorize(request("127.0.0.1", None, (b"host", b"localhost:8080"), (b"origin", b"http://localhost:8080")))
    rebound = _refused(api, request("127.0.0.1", None, (b"host", b"evil.example:8080")))
    assert rebound.status == 403 and rebound.code == "auth.forbidden" and "DNS rebinding" in rebound.message
    foreign = _refused(
        api, request("127.0.0.1", None, (b"host", b"127.0.0.1:8080"), (b"origin", b"http://evil.example"))
    )
    assert foreign.status == 403 and "cross-origin" in foreign.message
    with_token = AdminApi(controller, admin_token="t0k")
    with_token._authorize(request("127.0.0.1", b"t0k", (b"host", b"gpu-box.lan")))  # the token works by any name
    still = _refused(with_token, request("127.0.0.1", b"t0k", (b"host", b"gpu-box.lan"), (b"origin", b"null")))
    assert still.status == 403 and "Origin: null" in still.message  # whatever the token


async def test_a_401_names_the_bearer_scheme_and_a_405_the_allowed_methods() -> None:
    controller = Controller(Config(), LemondAdapter("http://127.0.0.1:1", api_key=None))
    missing = _refused(AdminApi(controller, admin_token="t0k"), request("127.0.0.1"))
    assert missing.status == 401
    wire = error_response(missing)
    assert wire.count(b"\r\nwww-authenticate: Bearer\r\n") == 1, wire
    refused = method_not_allowed(HttpRequest(b"PUT", b"/healthz", "/healthz", b"", []), frozenset({b"GET", b"HEAD"}))
    wire = error_response(refused)
    assert wire.startswith(b"HTTP/1.1 405 ") and wire.count(b"\r\nallow: GET, HEAD\r\n") == 1


async def test_a_slow_subscriber_is_dropped_not_waited_for() -> None:
    journal = Journal(queue_size=4)
    slow = journal.subscribe()
    fast = journal.subscribe()
    got: list[dict[str, object]] = []
    for i in range(10):
        journal.publish("tick", i=i)
        while not fast.queue.empty():
            item = fast.queue.get_nowait()
            assert item is not None
            got.append(item)
    assert [g["i"] for g in got] == list(range(10))
    assert slow.dropped and journal.dropped_subscribers == 1 and journal.subscriber_count() == 1
    assert await asyncio.wait_for(slow.queue.get(), 1) is None  # the end marker wakes the reader
