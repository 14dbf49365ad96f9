"""Pure wire-format decisions of the data plane: what goes to the child, what to the client."""

from __future__ import annotations

import hmac
from typing import Final

from hal0proxy.http.errors import ProxyError, reason_phrase
from hal0proxy.http.headers import HOP_BY_HOP, connection_tokens
from hal0proxy.http.messages import HttpRequest
from hal0proxy.http.response_reader import ResponseHead
from hal0proxy.proxy.settings import ProxySettings

_REQUEST_DROP = HOP_BY_HOP | {b"host", b"content-length", b"expect"}
_FRAMING = frozenset({b"content-length"})
# RFC 9110 §11.6.1: a 401 names the scheme it wants; RFC 6750 §3 gives Bearer's.
_BEARER_CHALLENGE = ((b"www-authenticate", b"Bearer"),)


def check_api_key(req: HttpRequest, keys: tuple[str, ...]) -> None:
    """Raise 401/403 unless ``req`` carries one of ``keys`` (no keys: everyone may pass)."""
    if not keys:
        return
    value = req.header(b"authorization")
    if value is None or not value.lower().startswith(b"bearer "):
        raise ProxyError(
            401, "auth.required", "an API key is required (Authorization: Bearer ...)", headers=_BEARER_CHALLENGE
        )
    given = value[7:].strip()
    # Compare against every key, in constant time each, so timing reveals nothing.
    if not any(hmac.compare_digest(given, k.encode()) for k in keys):
        raise ProxyError(403, "auth.forbidden", "the API key is not valid")


def _request_drop(forward_conversation_id: bool, has_api_keys: bool) -> frozenset[bytes]:
    drop = set(_REQUEST_DROP)
    if not forward_conversation_id:
        drop.add(b"x-conversation-id")  # it would switch llama-server into detached generation
    if has_api_keys:
        drop.add(b"authorization")  # the proxy's key is not the child's business
    return frozenset(drop)


# Every combination of the two settings that drop request headers, built once.
_DROP_BY_POLICY = {(fwd, keys): _request_drop(fwd, keys) for fwd in (False, True) for keys in (False, True)}


def upstream_request(req: HttpRequest, target: bytes, settings: ProxySettings) -> bytes:
    """The request as sent to the child: end-to-end headers only, re-framed with a length.

    Re-framing with our own Content-Length (the body is complete by now) means the child
    never sees the client's framing, so nothing the client sent can desynchronise it.
    """
    drop = _DROP_BY_POLICY[(settings.forward_conversation_id, bool(settings.api_keys))]
    template = req.template
    if template is None:
        head = _upstream_head(req, target, drop)
    else:
        # A repeated head re-frames the same way every time (Content-Length is dropped and
        # written anew): the head up to that field is built once per target and policy.
        key = (target, drop)
        found = template.memo.get(key)
        if found is None:
            found = _upstream_head(req, target, drop)
            if len(template.memo) >= template.MEMO_MAX:
                template.memo.clear()
            template.memo[key] = found
        head = found
    body = req.body
    return b"%bcontent-length: %d\r\n\r\n%b" % (head, len(body), body)


def _upstream_head(req: HttpRequest, target: bytes, drop: frozenset[bytes]) -> bytes:
    """The request line and fields for the child, up to (without) its Content-Length field."""
    head, connection = _build_head(req, target, drop)
    if connection:
        named = connection_tokens(req.headers)
        if not named <= drop:
            # The Connection field names more hop-by-hop fields (rare): build again without them.
            head, _ = _build_head(req, target, drop | named)
    return head


def _build_head(req: HttpRequest, target: bytes, drop: frozenset[bytes]) -> tuple[bytes, bool]:
    """The head without the fields in ``drop``; and whether a Connection field was seen."""
    parts = [req.method, b" ", target, b" HTTP/1.1\r\nhost: 127.0.0.1\r\n"]
    connection = False
    for name, value in req.headers:
        if name not in drop:
            parts += (name, b": ", value, b"\r\n")  # one join at the end, no concatenation per field
        elif name == b"connection":
            connection = True
    return b"".join(parts), connection


# (head bytes as received, client keep-alive, HEAD request) -> downstream_head's answer: a
# child's heads repeat, and the answer is a pure function of these (``ResponseHead.raw``).
_downstream_heads: dict[tuple[bytes, bool, bool], tuple[bytes, bool, bool]] = {}
_DOWNSTREAM_CACHE_MAX: Final = 256
_DOWNSTREAM_CACHE_MAX_HEAD_BYTES: Final = 1024  # what is kept stays small whatever a child sends


def downstream_head(head: ResponseHead, keep_alive: bool, is_head_request: bool) -> tuple[bytes, bool, bool]:
    """``(head bytes, is SSE, keep-alive)`` for relaying ``head`` to the client.

    The child's framing is kept (its body bytes are relayed verbatim); hop-by-hop headers,
    and the fields its Connection header names, are dropped; SSE gets ``X-Accel-Buffering:
    no``; a close-delimited body forces a close.
    """
    raw = head.raw
    if not raw or len(raw) > _DOWNSTREAM_CACHE_MAX_HEAD_BYTES:
        return _downstream_head(head, keep_alive, is_head_request)
    key = (raw, keep_alive, is_head_request)
    built = _downstream_heads.get(key)
    if built is None:
        built = _downstream_head(head, keep_alive, is_head_request)
        if len(_downstream_heads) >= _DOWNSTREAM_CACHE_MAX:
            _downstream_heads.clear()
        _downstream_heads[key] = built
    return built


def _downstream_head(head: ResponseHead, keep_alive: bool, is_head_request: bool) -> tuple[bytes, bool, bool]:
    parts = [b"HTTP/1.1 %d %s\r\n" % (head.status, head.reason or reason_phrase(head.status))]
    sse = has_accel = has_length = False
    # Fields the child's Connection header names are hop-by-hop too (RFC 9110 §7.6.1); its
    # framing is not: the body is relayed as the child framed it, so Content-Length stays.
    named = connection_tokens(head.headers) - _FRAMING
    for name, value in head.headers:
        if name in HOP_BY_HOP or name in named:
            continue
        if name == b"content-type":
            sse = value.startswith(b"text/event-stream")
        elif name == b"x-accel-buffering":
            has_accel = True
        elif name == b"content-length":
            has_length = True
        parts.append(name + b": " + value + b"\r\n")
    if head.chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    elif not has_length and not is_head_request and head.status not in (204, 304):
        keep_alive = False  # close-delimited body: only the close can end it downstream
    if sse and not has_accel:
        parts.append(b"x-accel-buffering: no\r\n")
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts), sse, keep_alive
