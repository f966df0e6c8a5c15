#!/usr/bin/env bash
# Build the ML Hub image ($MLHUB_HUB_IMAGE, default mlhub:<version>) from the top-level Dockerfile, offline:
#   1. base image mlhub-hub-base:bookworm-<hash> from resources/hub/packages.txt (debian-base.sh);
#   2. Python wheels made on the host (`pip wheel`, CPython 3.11, resources/hub/requirements.txt) plus
#      a wheel of this package, in a temporary build context; `docker build`.
# Skipped when an image with the same content hash exists (label mlhub.build-hash).
# Env: MLHUB_HUB_IMAGE, MLHUB_WORKSPACE_IMAGE (the hub's default workspace image), MLHUB_UPSTREAM_BASE,
#      MLHUB_VERSION, PYTHON (host python for pip, default python3), MLHUB_FORCE_BUILD=1.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
package_version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$repo/mlhubspawner/_version.py")
version=${MLHUB_VERSION:-$package_version}
image=${MLHUB_HUB_IMAGE:-mlhub:$package_version}
workspace_image=${MLHUB_WORKSPACE_IMAGE:-mlhub-workspace:$package_version}
python=${PYTHON:-python3}

log_prefix=build-hub-image
# shellcheck source=image-lib.sh
source "$here/image-lib.sh"

"$here/ensure-docker.sh"
build_lock

base_image=$("$here/debian-base.sh" "$repo/resources/hub/packages.txt" mlhub-hub-base)

# Everything that ends up in the image, in a stable order, for the content hash.
sources=(Dockerfile pyproject.toml setup.py jupyterhub_config.py resources/hub/requirements.txt
         resources/hub/packages.txt resources/hub/front-authorized-keys resources/jupyterhub_user_config.py
         resources/scripts/build-hub-image.sh resources/scripts/image-lib.sh)
hash=$( { cd "$repo"; cat "${sources[@]}"; git ls-files -co --exclude-standard mlhubspawner cleanup_service \
          | grep -v '__pycache__' | sort | xargs cat; echo "$base_image $version $workspace_image"; } \
        | hash_of)
if [ "$(label_of "$image" mlhub.build-hash)" = "$hash" ] && [ -z "${MLHUB_FORCE_BUILD:-}" ]; then
    log "$image (hash $hash) exists, skipping"
    exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mlhub-hub-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
ctx=$tmp/context
mkdir -p "$ctx/wheels"
cp "$repo/Dockerfile" "$repo/jupyterhub_config.py" "$repo/resources/hub/requirements.txt" \
   "$repo/resources/hub/packages.txt" "$repo/resources/hub/front-authorized-keys" \
   "$repo/resources/jupyterhub_user_config.py" "$ctx/"
# The host's CPython 3.11 builds wheels for the image's (Debian's 3.11, same glibc): binary wheels as
# published, pure-Python sdists (e.g. onetimepass) built here.
# Kept between builds under the state dir, per requirements hash.
req_hash=$(hash_of <"$repo/resources/hub/requirements.txt")
cache=${MLHUB_STATE_DIR:-$repo/.mlhub}/hub-wheels/$req_hash
if [ ! -f "$cache/.complete" ]; then
    log "pip wheel (cp311) with $python"
    rm -rf "$cache" && mkdir -p "$cache"
    quiet "$tmp/pip.log" "$python" -m pip wheel --disable-pip-version-check --no-deps \
        -w "$cache" -r "$repo/resources/hub/requirements.txt"
    touch "$cache/.complete"
fi
cp "$cache"/*.whl "$ctx/wheels/"
# our own package: a wheel from a clean copy of the tracked and new (not ignored) files
mkdir "$tmp/src"
(cd "$repo" && git ls-files -co --exclude-standard | grep -v '^tests/\|^benchmarks/\|^helm/' \
    | tar -cf - -T -) | tar -xf - -C "$tmp/src"
quiet "$tmp/wheel.log" "$python" -m pip wheel --disable-pip-version-check --no-deps \
    -w "$ctx/wheels" "$tmp/src"
log "$(find "$ctx/wheels" -name '*.whl' | wc -l) wheels in $((SECONDS - start)) s; docker build $image"
quiet "$tmp/build.log" docker build --pull=false --build-arg "BASE_IMAGE=$base_image" \
    --build-arg "VERSION=$version" --build-arg "WORKSPACE_IMAGE=$workspace_image" \
    --label "mlhub.build-hash=$hash" -t "$image" "$ctx"
log "built $image (hash $hash) in $((SECONDS - start)) s"
prune_build_leftovers
