"""A real llama-server child with the tiny GGUF, plain and in llama.cpp's router mode.

Router mode (``llama-server --models-dir DIR`` with no ``-m``) is llama.cpp's own multi-model
front: the router process answers the API and relays each request to a ``llama-server`` child it
spawns per model (loaded on the first request, ``--models-autoload``). It is the closest peer to
hal0proxy in front of lemond's children, so the comparison is: the plain child, hal0proxy in front
of a plain child, and the router in front of its own child — same binary, same model, same flags.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.procs import Proc, free_port, start_ready
from hal0proxy.emulator.realbin import ensure_llama_server, tiny_model_path

__all__ = ["MODEL", "llama_server_version", "router_supported", "start_llama_direct", "start_llama_router"]

#: the name both servers answer to (the router names a model after its file in the models dir)
MODEL = "tiny"
#: one thread and four slots, as lemond's children are run in the tests; small context for speed
CHILD_FLAGS = ["--ctx-size", "512", "-t", "1", "-np", "4", "--no-webui"]
START_TIMEOUT = 120.0


def llama_server_version(binary: Path) -> str:
    done = subprocess.run([str(binary), "--version"], capture_output=True, timeout=30, check=False)
    text = (done.stdout + done.stderr).decode(errors="replace")
    return next((line.removeprefix("version: ") for line in text.splitlines() if line.startswith("version:")), "?")


def router_supported(binary: Path) -> bool:
    """Router mode arrived in llama-server in late 2025; older builds have no ``--models-dir``."""
    done = subprocess.run([str(binary), "--help"], capture_output=True, timeout=30, check=False)
    return b"--models-dir" in done.stdout + done.stderr


def start_llama_direct(log_dir: Path) -> tuple[Proc, int]:
    """``llama-server -m tiny.gguf --alias tiny ...``: the plain child."""
    binary = ensure_llama_server()
    port = free_port()
    argv = [str(binary), "-m", str(tiny_model_path()), "--alias", MODEL, "--host", "127.0.0.1"]
    argv += ["--port", str(port), *CHILD_FLAGS]
    return _start_ready("llamacpp-direct", argv, port, log_dir)


def start_llama_router(log_dir: Path) -> tuple[Proc, int]:
    """``llama-server --models-dir DIR`` over a dir holding only the tiny model (as ``tiny.gguf``).

    The router hands its own flags (context, threads, slots) to the child it spawns. The child
    runs in the router's session, so stopping the router's process group stops it as well; the
    router's CPU time is the router process alone (the child's is inference, not relaying).
    """
    binary = ensure_llama_server()
    models = log_dir / "router-models"
    models.mkdir(parents=True, exist_ok=True)
    link = models / f"{MODEL}.gguf"
    if not link.exists():
        link.symlink_to(tiny_model_path())
    port = free_port()
    argv = [str(binary), "--models-dir", str(models), "--models-max", "1", "--host", "127.0.0.1"]
    argv += ["--port", str(port), *CHILD_FLAGS]
    # the first request loads the model (spawns the child); ready means that is done
    return _start_ready("llamacpp-router", argv, port, log_dir)


def _start_ready(name: str, argv: list[str], port: int, log_dir: Path) -> tuple[Proc, int]:
    """Start ``argv`` and return once it answers for ``MODEL``; never leave it behind on failure."""
    return start_ready(name, argv, log_dir, [(port, MODEL)], timeout=START_TIMEOUT), port
