#!/usr/bin/env bash
# Build the ML Hub workspace images (flavors) without any image registry:
#   build-images.sh [minimal] [ml] [gpu]        (no argument: minimal ml, what `make images` builds)
# minimal  mlhub-workspace:<version>: base image mlhub-base:bookworm-<hash of base-packages.txt>, a Debian rootfs
#          made by mmdebstrap from Debian's packages, then `docker import` (debian-base.sh; MLHUB_UPSTREAM_BASE,
#          e.g. debian:bookworm, instead), then resources/workspace/Dockerfile with Python wheels downloaded on
#          the host (`pip download` for CPython 3.11 manylinux) into the context.
# ml       mlhub-workspace-ml:<version>: the same Dockerfile on the ml base mlhub-base-ml:bookworm-<hash>
#          (base-packages.txt + ml/packages.txt + ml/tools/packages.txt) as mlhub-workspace-ml-stage:<hash>, then
#          resources/workspace/ml/Dockerfile adds the wheels of ml/requirements.txt + ml/tools/requirements.txt
#          to the venv and installs ml/tools/.
# gpu      mlhub-workspace-gpu:<version>: ml + resources/workspace/gpu/requirements.txt (PyTorch with CUDA,
#          multi-GB; `make image-gpu` only). Builds ml first.
# Every step is skipped when an image with the same content hash exists (label mlhub.build-hash).
# Env: MLHUB_UPSTREAM_BASE, MLHUB_VERSION (image version label, default dev), PYTHON (host python used for pip
#      download, default python3), MLHUB_FORCE_BUILD=1 (ignore the cache).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ws_dir=$(cd "$here/../workspace" && pwd)
package_version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$here/../../mlhubspawner/_version.py")
version=${MLHUB_VERSION:-$package_version}
python=${PYTHON:-python3}

log_prefix=build-images
# shellcheck source=image-lib.sh
source "$here/image-lib.sh"

flavors=("$@")
[ ${#flavors[@]} -gt 0 ] || flavors=(minimal ml)
for flavor in "${flavors[@]}"; do
    case $flavor in minimal | ml | gpu) ;; *) log "unknown flavor '$flavor' (minimal, ml, gpu)"; exit 2 ;; esac
done

"$here/ensure-docker.sh"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mlhub-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
build_lock

# files of the minimal flavor's build context besides wheels/ (its Dockerfile copies them)
ws_files=(Dockerfile requirements.txt base-packages.txt start-workspace.sh mlhub-authorized-keys mlhub-ssh-session
          sshd_config profile-mlhub-workspace.sh mlhub_threads.py)

