#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info`.
# Uses a running engine if one answers; else, as root on Debian/Ubuntu, installs Debian's docker.io
# (+ iptables) when needed and starts dockerd in the background; else says what to do and exits 1.
# Env: MLHUB_STATE_DIR (default /var/lib/mlhub-dev) holds dockerd.log; DOCKER_WAIT_SECONDS (default 60).
# MLHUB_GPU_STANDIN=1 (set by `make test` only): copy the stand-in `nvidia-container-runtime-hook` and its fake GPU
# inventory (resources/gpu-standin/) into $MLHUB_STATE_DIR/gpu-standin and put that dir on the PATH of the dockerd
# this script starts, so that the engine accepts GPU DeviceRequests on a machine without GPUs and containers see the
# requested fake GPUs in `nvidia-smi`; a dockerd this script started earlier without it is restarted. The hook runs
# per container, so a newer copy takes effect without a restart.
set -euo pipefail

state_dir=${MLHUB_STATE_DIR:-/var/lib/mlhub-dev}
wait_seconds=${DOCKER_WAIT_SECONDS:-60}
log() { printf 'ensure-docker: %s\n' "$*" >&2; }
engine_answers() { command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1; }

standin_dir=""
if [ "${MLHUB_GPU_STANDIN:-}" = 1 ]; then
    standin_dir=${MLHUB_STATE_DIR:-/var/lib/mlhub-dev}/gpu-standin
    mkdir -p "$standin_dir"
    standin_src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../gpu-standin" && pwd)
    # copy to a temporary name, then rename: a container starting meanwhile runs the old or the new hook, whole
    for f in nvidia-container-runtime-hook inventory.csv; do
        cp "$standin_src/$f" "$standin_dir/.$f.new"
        chmod 0644 "$standin_dir/.$f.new"
        [ "$f" = inventory.csv ] || chmod 0755 "$standin_dir/.$f.new"
        mv -f "$standin_dir/.$f.new" "$standin_dir/$f"
    done
fi

# the pid of a dockerd started by this script (it records it), if it still runs
our_pid() {
    local pidfile=${MLHUB_STATE_DIR:-/var/lib/mlhub-dev}/dockerd.pid
    [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && cat "$pidfile"
}
has_standin() { tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | grep -q "^PATH=$standin_dir:"; }

if engine_answers; then
    pid=$(our_pid || true)
    if [ -n "$standin_dir" ] && [ -n "$pid" ] && ! has_standin "$pid"; then
        log "restarting our dockerd (pid $pid) with the GPU stand-in hook"
        kill "$pid"
        for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    else
        log "Docker engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
        # a local dockerd this script did not start (or started with another MLHUB_STATE_DIR): say so, leave it
        other=$(cat /var/run/docker.pid 2>/dev/null || true)
        if [ -n "$standin_dir" ] && [ -z "$pid" ] && [ -n "$other" ] && [ -r "/proc/$other/environ" ] &&
            ! has_standin "$other"; then
            log "warning: the running dockerd (pid $other) does not have $standin_dir first on its PATH:" \
                "it does not run the hook copied there (set MLHUB_STATE_DIR as \`make\` does: \$PWD/.mlhub)"
        fi
        exit 0
    fi
fi

is_debian_like() { [ -r /etc/os-release ] && grep -qiE '^(ID|ID_LIKE)=.*(debian|ubuntu)' /etc/os-release; }
remote_host() { [ -n "${DOCKER_HOST:-}" ] && [ "${DOCKER_HOST}" != "unix:///var/run/docker.sock" ]; }

if [ "$(id -u)" -ne 0 ] || ! is_debian_like || ! command -v apt-get >/dev/null 2>&1 || remote_host; then
    cat >&2 <<EOF
ensure-docker: no Docker engine answers 'docker info'${DOCKER_HOST:+ at DOCKER_HOST=$DOCKER_HOST}.
  - install Docker (e.g. 'apt-get install docker.io' on Debian/Ubuntu, or Docker Engine / Docker Desktop),
  - start the daemon ('systemctl start docker', or 'dockerd &' as root) and make sure this user may use it
    (member of the 'docker' group), or
  - point DOCKER_HOST at a reachable engine.
  Run this script as root on Debian/Ubuntu to have it install and start Debian's docker.io itself.
EOF
    exit 1
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-cache show docker.io >/dev/null 2>&1; then
        log "apt-get update"
        apt-get update -qq >&2
    fi
    log "installing docker.io iptables (apt)"
    if ! apt-get install -y -qq docker.io iptables >&2; then
        log "install failed; retrying after apt-get update"
        apt-get update -qq >&2
        apt-get install -y -qq docker.io iptables >&2
    fi
fi

mkdir -p "$state_dir"
daemon_log="$state_dir/dockerd.log"
pid=""
if [ -s /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    pid=$(cat /var/run/docker.pid)
    log "dockerd already running (pid $pid); waiting for it"
else
    log "starting dockerd (log: $daemon_log)"
    PATH="${standin_dir:+$standin_dir:}$PATH" setsid nohup dockerd >>"$daemon_log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$state_dir/dockerd.pid"
fi

start=$SECONDS
while [ $((SECONDS - start)) -lt "$wait_seconds" ]; do
    if engine_answers; then
        log "Docker engine answers after $((SECONDS - start)) s"
        exit 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        log "dockerd exited"
        break
    fi
    sleep 1
done

log "Docker engine did not answer within ${wait_seconds} s; tail of $daemon_log:"
tail -n 30 "$daemon_log" >&2 || true
exit 1
