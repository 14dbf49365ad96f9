"""Pure units of the admin surface: peer rules and the event journal's slow-subscriber drop."""

from __future__ import annotations

import asyncio

import pytest

from hal0proxy.api.admin import AdminApi
from hal0proxy.config import Config
from hal0proxy.control.controller import Controller
from hal0proxy.control.journal import Journal
from hal0proxy.http.errors import ProxyError
from hal0proxy.http.messages import HttpRequest
from hal0proxy.lemond.adapter import LemondAdapter


def request(peer: str, token: bytes | None = None) -> HttpRequest:
    headers = [(b"authorization", b"Bearer " + token)] if token else []
    return HttpRequest(b"POST", b"/api/slots/x/load", "/api/slots/x/load", b"", headers, peer_host=peer)


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
