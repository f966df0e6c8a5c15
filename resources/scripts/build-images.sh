#!/usr/bin/env bash
# Build the ML Hub workspace image without any image registry:
#   1. base image mlhub-base:bookworm-<hash of base-packages.txt>: a Debian rootfs made by mmdebstrap from
#      Debian's packages, then `docker import` (skipped when MLHUB_UPSTREAM_BASE, e.g. debian:bookworm, is set);
#   2. workspace image $MLHUB_WORKSPACE_IMAGE (default mlhub-workspace:<version>) from resources/workspace/Dockerfile,
#      with Python wheels downloaded on the host (`pip download` for CPython 3.11 manylinux) into the context.
# Both steps are skipped when an image with the same content hash exists (label mlhub.build-hash).
# Env: MLHUB_WORKSPACE_IMAGE, MLHUB_UPSTREAM_BASE, MLHUB_VERSION (image version label, default dev),
#      PYTHON (host python used for pip download, default python3), MLHUB_FORCE_BUILD=1 (ignore the cache).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ws_dir=$(cd "$here/../workspace" && pwd)
package_version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$here/../../mlhubspawner/_version.py")
image=${MLHUB_WORKSPACE_IMAGE:-mlhub-workspace:$package_version}
upstream=${MLHUB_UPSTREAM_BASE:-}
version=${MLHUB_VERSION:-$package_version}
python=${PYTHON:-python3}
suite=bookworm

log() { printf 'build-images: %s\n' "$*" >&2; }
hash_of() { sha256sum | cut -c1-12; }
label_of() { docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }
# Run a noisy command with its output in a log file; show the log's tail if it fails.
quiet() {
    local logfile=$1; shift
    if ! "$@" >"$logfile" 2>&1; then
        log "FAILED: $*"; tail -n 40 "$logfile" >&2; return 1
    fi
}

"$here/ensure-docker.sh"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mlhub-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# Serialize concurrent builds (make test + make run) on this machine.
if exec 9>"${TMPDIR:-/tmp}/mlhub-build-images.lock"; then flock 9; fi

# --- 1. base image -------------------------------------------------------------------------------
packages=$(grep -v '^[[:space:]]*#' "$ws_dir/base-packages.txt" | tr -s '[:space:]' ',' | sed 's/^,//; s/,$//')
if [ -n "$upstream" ]; then
    base_image=$upstream
    log "base: upstream $base_image (no mmdebstrap)"
else
    base_hash=$({ echo "$suite"; cat "$ws_dir/base-packages.txt"; } | hash_of)
    base_image=mlhub-base:$suite-$base_hash
    if [ "$(label_of "$base_image" mlhub.build-hash)" = "$base_hash" ] && [ -z "${MLHUB_FORCE_BUILD:-}" ]; then
        log "base: $base_image exists, skipping"
    else
        if ! command -v mmdebstrap >/dev/null 2>&1; then
            [ "$(id -u)" -eq 0 ] || { log "mmdebstrap missing: install it, or set MLHUB_UPSTREAM_BASE"; exit 1; }
            log "installing mmdebstrap (apt)"
            apt-cache show mmdebstrap >/dev/null 2>&1 || apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >&2
        fi
        log "base: mmdebstrap $suite [$packages] (Debian mirror; ~1 min)"
        start=$SECONDS
        # Drop docs/man pages (keep copyright files) to keep the image small.
        quiet "$tmp/mmdebstrap.log" mmdebstrap --variant=apt --include="$packages" \
            --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
            --dpkgopt='path-include=/usr/share/doc/*/copyright' \
            "$suite" "$tmp/base.tar" </dev/null
        docker import --change "LABEL mlhub.build-hash=$base_hash" \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["/bin/bash"]' "$tmp/base.tar" "$base_image" >/dev/null
        rm -f "$tmp/base.tar"
        log "base: built $base_image in $((SECONDS - start)) s"
    fi
fi

# --- 2. workspace image --------------------------------------------------------------------------
# files of the build context besides wheels/ (the Dockerfile copies them)
ws_files=(Dockerfile requirements.txt base-packages.txt start-workspace.sh mlhub-authorized-keys mlhub-ssh-session
          sshd_config profile-mlhub-workspace.sh)
ws_hash=$({ (cd "$ws_dir" && cat "${ws_files[@]}"); cat "${BASH_SOURCE[0]}"
            echo "$base_image $version"; } | hash_of)
if [ "$(label_of "$image" mlhub.build-hash)" = "$ws_hash" ] && [ -z "${MLHUB_FORCE_BUILD:-}" ]; then
    log "workspace: $image (hash $ws_hash) exists, skipping"
    exit 0
fi

start=$SECONDS
ctx=$tmp/context
mkdir -p "$ctx/wheels"
(cd "$ws_dir" && cp "${ws_files[@]}" "$ctx/")
arch=$(uname -m)
platforms=(--platform "manylinux2014_$arch" --platform any)
for minor in $(seq 17 36); do  # bookworm has glibc 2.36
    platforms+=(--platform "manylinux_2_${minor}_$arch")
done
log "workspace: pip download wheels (cp311, $arch) with $python"
quiet "$tmp/pip.log" "$python" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.11 --implementation cp --abi cp311 "${platforms[@]}" \
    -d "$ctx/wheels" -r "$ws_dir/requirements.txt"
log "workspace: $(find "$ctx/wheels" -name '*.whl' | wc -l) wheels in $((SECONDS - start)) s; docker build $image"
quiet "$tmp/build.log" docker build --pull=false --build-arg "BASE_IMAGE=$base_image" \
    --build-arg "VERSION=$version" --label "mlhub.build-hash=$ws_hash" -t "$image" "$ctx"
log "workspace: built $image (hash $ws_hash) in $((SECONDS - start)) s"
# Drop what this build left dangling: its install stage and the image it replaced (ours only, by label).
docker image prune -f --filter label=mlhub.build-stage >/dev/null
docker image prune -f --filter label=mlhub.build-hash >/dev/null
