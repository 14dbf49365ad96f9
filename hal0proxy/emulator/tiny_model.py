"""A tiny random-weight llama GGUF that the real llama-server can load.

The model exists so tests can drive a genuine ``llama-server`` binary without
downloading weights. It is a 2-layer llama (n_embd 64, 4 heads, FFN 128, F32)
with a self-made byte-level BPE vocabulary and a ChatML-style chat template.

The weights are random, but shaped so that generation is predictable in the
ways a proxy test cares about:

* The residual stream's dimension 0 is a constant: every token embedding holds
  the same positive value there and no layer writes to it (the rows of
  ``attn_output`` / ``ffn_down`` that feed it are zero). After the final
  RMSNorm it is therefore always positive, which turns column 0 of the output
  matrix into a per-token logit bias without needing an ``output.bias`` tensor
  (the llama architecture has none).
* That bias is very negative for EOS, the other control tokens and every token
  whose bytes are not printable ASCII. So a request never stops early (it always
  runs to ``max_tokens``, finish_reason ``length``) and the text is always valid,
  printable UTF-8.

The generator uses a fixed seed: the same file comes out byte for
byte on every run, so a cached copy can be reused.

Run as ``python -m hal0proxy.emulator.tiny_model OUT.gguf``.
"""

from __future__ import annotations

import sys
from collections import Counter
from itertools import pairwise
from pathlib import Path

try:
    import gguf
    import numpy as np
    import numpy.typing as npt
except ModuleNotFoundError as exc:  # an optional extra: say which one instead of a bare traceback
    raise ModuleNotFoundError(
        f"the tiny model generator needs the 'llama' extra (module {exc.name!r} is missing): "
        "pip install 'hal0proxy[llama]'",
        name=exc.name,
    ) from None

__all__ = [
    "CHAT_TEMPLATE",
    "CONTROL_TOKENS",
    "N_EMBD",
    "N_LAYER",
    "write_tiny_model",
]

N_EMBD = 64
N_HEAD = 4
N_FF = 128
N_LAYER = 2
CONTEXT_LENGTH = 4096
SEED = 20240607
N_MERGES = 160

BOS = "<|bos|>"
EOS = "<|im_end|>"
IM_START = "<|im_start|>"
EOT = "<|endoftext|>"
CONTROL_TOKENS = (BOS, EOS, IM_START, EOT)

# Rendered by llama.cpp's jinja engine (llama-server --jinja). Plain ChatML
# without tool markup so llama.cpp picks its generic "content only" chat format
# and applies no grammar or reasoning parsing to the random output.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# Training text for the merges: enough English to give the vocabulary some
# multi-byte tokens, so tokenisation and detokenisation are exercised for real.
_CORPUS = (
    "the quick brown fox jumps over the lazy dog. hello world, this is a tiny "
    "model for testing the proxy. it answers every request with random text "
    "until it reaches the token limit. streaming responses send one chunk per "
    "token and the final chunk carries the timings. the server is fast and the "
    "weights are random, so the words are not meaningful at all. "
    "system user assistant content role message request response completion "
    "embedding health metrics model server slot queue token tokens stream"
)

_LOGIT_BIAS_FORBIDDEN = -60.0


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-unicode table.

    llama.cpp's BPE tokenizer (``tokenizer.ggml.model = gpt2``) expects every
    vocabulary entry to be spelled in this alphabet and looks up each of the
    256 single-byte tokens by it, so all of them must be present.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, codes, strict=True)}


def _train_merges(byte_map: dict[int, str]) -> list[tuple[str, str]]:
    """Classic BPE training on the fixed corpus; ties break lexicographically
    so the result never depends on dict ordering."""
    words: Counter[tuple[str, ...]] = Counter()
    for i, word in enumerate(_CORPUS.split(" ")):
        # Mirror GPT-2 pre-tokenisation: words after the first carry their
        # leading space (which the byte map spells as "Ġ").
        raw = (" " + word if i else word).encode()
        words[tuple(byte_map[b] for b in raw)] += 1
    merges: list[tuple[str, str]] = []
    for _ in range(N_MERGES):
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, count in words.items():
            for pair in pairwise(symbols):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        merged: Counter[tuple[str, ...]] = Counter()
        for symbols, count in words.items():
            out: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    return merges


