"""llama-server's OpenAI wire format, as pure encoders (no I/O) for the fake child.

Shapes follow reference/llama-server.md §B.1-B.8. llama-server's JSON keeps insertion order
(it is not key-sorted like lemond's), so these encoders build the bytes in that order.

Streaming events are pre-encoded around the only part that changes (the token text, and the
optional ``emu_t_ns`` send stamp) so that a token costs a couple of byte concatenations.
"""

from __future__ import annotations

import base64
import hashlib
import math
import secrets
import string
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

__all__ = [
    "DONE_CHUNK",
    "FINGERPRINT",
    "WORDS",
    "StreamEncoder",
    "chat_response",
    "completion_response",
    "embedding_vector",
    "embeddings_response",
    "error_body",
    "frame",
    "rerank_response",
    "timings",
]

FINGERPRINT = "b7869-fake0000"
#: the text of generated tokens, cycled; printable and deterministic
WORDS = (" The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".")
#: dimension of fake embeddings (small: nothing depends on the real 768)
EMBED_DIM = 64

_ALNUM = string.ascii_letters + string.digits


def frame(event: bytes) -> bytes:
    """One HTTP/1.1 chunk carrying ``event``."""
    return b"%x\r\n%b\r\n" % (len(event), event)


#: ``data: [DONE]\n\n`` as one chunk
DONE_CHUNK = frame(b"data: [DONE]\n\n")


def random_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(32))


def error_body(code: int, message: str, kind: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "type": kind}})


def timings(prompt_n: int, prompt_s: float, predicted_n: int, predicted_s: float) -> dict[str, float | int]:
    prompt_ms = max(prompt_s * 1000.0, 0.001)
    predicted_ms = max(predicted_s * 1000.0, 0.001)
    return {
        "cache_n": 0,
        "prompt_n": prompt_n,
        "prompt_ms": round(prompt_ms, 3),
        "prompt_per_token_ms": round(prompt_ms / max(prompt_n, 1), 3),
        "prompt_per_second": round(prompt_n * 1000.0 / prompt_ms, 3),
        "predicted_n": predicted_n,
        "predicted_ms": round(predicted_ms, 3),
        "predicted_per_token_ms": round(predicted_ms / max(predicted_n, 1), 3),
        "predicted_per_second": round(predicted_n * 1000.0 / predicted_ms, 3),
    }


def usage(prompt_n: int, completion_n: int) -> dict[str, int]:
    return {
        "completion_tokens": completion_n,
        "prompt_tokens": prompt_n,
        "total_tokens": prompt_n + completion_n,
    }


@dataclass(slots=True)
class StreamEncoder:
    """Encodes the SSE events of one streamed chat or text completion."""

    chat: bool
    model: str
    created: int
    id: str

    def _tail(self) -> bytes:
        # Fields after ``choices``, without the closing brace.
        if self.chat:
            return b',"created":%d,"id":%b,"model":%b,"system_fingerprint":"%b","object":"chat.completion.chunk"' % (
                self.created,
                orjson.dumps(self.id),
                orjson.dumps(self.model),
                FINGERPRINT.encode(),
            )
        return b',"created":%d,"model":%b,"system_fingerprint":"%b","object":"text_completion","id":%b' % (
            self.created,
            orjson.dumps(self.model),
            FINGERPRINT.encode(),
            orjson.dumps(self.id),
        )

    def token_parts(self) -> tuple[bytes, bytes]:
        """``(before_text, after_text)``: an event is ``before + json(text) + after + close``."""
        if self.chat:
            before = b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":'
            after = b"}}]" + self._tail()
        else:
            before = b'data: {"choices":[{"text":'
            after = b',"index":0,"logprobs":null,"finish_reason":null}]' + self._tail()
        return before, after

    def role_event(self) -> bytes:
        """The chat stream's first event (role only), without its closing ``}\\n\\n``."""
        return (
            b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"role":"assistant","content":null}}]'
            + self._tail()
        )

    def finish_event(self, finish_reason: str, extra: dict[str, object]) -> bytes:
        """The chunk carrying ``finish_reason`` (plus ``extra`` fields), without its close."""
        if self.chat:
            choice = b'[{"finish_reason":"%b","index":0,"delta":{}}]' % finish_reason.encode()
        else:
            choice = b'[{"text":"","index":0,"logprobs":null,"finish_reason":"%b"}]' % finish_reason.encode()
        return b'data: {"choices":' + choice + self._tail() + _extra(extra)

    def usage_event(self, extra: dict[str, object]) -> bytes:
        """The ``include_usage`` chunk: ``choices`` is always an empty list."""
        return b'data: {"choices":[]' + self._tail() + _extra(extra)