# pip download <wheel dir> <requirements file>...: every pinned wheel for CPython 3.11 on bookworm, no dependencies
download_wheels() {
    local dest=$1; shift
    local arch platforms minor reqs=() file
    arch=$(uname -m)
    platforms=(--platform "manylinux2014_$arch" --platform any)
    for minor in $(seq 17 36); do  # bookworm has glibc 2.36
        platforms+=(--platform "manylinux_2_${minor}_$arch")
    done
    for file in "$@"; do
        grep -qv '^[[:space:]]*\(#\|$\)' "$file" && reqs+=(-r "$file")
    done
    mkdir -p "$dest"
    [ ${#reqs[@]} -gt 0 ] || return 0
    log "pip download wheels (cp311, $arch) with $python: ${*#"$ws_dir/"}"
    quiet "$tmp/pip.log" "$python" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.11 --implementation cp --abi cp311 "${platforms[@]}" -d "$dest" "${reqs[@]}"
}

# current <image> <hash>: true when the image exists with that content hash (and no forced build)
current() { [ "$(label_of "$1" mlhub.build-hash)" = "$2" ] && [ -z "${MLHUB_FORCE_BUILD:-}" ]; }

# minimal_dockerfile <image> <base image> <packages file>: the minimal flavor's Dockerfile built on a base
# (the packages file is its context's base-packages.txt: what an upstream base installs)
minimal_dockerfile() {
    local image=$1 base=$2 packages=$3 hash ctx start=$SECONDS
    hash=$({ (cd "$ws_dir" && cat "${ws_files[@]}"); cat "$packages" "${BASH_SOURCE[0]}"
             echo "$base $version"; } | hash_of)
    if current "$image" "$hash"; then
        log "$image (hash $hash) exists, skipping"
        return 0
    fi
    ctx=$tmp/context-$RANDOM
    mkdir -p "$ctx"
    (cd "$ws_dir" && cp "${ws_files[@]}" "$ctx/")
    cp "$packages" "$ctx/base-packages.txt"
    # one download for the minimal image and the ml stage
    [ -d "$tmp/minimal-wheels" ] || download_wheels "$tmp/minimal-wheels" "$ws_dir/requirements.txt"
    cp -r "$tmp/minimal-wheels" "$ctx/wheels"
    log "$(find "$ctx/wheels" -name '*.whl' | wc -l) wheels in $((SECONDS - start)) s; docker build $image"
    quiet "$tmp/build.log" docker build --pull=false --build-arg "BASE_IMAGE=$base" \
        --build-arg "VERSION=$version" --label "mlhub.build-hash=$hash" -t "$image" "$ctx"
    log "built $image (hash $hash) in $((SECONDS - start)) s"
    rm -rf "$ctx"
}

# flavor_dockerfile <image> <base image> <dir> <requirements file>...: <dir>/Dockerfile on a base with <dir>/tools/
# (when there) and the wheels of the requirements in its context; the hash covers every file of <dir>
flavor_dockerfile() {
    local image=$1 base=$2 dir=$3 hash ctx start=$SECONDS
    shift 3
    hash=$({ (cd "$dir" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum); cat "$@"
             cat "$ws_dir/venv-delta.sh" "${BASH_SOURCE[0]}"
             echo "$base $(label_of "$base" mlhub.build-hash) $version"; } | hash_of)
    if current "$image" "$hash"; then
        log "$image (hash $hash) exists, skipping"
        return 0
    fi
    ctx=$tmp/context-$RANDOM
    mkdir -p "$ctx"
    cp "$dir/Dockerfile" "$ws_dir/venv-delta.sh" "$ctx/"
    [ ! -d "$dir/tools" ] || cp -a "$dir/tools" "$ctx/tools"
    [ ! -x "$dir/tools/fetch.sh" ] || "$dir/tools/fetch.sh" "$ctx"  # the tools' host-side downloads (code-server)
    cat "$@" > "$ctx/requirements.txt"
    download_wheels "$ctx/wheels" "$@"
    log "$(find "$ctx/wheels" -name '*.whl' | wc -l) wheels ($(du -sh "$ctx/wheels" | cut -f1)) in" \
        "$((SECONDS - start)) s; docker build $image"
    quiet "$tmp/build.log" docker build --pull=false --build-arg "BASE_IMAGE=$base" \
        --build-arg "VERSION=$version" --label "mlhub.build-hash=$hash" -t "$image" "$ctx"
    log "built $image (hash $hash) in $((SECONDS - start)) s"
    rm -rf "$ctx"
}

want() { [[ " ${flavors[*]} " == *" $1 "* ]]; }
minimal_image=mlhub-workspace:$package_version
ml_image=mlhub-workspace-ml:$package_version
gpu_image=mlhub-workspace-gpu:$package_version

# the ml base: the minimal flavor's Debian packages + the ml flavor's + the browser tools'
cat "$ws_dir/base-packages.txt" "$ws_dir/ml/packages.txt" "$ws_dir/ml/tools/packages.txt" > "$tmp/ml-packages.txt"
ml_base_pid=
tools_pid=
if { want ml || want gpu; } && ! docker image inspect "$ml_image" >/dev/null 2>&1; then
    # a first ml build: code-server's npm install (minutes, cached per machine) beside the other steps
    "$ws_dir/ml/tools/fetch.sh" --cache &
    tools_pid=$!
fi
if want minimal; then
    base_image=$("$here/debian-base.sh" "$ws_dir/base-packages.txt" mlhub-base)
    if want ml || want gpu; then  # mmdebstrap (mostly downloads) beside the minimal image's docker build
        "$here/debian-base.sh" "$tmp/ml-packages.txt" mlhub-base-ml > "$tmp/ml-base" &
        ml_base_pid=$!
    fi
    minimal_dockerfile "$minimal_image" "$base_image" "$ws_dir/base-packages.txt"
fi

if want ml || want gpu; then
    if [ -n "$ml_base_pid" ]; then
        wait "$ml_base_pid" || { log "the ml base failed (see above)"; exit 1; }
        ml_base=$(cat "$tmp/ml-base")
    else
        ml_base=$("$here/debian-base.sh" "$tmp/ml-packages.txt" mlhub-base-ml)
    fi
    stage_repo=mlhub-workspace-ml-stage
    stage=$stage_repo:$({ cat "$tmp/ml-packages.txt"; echo "$ml_base"; } | hash_of)
    minimal_dockerfile "$stage" "$ml_base" "$tmp/ml-packages.txt"
    # earlier stages (other package lists) are no use any more
    docker image ls --format '{{.Repository}}:{{.Tag}}' "$stage_repo" | grep -vxF "$stage" \
        | xargs -r docker image rm >/dev/null 2>&1 || true
    if [ -n "$tools_pid" ]; then
        wait "$tools_pid" || { log "fetching the ml tools failed (see above)"; exit 1; }
    fi
    flavor_dockerfile "$ml_image" "$stage" "$ws_dir/ml" "$ws_dir/ml/requirements.txt" \
        "$ws_dir/ml/tools/requirements.txt"
fi

if want gpu; then
    flavor_dockerfile "$gpu_image" "$ml_image" "$ws_dir/gpu" "$ws_dir/gpu/requirements.txt"
fi
prune_build_leftovers
