# Shell functions shared by the image build scripts (sourced, not run). Set `log_prefix` before sourcing.

log() { printf '%s: %s\n' "${log_prefix:-build}" "$*" >&2; }
label_of() { docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }
hash_of() { sha256sum | cut -c1-12; }
# Run a noisy command with its output in a log file; show the log's tail if it fails.
quiet() {
    local logfile=$1; shift
    if ! "$@" >"$logfile" 2>&1; then
        log "FAILED: $*"; tail -n 40 "$logfile" >&2; return 1
    fi
}
# Serialize concurrent builds (make test + make run) on this machine.
build_lock() { if exec 9>"${TMPDIR:-/tmp}/mlhub-build-images.lock"; then flock 9; fi; }
# Drop what a build left dangling: its install stage and the image it replaced (ours only, by label).
prune_build_leftovers() {
    docker image prune -f --filter label=mlhub.build-stage >/dev/null
    docker image prune -f --filter label=mlhub.build-hash >/dev/null
}