def _extra(fields: dict[str, object]) -> bytes:
    out = b""
    for key, value in fields.items():
        out += b',"%b":%b' % (key.encode(), orjson.dumps(value))
    return out


def chat_response(
    model: str, text: str, finish_reason: str, prompt_n: int, completion_n: int, times: dict[str, float | int]
) -> bytes:
    return orjson.dumps(
        {
            "choices": [
                {"finish_reason": finish_reason, "index": 0, "message": {"role": "assistant", "content": text}}
            ],
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": FINGERPRINT,
            "object": "chat.completion",
            "usage": usage(prompt_n, completion_n),
            "id": random_id("chatcmpl-"),
            "timings": times,
        }
    )


def completion_response(
    model: str, text: str, finish_reason: str, prompt_n: int, completion_n: int, times: dict[str, float | int]
) -> bytes:
    return orjson.dumps(
        {
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": FINGERPRINT,
            "object": "text_completion",
            "usage": usage(prompt_n, completion_n),
            "id": random_id("cmpl-"),
            "timings": times,
        }
    )


def count_tokens(text: str) -> int:
    """A rough token count (about four characters per token), never zero."""
    return max(1, math.ceil(len(text) / 4))


def embedding_vector(text: str) -> list[float]:
    """A deterministic, L2-normalised vector derived from ``text``."""
    digest = hashlib.shake_256(text.encode()).digest(EMBED_DIM * 2)
    raw = [(int.from_bytes(digest[i : i + 2], "little") / 32767.5) - 1.0 for i in range(0, EMBED_DIM * 2, 2)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def embeddings_response(model: str, inputs: Sequence[str], encoding_format: str) -> bytes:
    data: list[dict[str, object]] = []
    for index, text in enumerate(inputs):
        vector = embedding_vector(text)
        item: dict[str, object] = {"embedding": vector, "index": index, "object": "embedding"}
        if encoding_format == "base64":
            item["embedding"] = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            item["encoding_format"] = "base64"
        data.append(item)
    prompt_n = sum(count_tokens(t) for t in inputs)
    return orjson.dumps(
        {
            "model": model,
            "object": "list",
            "usage": {"prompt_tokens": prompt_n, "total_tokens": prompt_n},
            "data": data,
        }
    )


def rerank_response(model: str, query: str, documents: Sequence[str], top_n: int | None) -> bytes:
    query_words = set(query.lower().split())
    results = []
    for index, doc in enumerate(documents):
        words = set(doc.lower().split())
        overlap = len(query_words & words) / (len(query_words | words) or 1)
        # A tiny deterministic tie-breaker keeps the order stable across runs.
        jitter = int.from_bytes(hashlib.blake2b(doc.encode(), digest_size=2).digest(), "little") / 1e7
        results.append({"index": index, "relevance_score": round(overlap * 10 - 5 + jitter, 6)})
    results.sort(key=lambda r: float(r["relevance_score"]), reverse=True)
    if top_n is not None and top_n >= 0:
        results = results[:top_n]
    prompt_n = count_tokens(query) + sum(count_tokens(d) for d in documents)
    return orjson.dumps(
        {
            "model": model,
            "object": "list",
            "usage": {"prompt_tokens": prompt_n, "total_tokens": prompt_n},
            "results": results,
        }
    )
