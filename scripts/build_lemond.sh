#!/usr/bin/env bash
# Build lemond (Lemonade Server, C++) for the real-lemond tests, and cache it.
#
#   scripts/build_lemond.sh [VERSION]        VERSION: 11.7.0 (default) or 10.7.0
#
# Idempotent: if the cached binary exists and runs, only its path is printed. The only
# line on stdout is the binary path; progress goes to stderr and the compiler output to a
# log file next to the cache entry. The result is
#   ${HAL0_CACHE_DIR:-$HOME/.cache/hal0proxy}/lemond/<version>/lemond
# with lemond's `resources/` folder next to it (lemond reads defaults.json,
# server_models.json and backend_versions.json from there).
#
# Sources:
#   HAL0PROXY_LEMOND_SOURCES  a folder holding lemonade-v<version>.tar.gz, the pinned
#                             dependency archives and SHA256SUMS (checked before use);
#                             the build then needs no network at all.
#   (unset)                   `git clone --depth 1 --branch v<version>` of
#                             lemonade-sdk/lemonade; CMake's FetchContent then downloads the
#                             dependencies at the versions that tag pins.
#
# Environment:
#   HAL0_CACHE_DIR   cache root (default: $HOME/.cache/hal0proxy)
#   HAL0_BUILD_JOBS  parallel compile jobs (default: 2)
set -euo pipefail

VERSION="${1:-11.7.0}"
CACHE_ROOT="${HAL0_CACHE_DIR:-$HOME/.cache/hal0proxy}"
JOBS="${HAL0_BUILD_JOBS:-2}"
DEST_DIR="$CACHE_ROOT/lemond/$VERSION"
DEST_BIN="$DEST_DIR/lemond"
LOG_FILE="$CACHE_ROOT/lemond/build-$VERSION.log"

log() { printf '[build_lemond] %s\n' "$*" >&2; }

case "$VERSION" in
    11.7.0) HTTPLIB=cpp-httplib-v0.47.0 ;;
    10.7.0) HTTPLIB=cpp-httplib-v0.26.0 ;;
    *)
        log "unsupported version $VERSION (supported: 11.7.0, 10.7.0)"
        exit 2
        ;;
esac
DEPS=(json-v3.11.3 cli11-v2.4.2 curl-8_5_0 zstd-v1.5.6 libwebsockets-v4.3.3 "$HTTPLIB")

# lemond has no --version that works without a runtime dir; `--help` exits 0 once the
# binary and its shared libraries load, which is what "the cache entry works" means here.
binary_works() {
    [ -x "$1" ] && [ -f "$(dirname "$1")/resources/defaults.json" ] || return 1
    local rt rc=0
    rt="$(mktemp -d)"
    XDG_RUNTIME_DIR="$rt" timeout 20 "$1" --help >/dev/null 2>&1 || rc=$?
    rm -rf "$rt"
    return "$rc"
}

if binary_works "$DEST_BIN"; then
    echo "$DEST_BIN"
    exit 0
fi

# Install only what is missing so developer machines are never touched by apt needlessly.
ensure_packages() {
    local missing=() pkg
    for pkg in cmake ninja-build g++ pkg-config libssl-dev zlib1g-dev libdrm-dev libmbedtls-dev git; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    log "installing missing packages: ${missing[*]}"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    $sudo apt-get update >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}" >&2
}

mkdir -p "$CACHE_ROOT/lemond"
# Serialise concurrent invocations: a second caller waits for the first build and reuses it.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE_ROOT/lemond/.build-$VERSION.lock"
    flock 9
    if binary_works "$DEST_BIN"; then
        echo "$DEST_BIN"
        exit 0
    fi
fi

ensure_packages
WORK="$(mktemp -d "$CACHE_ROOT/lemond/.build-$VERSION-XXXXXX")"
on_exit() {
    local rc=$?
    if [ "$rc" -ne 0 ] && [ -s "$LOG_FILE" ]; then
        log "failed (exit $rc); last lines of $LOG_FILE:"
        tail -n 20 "$LOG_FILE" >&2
    fi
    if [ "$rc" -ne 0 ] && [ -x "$WORK/build/lemond" ]; then
        # A finished compile is too expensive to throw away: keep it for inspection.
        log "keeping the build tree in $WORK"
        return
    fi
    rm -rf "$WORK"
}
trap on_exit EXIT
: >"$LOG_FILE"
SRC="$WORK/src"
mkdir -p "$SRC"

CMAKE_ARGS=(
    -G Ninja
    -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DBUILD_WEB_APP=OFF -DREQUIRE_LINUX_TRAY=OFF
)
if [ -n "${HAL0PROXY_LEMOND_SOURCES:-}" ]; then
    ARCHIVES="$(cd "$HAL0PROXY_LEMOND_SOURCES" && pwd)"
    log "verifying archives in $ARCHIVES"
    (cd "$ARCHIVES" && sha256sum --quiet -c SHA256SUMS) >&2
    tar -xzf "$ARCHIVES/lemonade-v$VERSION.tar.gz" -C "$SRC"
    for dep in "${DEPS[@]}"; do
        tar -xzf "$ARCHIVES/$dep.tar.gz" -C "$SRC"
    done
    # Lemonade's CMake rewrites libwebsockets' CMakeLists in place: this copy is private
    # to this build tree, so it starts unmodified.
    CMAKE_ARGS+=(
        -DFETCHCONTENT_FULLY_DISCONNECTED=ON
        -DFETCHCONTENT_SOURCE_DIR_JSON="$SRC/json-v3.11.3"
        -DFETCHCONTENT_SOURCE_DIR_CLI11="$SRC/cli11-v2.4.2"
        -DFETCHCONTENT_SOURCE_DIR_CURL="$SRC/curl-8_5_0"
        -DFETCHCONTENT_SOURCE_DIR_ZSTD="$SRC/zstd-v1.5.6"
        -DFETCHCONTENT_SOURCE_DIR_HTTPLIB="$SRC/$HTTPLIB"
        -DFETCHCONTENT_SOURCE_DIR_LIBWEBSOCKETS="$SRC/libwebsockets-v4.3.3"
    )
else
    log "HAL0PROXY_LEMOND_SOURCES unset: cloning lemonade v$VERSION from GitHub"
    git clone --depth 1 --branch "v$VERSION" https://github.com/lemonade-sdk/lemonade.git \
        "$SRC/lemonade-v$VERSION" >>"$LOG_FILE" 2>&1
fi

START=$(date +%s)
log "configuring lemonade v$VERSION (log: $LOG_FILE)"
cmake -S "$SRC/lemonade-v$VERSION" -B "$WORK/build" "${CMAKE_ARGS[@]}" >>"$LOG_FILE" 2>&1
log "compiling lemond with -j$JOBS (about 9 min for 11.7.0 and 4 min for 10.7.0 on two cores)"
cmake --build "$WORK/build" --target lemond -j"$JOBS" >>"$LOG_FILE" 2>&1

if ! binary_works "$WORK/build/lemond"; then
    log "built binary does not run; see $LOG_FILE"
    exit 1
fi

# Assemble the entry beside the destination, then swap it in with a rename so readers see
# either no entry or a complete one.
STAGE="$CACHE_ROOT/lemond/.stage-$VERSION-$$"
rm -rf "$STAGE"
mkdir -p "$STAGE"
cp "$WORK/build/lemond" "$STAGE/lemond"
cp -r "$WORK/build/resources" "$STAGE/resources"
rm -rf "$DEST_DIR"
mv "$STAGE" "$DEST_DIR"
log "built in $(($(date +%s) - START)) s: $DEST_BIN"
echo "$DEST_BIN"
