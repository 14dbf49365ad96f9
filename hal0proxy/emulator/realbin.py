"""Locate (or build) a real llama-server binary and the tiny test model.

Tests that want the genuine upstream server instead of the fake one use this
module. The binary is built once per machine by ``scripts/build_llama_server.sh``
into ``$HAL0_CACHE_DIR/llama-server/<version>/bin/llama-server``; the tiny GGUF
from :mod:`hal0proxy.emulator.tiny_model` is generated once into
``$HAL0_CACHE_DIR/models/``. Both caches live outside the work tree so that
clean checkouts and parallel test runs share them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

__all__ = [
    "LLAMA_CPP_PYTHON_VERSION",
    "LlamaExtraMissing",
    "LlamaServerUnavailable",
    "build_script_path",
    "cache_dir",
    "ensure_llama_server",
    "llama_server_command",
    "llama_server_path",
    "tiny_model_path",
]

# The llama-cpp-python sdist whose vendored llama.cpp we compile. Kept in step
# with the default in scripts/build_llama_server.sh.
LLAMA_CPP_PYTHON_VERSION = os.environ.get("HAL0_LLAMA_CPP_VERSION", "0.3.36")

# A cold build is ~6 minutes on 2 cores; leave room for a slow shared machine
# and for waiting on a concurrent build that holds the lock.
BUILD_TIMEOUT_S = 3600.0


# The generator's source; read for the cache fingerprint without importing it (and so gguf).
TINY_MODEL_SOURCE = Path(__file__).with_name("tiny_model.py")


class LlamaServerUnavailable(RuntimeError):
    """The llama-server binary is missing and could not be built."""


class LlamaExtraMissing(LlamaServerUnavailable):
    """The optional ``llama`` extra (gguf, numpy) is not installed."""

    def __init__(self, module: str | None) -> None:
        super().__init__(
            f"real llama-server children need the 'llama' extra (module {module or 'gguf'!r} is missing): "
            "pip install 'hal0proxy[llama]'"
        )


def _tiny_model() -> ModuleType:
    # Imported here, not at module level: gguf and numpy are an extra, and the proxy, the demo
    # and the emulator with fake children must work without them.
    try:
        from hal0proxy.emulator import tiny_model
    except ModuleNotFoundError as exc:
        raise LlamaExtraMissing(exc.name) from None
    return tiny_model


def cache_dir() -> Path:
    """``$HAL0_CACHE_DIR``, defaulting to ``~/.cache/hal0proxy``."""
    return _default_cache_root()


def _default_cache_root() -> Path:
    env = os.environ.get("HAL0_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "hal0proxy"


def build_script_path() -> Path:
    """The build script in the source checkout (``<repo>/scripts``)."""
    return Path(__file__).resolve().parents[2] / "scripts" / "build_llama_server.sh"


def _cached_binary() -> Path:
    return cache_dir() / "llama-server" / LLAMA_CPP_PYTHON_VERSION / "bin" / "llama-server"


def _runs(binary: Path) -> bool:
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return False
    try:
        proc = subprocess.run(
            [str(binary), "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def llama_server_path() -> Path | None:
    """Path of an existing llama-server, or None.

    ``$HAL0_LLAMA_SERVER`` wins when set (even if it points nowhere, so a typo
    is reported instead of silently building something else); otherwise the
    cache location the build script writes to.
    """
    override = os.environ.get("HAL0_LLAMA_SERVER")
    if override:
        path = Path(override)
        return path if path.is_file() else None
    path = _cached_binary()
    return path if path.is_file() else None


def ensure_llama_server() -> Path:
    """Return a working llama-server, building it first if necessary.

    Raises:
        LlamaServerUnavailable: the override is broken, the build script is
            missing, or the build failed (the message names the build log).
    """
    override = os.environ.get("HAL0_LLAMA_SERVER")
    if override:
        path = Path(override)
        if not _runs(path):
            raise LlamaServerUnavailable(
                f"HAL0_LLAMA_SERVER={override} is not an executable llama-server (`--version` failed)"
            )
        return path
    existing = llama_server_path()
    if existing is not None and _runs(existing):
        return existing

    script = build_script_path()
    if not script.is_file():
        raise LlamaServerUnavailable(
            f"llama-server is not built and the build script {script} is missing; "
            "run it from a source checkout or set HAL0_LLAMA_SERVER"
        )
    env = dict(os.environ, HAL0_CACHE_DIR=str(cache_dir()))
    env.setdefault("HAL0_LLAMA_CPP_VERSION", LLAMA_CPP_PYTHON_VERSION)
    log = cache_dir() / "llama-server" / f"build-{LLAMA_CPP_PYTHON_VERSION}.log"
    try:
        proc = subprocess.run(
            ["bash", str(script)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LlamaServerUnavailable(
            f"building llama-server took longer than {BUILD_TIMEOUT_S:.0f} s; see {log}"
        ) from exc
    lines = proc.stdout.strip().splitlines()
    built = Path(lines[-1]) if lines else None
    if proc.returncode != 0 or built is None or not _runs(built):
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise LlamaServerUnavailable(f"building llama-server failed (exit {proc.returncode}); build log: {log}\n{tail}")
    return built


def _model_fingerprint() -> str:
    # The cached file is named after the generator's source, so editing the
    # generator yields a new file instead of silently reusing a stale one.
    source = TINY_MODEL_SOURCE.read_bytes()
    return hashlib.sha256(source).hexdigest()[:12]


def tiny_model_path(cache_dir: Path | None = None) -> Path:
    """Generate the tiny GGUF into the cache once and return its path."""
    root = (cache_dir if cache_dir is not None else _default_cache_root()) / "models"
    path = root / f"tiny-llama-{_model_fingerprint()}.gguf"
    if path.is_file():
        return path
    generator = _tiny_model()  # before any file is made: a missing extra leaves nothing behind
    root.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename so concurrent callers never load a
    # half-written file.
    fd, tmp_name = tempfile.mkstemp(prefix=".tiny-", suffix=".gguf", dir=root)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        generator.write_tiny_model(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def llama_server_command(
    binary: Path,
    model: Path,
    port: int,
    *,
    ctx_size: int = 4096,
    threads: int = 1,
    parallel: int = 4,
    embeddings: bool = False,
    reranking: bool = False,
    extra: Sequence[str] = (),
) -> list[str]:
    """argv in the shape lemond uses to spawn llama-server:
    ``-m <gguf> --ctx-size N --port P --jinja --metrics [--embeddings|--reranking]``.

    Like lemond, no ``--host`` is passed (llama-server binds 127.0.0.1 by
    default). ``-t``/``-np`` are fixed so tests behave the same on any machine.
    """
    argv = [
        str(binary),
        "-m",
        str(model),
        "--ctx-size",
        str(ctx_size),
        "--port",
        str(port),
        "--jinja",
        "--metrics",
    ]
    if embeddings:
        argv.append("--embeddings")
    if reranking:
        argv.append("--reranking")
    argv += ["-t", str(threads), "-np", str(parallel)]
    argv.extend(extra)
    return argv
