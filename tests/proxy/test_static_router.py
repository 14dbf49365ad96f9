"""The fixed-table router used by ``hal0proxy serve --static-route`` and the benchmarks (pure)."""

from __future__ import annotations

import asyncio

import pytest

from hal0proxy.http.errors import ProxyError
from hal0proxy.routing.classify import classify
from hal0proxy.routing.contract import StaticLease, StaticRouter

_JSON = b"application/json"


def _chat(model: bytes | None) -> bytes:
    return b'{"messages":[]}' if model is None else b'{"model":"%s","messages":[]}' % model


def test_one_immutable_lease_per_route_serves_every_request() -> None:
    router = StaticRouter({"fast": 9001, "chat": 9002})
    first = router.acquire_now(classify("/v1/chat/completions", b"", _JSON, _chat(b"fast")))
    again = router.acquire_now(classify("/v1/chat/completions", b"", _JSON, _chat(b"fast")))
    other = router.acquire_now(classify("/v1/chat/completions", b"", _JSON, _chat(b"chat")))
    assert first is again  # no lease built per request
    assert first is not None and (first.port, first.slot) == (9001, "fast")
    assert other is not None and (other.port, other.slot) == (9002, "chat")
    first.release()
    first.release()  # nothing to account for: releasing is harmless, however often
    assert isinstance(first, StaticLease)
    with pytest.raises(AttributeError):
        first.port = 1  # type: ignore[misc]  # shared between requests, so it must not change


def test_a_default_slot_applies_and_an_unknown_model_gets_no_lease() -> None:
    router = StaticRouter({"chat": 9002})
    lease = router.acquire_now(classify("/v1/chat/completions", b"", _JSON, _chat(None)))
    assert lease is not None and lease.slot == "chat"
    assert router.acquire_now(classify("/v1/chat/completions", b"", _JSON, _chat(b"nope"))) is None
    assert router.acquire_now(classify("/v1/embeddings", b"", _JSON, _chat(None))) is None


def test_an_edited_table_is_followed_by_the_next_lease() -> None:
    router = StaticRouter({"fast": 9001})
    request = classify("/v1/chat/completions", b"", _JSON, _chat(b"fast"))
    before = router.acquire_now(request)
    router.table["fast"] = 9005
    after = router.acquire_now(request)
    assert before is not None and before.port == 9001
    assert after is not None and after.port == 9005
    del router.table["fast"]
    assert router.acquire_now(request) is None


def test_acquire_answers_404_for_a_model_without_a_route() -> None:
    router = StaticRouter({"fast": 9001})
    with pytest.raises(ProxyError) as caught:
        asyncio.run(router.acquire(classify("/v1/chat/completions", b"", _JSON, _chat(b"nope"))))
    assert caught.value.status == 404 and caught.value.code == "dispatch.no_route"
