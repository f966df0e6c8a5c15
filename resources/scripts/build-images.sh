#!/usr/bin/env bash
# Build the ML Hub workspace image without any image registry:
#   1. base image mlhub-base:bookworm-<hash of base-packages.txt>: a Debian rootfs made by mmdebstrap from
#      Debian's packages, then `docker import` (debian-base.sh; MLHUB_UPSTREAM_BASE, e.g. debian:bookworm, instead);
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
version=${MLHUB_VERSION:-$package_version}
python=${PYTHON:-python3}

log_prefix=build-images
# shellcheck source=image-lib.sh
source "$here/image-lib.sh"

"$here/ensure-docker.sh"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mlhub-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
build_lock

# --- 1. base image -------------------------------------------------------------------------------
base_image=$("$here/debian-base.sh" "$ws_dir/base-packages.txt" mlhub-base)

# --- 2. workspace image --------------------------------------------------------------------------
# files of the build context besides wheels/ (the Dockerfile copies them)
ws_files=(Dockerfile requirements.txt base-packages.txt start-workspace.sh mlhub-authorized-keys mlhub-ssh-session
          sshd_config profile-mlhub-workspace.sh mlhub_threads.py)
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
prune_build_leftovers