def _build_vocab() -> tuple[list[str], list[int], list[str], list[bool]]:
    """Return (tokens, token_types, merges, allowed_for_output)."""
    byte_map = _bytes_to_unicode()
    char_to_byte = {c: b for b, c in byte_map.items()}
    tokens = [byte_map[b] for b in range(256)]
    merges = _train_merges(byte_map)
    for left, right in merges:
        if left + right not in tokens:
            tokens.append(left + right)
    types = [int(gguf.TokenType.NORMAL)] * len(tokens)
    allowed = [all(0x20 <= char_to_byte[c] <= 0x7E for c in tok) for tok in tokens]
    for special in CONTROL_TOKENS:
        tokens.append(special)
        types.append(int(gguf.TokenType.CONTROL))
        allowed.append(False)
    return tokens, types, [f"{a} {b}" for a, b in merges], allowed


def _weights(n_vocab: int, allowed: list[bool]) -> dict[str, npt.NDArray[np.float32]]:
    """Random F32 tensors. Numpy shapes are (rows=out, cols=in); gguf reverses
    them into ggml's ne order, which is what llama.cpp expects."""
    rng = np.random.default_rng(SEED)

    def rand(*shape: int, scale: float) -> npt.NDArray[np.float32]:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    t: dict[str, npt.NDArray[np.float32]] = {}
    embd = rand(n_vocab, N_EMBD, scale=1.0)
    embd[:, 0] = 1.0  # the constant "bias" lane, see module docstring
    t["token_embd.weight"] = embd
    for i in range(N_LAYER):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
        t[p + "attn_q.weight"] = rand(N_EMBD, N_EMBD, scale=0.2)
        t[p + "attn_k.weight"] = rand(N_EMBD, N_EMBD, scale=0.2)
        t[p + "attn_v.weight"] = rand(N_EMBD, N_EMBD, scale=0.2)
        attn_out = rand(N_EMBD, N_EMBD, scale=0.1)
        attn_out[0, :] = 0.0  # never write to the bias lane
        t[p + "attn_output.weight"] = attn_out
        t[p + "ffn_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
        t[p + "ffn_gate.weight"] = rand(N_FF, N_EMBD, scale=0.2)
        t[p + "ffn_up.weight"] = rand(N_FF, N_EMBD, scale=0.2)
        ffn_down = rand(N_EMBD, N_FF, scale=0.1)
        ffn_down[0, :] = 0.0
        t[p + "ffn_down.weight"] = ffn_down
    t["output_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
    # Logit std around 2 keeps sampling varied without flattening it to noise.
    out = rand(n_vocab, N_EMBD, scale=0.3)
    out[:, 0] = np.where(np.array(allowed), 0.0, _LOGIT_BIAS_FORBIDDEN)
    t["output.weight"] = out.astype(np.float32)
    return t


def write_tiny_model(path: Path) -> Path:
    """Write the tiny model to ``path`` (parent directories are created).

    Returns the path. The output is byte-identical across runs.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, types, merges, allowed = _build_vocab()
    n_vocab = len(tokens)

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("hal0proxy-tiny-llama")
    writer.add_file_type(int(gguf.LlamaFileType.ALL_F32))
    writer.add_context_length(CONTEXT_LENGTH)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    # lemond starts embedding models with plain ``--embeddings``; without a
    # pooling type in the file llama-server would pool "none" and answer
    # /v1/embeddings with 400. Generation ignores this key.
    writer.add_pooling_type(gguf.PoolingType.MEAN)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index(BOS))
    writer.add_eos_token_id(tokens.index(EOS))
    writer.add_eot_token_id(tokens.index(EOS))
    writer.add_pad_token_id(tokens.index(EOT))
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    for name, tensor in _weights(n_vocab, allowed).items():
        writer.add_tensor(name, tensor)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m hal0proxy.emulator.tiny_model OUT.gguf", file=sys.stderr)
        return 2
    print(write_tiny_model(Path(args[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
