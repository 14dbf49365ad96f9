#!/usr/bin/env bash
# Build a CPU-only, statically linked llama-server from the llama.cpp sources
# vendored in the llama-cpp-python sdist, and cache it.
#
# Idempotent: if the cached binary exists and answers --version, only its path
# is printed. The only line on stdout is the binary path; progress goes to
# stderr and the compiler output to a log file next to the cache entry.
#
# Environment:
#   HAL0_CACHE_DIR          cache root (default: $HOME/.cache/hal0proxy)
#   HAL0_LLAMA_CPP_VERSION  llama-cpp-python sdist version (default: 0.3.36)
#   HAL0_BUILD_JOBS         parallel compile jobs (default: 2)
#   PYTHON                  interpreter whose pip downloads the sdist
#                           (default: the repo venv, else python3)
set -euo pipefail

VERSION="${HAL0_LLAMA_CPP_VERSION:-0.3.36}"
CACHE_ROOT="${HAL0_CACHE_DIR:-$HOME/.cache/hal0proxy}"
JOBS="${HAL0_BUILD_JOBS:-2}"
DEST_DIR="$CACHE_ROOT/llama-server/$VERSION"
DEST_BIN="$DEST_DIR/bin/llama-server"
LOG_FILE="$CACHE_ROOT/llama-server/build-$VERSION.log"

log() { printf '[build_llama_server] %s\n' "$*" >&2; }

binary_works() {
    [ -x "$1" ] && "$1" --version >/dev/null 2>&1
}

if binary_works "$DEST_BIN"; then
    echo "$DEST_BIN"
    exit 0
fi

# Fresh CI machines may lack the toolchain; install it only when missing so
# developer machines are never touched by apt.
ensure_toolchain() {
    local missing=()
    command -v cmake >/dev/null 2>&1 || missing+=(cmake)
    command -v g++ >/dev/null 2>&1 || missing+=(g++)
    command -v make >/dev/null 2>&1 || missing+=(make)
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    log "installing missing build tools: ${missing[*]}"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    $sudo apt-get update >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}" >&2
}

pick_python() {
    if [ -n "${PYTHON:-}" ]; then
        echo "$PYTHON"
        return
    fi
    local script_dir repo_py
    script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    repo_py="$script_dir/../.venv/bin/python"
    if [ -x "$repo_py" ]; then
        echo "$repo_py"
    else
        echo python3
    fi
}

mkdir -p "$CACHE_ROOT/llama-server"
# Serialise concurrent invocations (parallel test runs): the second caller waits
# for the first build and then reuses its result instead of compiling again.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE_ROOT/llama-server/.build-$VERSION.lock"
    flock 9
    if binary_works "$DEST_BIN"; then
        echo "$DEST_BIN"
        exit 0
    fi
fi

ensure_toolchain
# The temp tree lives inside the cache root so the final mv is a same-filesystem
# rename (atomic: readers see either no binary or a complete one).
WORK="$(mktemp -d "$CACHE_ROOT/llama-server/.build-XXXXXX")"
on_exit() {
    local rc=$?
    if [ "$rc" -ne 0 ] && [ -s "$LOG_FILE" ]; then
        log "failed (exit $rc); last lines of $LOG_FILE:"
        tail -n 20 "$LOG_FILE" >&2
    fi
    rm -rf "$WORK"
}
trap on_exit EXIT

PY="$(pick_python)"
log "downloading llama-cpp-python==$VERSION sdist (log: $LOG_FILE)"
: >"$LOG_FILE"
"$PY" -m pip download --no-deps --no-binary :all: \
    "llama-cpp-python==$VERSION" -d "$WORK/dl" >>"$LOG_FILE" 2>&1

SDIST="$(find "$WORK/dl" -maxdepth 1 -name 'llama_cpp_python-*.tar.gz' -o -maxdepth 1 -name 'llama-cpp-python-*.tar.gz' | head -n1)"
if [ -z "$SDIST" ]; then
    log "no sdist found after pip download; see $LOG_FILE"
    exit 1
fi
tar -xzf "$SDIST" -C "$WORK"
SRC="$(find "$WORK" -maxdepth 3 -type d -path '*/vendor/llama.cpp' | head -n1)"
if [ -z "$SRC" ]; then
    log "vendor/llama.cpp not found in $SDIST"
    exit 1
fi

log "configuring $SRC"
START=$(date +%s)
# Flags: portable CPU code (no -march=native), no network at build time
# (no curl, no prebuilt web UI, no openssl), one static binary.
cmake -S "$SRC" -B "$WORK/build" \
    -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON \
    -DCMAKE_BUILD_TYPE=Release -DLLAMA_USE_PREBUILT_UI=OFF \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_CCACHE=OFF >>"$LOG_FILE" 2>&1

log "compiling llama-server with -j$JOBS (takes several minutes)"
cmake --build "$WORK/build" --target llama-server -j"$JOBS" >>"$LOG_FILE" 2>&1

BUILT="$WORK/build/bin/llama-server"
if ! binary_works "$BUILT"; then
    log "built binary does not run; see $LOG_FILE"
    exit 1
fi

mkdir -p "$DEST_DIR/bin"
cp "$BUILT" "$DEST_DIR/bin/.llama-server.tmp.$$"
mv -f "$DEST_DIR/bin/.llama-server.tmp.$$" "$DEST_BIN"
log "built in $(($(date +%s) - START)) s: $DEST_BIN ($(du -h "$DEST_BIN" | cut -f1))"
echo "$DEST_BIN"
