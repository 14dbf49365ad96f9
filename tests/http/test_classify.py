"""``classify``: a reused Classified equals a fresh one; the content-type shortcut changes nothing."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal0proxy.http.errors import ProxyError
from hal0proxy.routing import classify as classify_module
from hal0proxy.routing.classify import Classified, classify, default_slots_for, model_from_body, upstream_target


def _fresh(path: str, query: bytes, content_type: bytes, body: bytes) -> Classified:
    model, streaming = model_from_body(content_type, body)
    return Classified(model, default_slots_for(path), upstream_target(path, query), streaming)


@settings(max_examples=300, deadline=None)
@given(
    path=st.sampled_from(["/v1/chat/completions", "/v1/embeddings", "/v1/rerankings", "/v1/images/x", "/v1/other"]),
    query=st.sampled_from([b"", b"a=1"]),
    content_type=st.sampled_from([b"application/json", b"Application/JSON; charset=utf-8", b"", b"text/plain"]),
    model=st.sampled_from([None, "primary", "chat", ""]),
    stream=st.sampled_from([None, True, False, 1]),
)
def test_classify_equals_a_fresh_build(
    path: str, query: bytes, content_type: bytes, model: str | None, stream: object
) -> None:
    doc: dict[str, object] = {"messages": []}
    if model is not None:
        doc["model"] = model
    if stream is not None:
        doc["stream"] = stream
    body = orjson.dumps(doc)
    for _ in range(2):  # the second call is answered from the reuse table
        assert classify(path, query, content_type, body) == _fresh(path, query, content_type, body)


def test_json_content_type_still_refuses_bad_json() -> None:
    for _ in range(2):
        with pytest.raises(ProxyError) as caught:
            classify("/v1/chat/completions", b"", b"application/json", b'{"model": ')
        assert caught.value.status == 400 and caught.value.code == "request.invalid_json"
    with pytest.raises(ProxyError):
        classify("/v1/chat/completions", b"", b"application/json", b"[1]")
    assert model_from_body(b"text/plain", b"model=x") == (None, False)
    assert model_from_body(b"text/plain", b'{"model":"m","stream":true}') == ("m", True)


def test_the_reuse_table_is_bounded() -> None:
    for n in range(classify_module._CLASSIFIED_MAX * 2):
        found = classify("/v1/chat/completions", b"", b"application/json", b'{"model":"m%d"}' % n)
        assert found.model == f"m{n}"
        assert len(classify_module._classified) <= classify_module._CLASSIFIED_MAX


def test_long_names_are_answered_but_never_kept() -> None:
    name = "m" * 10_000
    found = classify("/v1/chat/completions", b"", b"application/json", b'{"model":"%s"}' % name.encode())
    assert found.model == name
    assert all(key[2] != name for key in classify_module._classified)


def test_only_text_generation_paths_take_the_chat_default() -> None:
    assert default_slots_for("/v1/chat/completions") == ("chat", "primary")
    assert default_slots_for("/v1/responses") == ("chat", "primary")
    assert default_slots_for("/v1/embeddings") == ("embed",)
    # A path the proxy does not know goes to no slot by default: no model, no load.
    assert default_slots_for("/v1/whatever") == ()
    assert default_slots_for("/v1/chat/completionsX") == ()


@pytest.mark.parametrize("path", ["/v1/health", "/v1/load", "/v1/unload", "/v1/pull", "/v1/registry/search"])
def test_lemonds_own_paths_are_refused_with_or_without_a_model(path: str) -> None:
    for body in (b"", b'{"model":"primary"}', b'{"model_name":"primary"}'):
        with pytest.raises(ProxyError) as caught:
            classify(path, b"", b"application/json", body)
        assert caught.value.status == 404 and caught.value.code == "resource.not_found"
        assert "lemond" in caught.value.message
    assert path not in {key[0] for key in classify_module._classified}, "a refused path is never kept"
