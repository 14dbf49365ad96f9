"""The models the emulator knows: a built-in catalog, or one read from a JSON/TOML file.

File shape (JSON or TOML)::

    {"models": [{"name": "Qwen3-0.6B-GGUF", "type": "llm", "checkpoint": "unsloth/Qwen3-0.6B-GGUF:Q4_0",
                 "recipe": "llamacpp", "load_seconds": 0.2}, ...]}

A bare JSON list of model objects is accepted too. Unknown keys are rejected so typos surface.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import orjson

__all__ = ["DEFAULT_CATALOG", "MODEL_TYPES", "CatalogModel", "load_catalog"]

#: Type keys of ``max_models`` at v11.5+ (SPEC §1.3).
MODEL_TYPES = ("classification", "embedding", "image", "llm", "reranking", "transcription", "tts")


@dataclass(frozen=True, slots=True)
class CatalogModel:
    name: str
    type: str
    checkpoint: str
    recipe: str = "llamacpp"
    load_seconds: float = 0.2
    labels: tuple[str, ...] = ()
    size: float = 0.5
    ctx_size: int = 4096
    max_context_window: int | None = None
    downloaded: bool = True
    suggested: bool = True

    @property
    def file_name(self) -> str:
        repo, _, quant = self.checkpoint.partition(":")
        base = repo.rsplit("/", 1)[-1].removesuffix("-GGUF")
        return f"{base}-{quant or 'F16'}.gguf"

    @property
    def child_flag(self) -> str | None:
        """The extra llama-server flag lemond passes for this model type."""
        if self.type == "embedding":
            return "--embeddings"
        if self.type == "reranking":
            return "--reranking"
        return None


DEFAULT_CATALOG: tuple[CatalogModel, ...] = (
    CatalogModel(
        name="Qwen3-0.6B-GGUF",
        type="llm",
        checkpoint="unsloth/Qwen3-0.6B-GGUF:Q4_0",
        load_seconds=0.2,
        labels=("chat", "reasoning"),
        size=0.38,
        ctx_size=4096,
        max_context_window=40960,
    ),
    CatalogModel(
        name="Qwen3-4B-GGUF",
        type="llm",
        checkpoint="unsloth/Qwen3-4B-GGUF:Q4_0",
        load_seconds=0.4,
        labels=("chat", "reasoning"),
        size=2.38,
        ctx_size=4096,
        max_context_window=40960,
    ),
    CatalogModel(
        name="nomic-embed-text-v1-GGUF",
        type="embedding",
        checkpoint="nomic-ai/nomic-embed-text-v1-GGUF:Q4_K_S",
        load_seconds=0.1,
        labels=("embeddings",),
        size=0.0781,
        ctx_size=2048,
        max_context_window=2048,
    ),
    CatalogModel(
        name="bge-reranker-v2-m3-GGUF",
        type="reranking",
        checkpoint="gpustack/bge-reranker-v2-m3-GGUF:Q8_0",
        load_seconds=0.1,
        labels=("reranking",),
        size=0.64,
        ctx_size=2048,
        max_context_window=8192,
    ),
)

_FIELDS = {f.name for f in fields(CatalogModel)}


def _model_from_mapping(raw: dict[str, Any]) -> CatalogModel:
    unknown = set(raw) - _FIELDS
    if unknown:
        raise ValueError(f"unknown catalog keys for {raw.get('name')!r}: {sorted(unknown)}")
    for key in ("name", "type", "checkpoint"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ValueError(f"catalog entry needs a non-empty string {key!r}: {raw!r}")
    values = dict(raw)
    if "labels" in values:
        values["labels"] = tuple(values["labels"])
    model = CatalogModel(**values)
    if model.load_seconds < 0:
        raise ValueError(f"load_seconds must be >= 0 for {model.name!r}")
    return model


def load_catalog(path: str | Path) -> tuple[CatalogModel, ...]:
    """Read a catalog file; the format follows the suffix (``.toml``, else JSON)."""
    data_path = Path(path)
    raw_bytes = data_path.read_bytes()
    data: Any = tomllib.loads(raw_bytes.decode()) if data_path.suffix == ".toml" else orjson.loads(raw_bytes)
    entries = data.get("models") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{data_path}: expected a non-empty list of models")
    models = tuple(_model_from_mapping(entry) for entry in entries)
    names = [m.name for m in models]
    if len(names) != len(set(names)):
        raise ValueError(f"{data_path}: duplicate model names")
    return models
