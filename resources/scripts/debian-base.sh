#!/usr/bin/env bash
# Make (or find) an offline Debian base image holding the packages listed in a file, and print its name.
#   debian-base.sh <packages file> <image repository>   →  prints <repository>:bookworm-<hash of the list>
# The root filesystem comes from Debian's packages with mmdebstrap, then `docker import`; no image registry
# is needed. Skipped when the image with the same content hash exists (label mlhub.build-hash).
# With MLHUB_UPSTREAM_BASE set (e.g. debian:bookworm where a registry answers) that image is printed instead
# and the Dockerfiles install the packages themselves. MLHUB_FORCE_BUILD=1 ignores the cache.
set -euo pipefail

packages_file=$1
repository=$2
suite=bookworm

log_prefix=debian-base
# shellcheck source=image-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/image-lib.sh"

if [ -n "${MLHUB_UPSTREAM_BASE:-}" ]; then
    log "upstream base $MLHUB_UPSTREAM_BASE (no mmdebstrap)"
    echo "$MLHUB_UPSTREAM_BASE"
    exit 0
fi

packages=$(grep -v '^[[:space:]]*#' "$packages_file" | tr -s '[:space:]' ',' | sed 's/^,//; s/,$//')
hash=$({ echo "$suite"; grep -v '^[[:space:]]*#' "$packages_file"; } | hash_of)
image=$repository:$suite-$hash
if [ "$(label_of "$image" mlhub.build-hash)" = "$hash" ] && [ -z "${MLHUB_FORCE_BUILD:-}" ]; then
    log "$image exists, skipping"
    echo "$image"
    exit 0
fi

if ! command -v mmdebstrap >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || { log "mmdebstrap missing: install it, or set MLHUB_UPSTREAM_BASE"; exit 1; }
    log "installing mmdebstrap (apt)"
    apt-cache show mmdebstrap >/dev/null 2>&1 || apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >&2
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mlhub-base.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log "mmdebstrap $suite [$packages] (Debian mirror; ~1 min)"
start=$SECONDS
# Drop docs/man pages (keep copyright files) to keep the image small.
quiet "$tmp/mmdebstrap.log" mmdebstrap --variant=apt --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    "$suite" "$tmp/base.tar" </dev/null
docker import --change "LABEL mlhub.build-hash=$hash" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' "$tmp/base.tar" "$image" >/dev/null
log "built $image in $((SECONDS - start)) s"
echo "$image"
