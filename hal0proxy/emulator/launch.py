"""How a child is started: lemond's llama-server argument shape, for the fake or the real binary."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from hal0proxy.emulator.catalog import CatalogModel
from hal0proxy.emulator.realbin import llama_server_command

__all__ = ["ChildSpec", "LaunchPlan", "fake_model_path"]

FAKE_MODULE = "hal0proxy.emulator.fake_llama_server"
HF_HUB = "/var/lib/lemonade/.cache/huggingface/hub"


def fake_model_path(model: CatalogModel) -> str:
    """A realistic Hugging Face cache path for ``model`` (the fake child never opens it)."""
    repo = model.checkpoint.partition(":")[0]
    return f"{HF_HUB}/models--{repo.replace('/', '--')}/snapshots/5b0e8c1f/{model.file_name}"


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """Per-spawn knobs that faults and flags can change."""

    load_seconds: float = 0.0
    tokens_per_second: float = 0.0
    close_after_stream: bool = False
    fail_start: bool = False


@dataclass(frozen=True, slots=True)
class LaunchPlan:
    """Builds argv; ``real_binary``/``real_model`` select the real llama-server."""

    real_binary: Path | None = None
    real_model: Path | None = None

    @property
    def real(self) -> bool:
        return self.real_binary is not None

    @property
    def backend_name(self) -> str:
        return "cpu" if self.real else "vulkan"

    def argv(self, model: CatalogModel, ctx_size: int, port: int, spec: ChildSpec) -> list[str]:
        if spec.fail_start or not self.real:
            return self._fake_argv(model, ctx_size, port, spec)
        assert self.real_binary is not None and self.real_model is not None
        # lemond's argument shape; one thread and four slots keep it light on a shared machine.
        return llama_server_command(
            self.real_binary,
            self.real_model,
            port,
            ctx_size=ctx_size,
            embeddings=model.child_flag == "--embeddings",
            reranking=model.child_flag == "--reranking",
        )

    def _fake_argv(self, model: CatalogModel, ctx_size: int, port: int, spec: ChildSpec) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            FAKE_MODULE,
            "-m",
            fake_model_path(model),
            "--ctx-size",
            str(ctx_size),
            "--port",
            str(port),
            "--jinja",
            "--metrics",
        ]
        if model.child_flag:
            argv.append(model.child_flag)
        argv += ["--load-seconds", f"{spec.load_seconds:g}", "--tokens-per-second", f"{spec.tokens_per_second:g}"]
        if spec.close_after_stream:
            argv.append("--close-after-stream")
        if spec.fail_start:
            argv.append("--fail-start")
        return argv
