#!/usr/bin/env bash
# The headless browser of the browser tests (tests/browser): Debian's `chromium` at /usr/bin/chromium
# (apt, as root, only when missing) and Playwright's Python package in the venv (from pyproject's `test`
# extra). Never `playwright install`: Playwright drives the Debian chromium via `executable_path`, so no
# browser is downloaded. Prints the chromium version. Exits 1 with a message when something is missing.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${VENV:-$repo/.venv}
chromium=/usr/bin/chromium

log() { printf 'ensure-browser: %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}

if [ ! -x "$chromium" ]; then
    [ "$(id -u)" = 0 ] || die "$chromium is missing; as root run: apt-get install -y chromium"
    log "installing Debian chromium (apt)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
fi
[ -x "$chromium" ] || die "$chromium is still missing after apt-get install chromium"

[ -x "$venv/bin/python" ] || die "no venv at $venv: run \`make deps\` first"
if ! "$venv/bin/python" -c 'import playwright.sync_api' 2>/dev/null; then
    log "installing the test extra (playwright) into $venv"
    "$venv/bin/python" -m pip install -q -e "$repo[test]"
fi
"$venv/bin/python" -c 'import playwright.sync_api' || die "playwright is not importable from $venv"

# the Debian wrapper script prints a harmless shell warning on some machines: keep only the version line
version=$("$chromium" --version 2>/dev/null | head -n1)
[ -n "$version" ] || die "$chromium --version printed nothing"
playwright_version=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("playwright"))')
echo "browser: $version; playwright $playwright_version (driving $chromium, no downloaded browsers)"
