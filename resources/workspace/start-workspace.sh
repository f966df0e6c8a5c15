#!/bin/bash
# Entry point of the ML Hub workspace image, under tini: make the home, set the thread variables, start sshd
# in the background, exec the command (the image's CMD, jupyterhub-singleuser). sshd is optional: when it
# cannot start, the log says why and the workspace starts all the same.
#
# Home: the image's /home/jovyan is a link to /workspace/.home, on the workspace volume: dotfiles,
# `pip install --user` packages (~/.local, its bin on PATH), Git and tool settings last across stop/start and
# Update. The image's skeleton (/etc/skel) is copied in where files are missing, at the first start and
# whenever an image brings a changed skeleton; nothing in the home is ever overwritten. MLHUB_HOME_DIR puts
# the home elsewhere (HOME is then that directory). When the directory cannot be written (no volume on a
# read-only root filesystem), the home is a new temporary directory, lost at the next start.
# The venv allows user site-packages: `pip install` without root installs there; Python finds the image's
# packages first, then the user's; PATH likewise: the venv's bin, then ~/.local/bin, then the system's.
#
# Threads: mlhub_threads.py derives the CPU count from the cgroup quota and sets MAX_NUM_THREADS (the hub's
# value, never above the quota), OMP_NUM_THREADS, MKL_NUM_THREADS... unless given; the Jupyter server,
# kernels, terminals and SSH sessions inherit them.
#
# sshd runs as the workspace user (jovyan), not root, on port $MLHUB_SSHD_PORT (default 22; Docker >= 20.10
# lets non-root processes bind any port inside a container). It lets in only the keys the owner registered
# with the hub, asked at every login by /usr/local/bin/mlhub-authorized-keys. Files it needs:
#   /workspace/.mlhub/ssh/ssh_host_*_key  host keys, made on the first start and kept with the volume (a
#                                          recreated container keeps its host identity); a temporary
#                                          directory when /workspace is not writable
#   <run dir>/hub-api.env                 hub API URL, server token and owner for mlhub-authorized-keys (0600)
#   <run dir>/session.env                 the env of SSH sessions: this container's, without the hub token
#   <run dir>/authorized-keys.log         why mlhub-authorized-keys denied a login
# <run dir> is /run/mlhub-sshd (0700, made in the image), else a new directory under /tmp.
# Env: MLHUB_SSHD=0 (no sshd), MLHUB_SSHD_PORT (default 22).
set -u

log() { printf 'start-workspace: %s\n' "$*" >&2; }

HOME_DIR=${MLHUB_HOME_DIR:-/workspace/.home}
SKELETON=/etc/skel
THREADS_SCRIPT=/usr/local/lib/mlhub/mlhub_threads.py
VENV_BIN=/opt/mlhub/venv/bin
SSHD=/usr/sbin/sshd
SSHD_CONFIG=/etc/ssh/mlhub/sshd_config
SSH_USER=jovyan
HOST_KEY_DIR=/workspace/.mlhub/ssh
# no RSA: ~1 CPU-second per new workspace; every maintained client speaks ed25519 or ECDSA
HOST_KEY_TYPES=(ed25519 ecdsa)
# never handed to SSH sessions (the hub token stays with the Jupyter server), nor per-session variables
SESSION_ENV_SKIP='^(JUPYTERHUB_API_TOKEN|JPY_API_TOKEN|HOME|PWD|OLDPWD|SHLVL|_|USER|LOGNAME|SHELL|MAIL|TERM|SSH_.*|MLHUB_SSH_SESSION_ENV)$'

run_dir() {
    local dir=/run/mlhub-sshd
    if mkdir -p "$dir" 2>/dev/null && [ -O "$dir" ] && [ ! -L "$dir" ] && chmod 700 "$dir" 2>/dev/null; then
        echo "$dir"
    else
        mktemp -d "${TMPDIR:-/tmp}/mlhub-sshd.XXXXXX"
    fi
}

host_key_dir() {
    local run=$1 dir=$HOST_KEY_DIR
    if mkdir -p "$dir" 2>/dev/null && [ -O "$dir" ] && [ ! -L "$dir" ] && chmod 700 "$dir" 2>/dev/null \
        && [ -w "$dir" ]; then
        echo "$dir"
        return
    fi
    log "sshd: $dir is not usable: host keys in $run/host-keys, new at every container start"
    mkdir -p "$run/host-keys" && echo "$run/host-keys"
}

# Make the missing host keys (atomically: a key file is complete or absent); keep the existing ones.
make_host_keys() {
    local dir=$1 type key
    for type in "${HOST_KEY_TYPES[@]}"; do
        key=$dir/ssh_host_${type}_key
        if [ -s "$key" ]; then
            chmod 600 "$key"
            continue
        fi
        rm -f "$key.new" "$key.new.pub"
        if ssh-keygen -q -t "$type" -N '' -C "mlhub-workspace-$(hostname)" -f "$key.new" </dev/null >/dev/null \
            && chmod 600 "$key.new" && mv -f "$key.new.pub" "$key.pub" && mv -f "$key.new" "$key"; then
            log "sshd: new $type host key $(ssh-keygen -lf "$key.pub" | cut -d' ' -f2)"
        else
            log "sshd: could not make a $type host key in $dir"
            rm -f "$key.new" "$key.new.pub"
        fi
    done
}

write_private() {  # write_private <file>: stdin to a 0600 file, replaced atomically
    local file=$1
    (umask 077 && cat >"$file.new") && chmod 600 "$file.new" && mv -f "$file.new" "$file"
}

start_sshd() {
    local port=${MLHUB_SSHD_PORT:-22} user run keys unprivileged name key
    user=$(id -un 2>/dev/null)
    if [ "$user" != "$SSH_USER" ]; then
        log "sshd: runs as ${user:-uid $(id -u)}, but only $SSH_USER may log in"
        return 1
    fi
    if [ ! -x "$SSHD" ] || [ ! -r "$SSHD_CONFIG" ]; then
        log "sshd: $SSHD or $SSHD_CONFIG missing"
        return 1
    fi
    if [ -z "${JUPYTERHUB_API_URL:-}" ] || [ -z "${JUPYTERHUB_API_TOKEN:-}" ] || [ -z "${JUPYTERHUB_USER:-}" ]; then
        log "sshd: JUPYTERHUB_API_URL, JUPYTERHUB_API_TOKEN or JUPYTERHUB_USER unset: no keys to check logins with"
        return 1
    fi
    if ! [[ $port =~ ^[0-9]+$ ]] || [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
        log "sshd: MLHUB_SSHD_PORT=$port is not a port"
        return 1
    fi
    unprivileged=$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start 2>/dev/null || echo 1024)
    if [ "$(id -u)" -ne 0 ] && [ "$port" -lt "$unprivileged" ]; then
        log "sshd: port $port is privileged here (net.ipv4.ip_unprivileged_port_start=$unprivileged);" \
            "set MLHUB_SSHD_PORT to $unprivileged or above"
        return 1
    fi

    run=$(run_dir) || { log "sshd: no run directory"; return 1; }
    keys=$(host_key_dir "$run") || { log "sshd: no host key directory"; return 1; }
    make_host_keys "$keys"

    printf '%s=%s\n' JUPYTERHUB_API_URL "$JUPYTERHUB_API_URL" JUPYTERHUB_API_TOKEN "$JUPYTERHUB_API_TOKEN" \
        JUPYTERHUB_USER "$JUPYTERHUB_USER" JUPYTERHUB_SSL_CERTFILE "${JUPYTERHUB_SSL_CERTFILE:-}" \
        JUPYTERHUB_SSL_KEYFILE "${JUPYTERHUB_SSL_KEYFILE:-}" JUPYTERHUB_SSL_CLIENT_CA "${JUPYTERHUB_SSL_CLIENT_CA:-}" \
        | write_private "$run/hub-api.env" || { log "sshd: cannot write $run/hub-api.env"; return 1; }
    {
        for name in $(compgen -e); do
            [[ $name =~ $SESSION_ENV_SKIP ]] || printf 'export %s=%q\n' "$name" "${!name}"
        done
        printf 'export HOME=%q\n' "$HOME"  # sshd's is the account's; this one may have moved (setup_home)
    } | write_private "$run/session.env" || log "sshd: cannot write $run/session.env"

    local args=(-D -e -f "$SSHD_CONFIG" -p "$port" -o "PidFile=$run/sshd.pid"
        -o "AuthorizedKeysCommand=/usr/local/bin/mlhub-authorized-keys %u $run/hub-api.env"
        -o "ForceCommand=/usr/local/bin/mlhub-ssh-session $run/session.env")
    for key in "$keys"/ssh_host_*_key; do
        [ -s "$key" ] && args+=(-h "$key")
    done
    # sshd's own env: nothing of the container's (it builds the sessions' env itself)
    local env=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
    if ! "${env[@]}" "$SSHD" -t "${args[@]}" </dev/null; then
        log "sshd: configuration test failed (above)"
        return 1
    fi
    # a subshell that ends at once: sshd is left to tini (PID 1), which reaps it; it logs to our stderr
    ("${env[@]}" "$SSHD" "${args[@]}" </dev/null >&2 &)
    log "sshd: started on port $port for $SSH_USER (host keys in $keys)"
}

# ---- home ------------------------------------------------------------------------------------------
writable_dir() { { [ -d "$1" ] || mkdir -p -- "$1" 2>/dev/null; } && [ -d "$1" ] && [ -w "$1" ] && [ -x "$1" ]; }

# a digest of the skeleton's files: names, sizes and contents (bash globs and two processes: ~3 ms)
skeleton_id() {
    local files=() file
    shopt -s globstar dotglob nullglob
    for file in "$SKELETON"/**; do
        [ -f "$file" ] && files+=("$file")
    done
    shopt -u globstar dotglob nullglob
    if [ ${#files[@]} -eq 0 ]; then
        echo empty
    else
        cksum -- "${files[@]}" | cksum
    fi
}

# Copy the skeleton's files the home lacks, once per skeleton (a file deleted by the user stays deleted
# until an image brings a changed skeleton); never overwrites.
seed_home() {
    local home=$1 id done= stamp=$1/.local/state/mlhub/skeleton
    [ -d "$SKELETON" ] || return 0
    id=$(skeleton_id)
    [ -r "$stamp" ] && read -r done <"$stamp"
    [ "$done" = "$id" ] && return 0
    # -n: existing files are kept (its exit status differs between coreutils releases: not an error)
    cp -R -n --preserve=mode,timestamps "$SKELETON"/. "$home"/ 2>/dev/null
    mkdir -p "${stamp%/*}" 2>/dev/null && printf '%s\n' "$id" >"$stamp" 2>/dev/null
    log "home: skeleton $id copied into $home (existing files kept)"
}

# whether a real path lies on a mount of its own (a volume), not the container's root filesystem
on_volume() {
    local mount
    while read -r _ _ _ _ mount _; do
        [ "$mount" != / ] && { [ "$1" = "$mount" ] || [[ $1 == "$mount"/* ]]; } && return 0
    done </proc/self/mountinfo
    return 1
}

setup_home() {
    local dir=$HOME_DIR real where name
    if writable_dir "$dir"; then
        real=$(readlink -f -- "$dir")
        where="kept on the volume"
        on_volume "$real" || where="not on a volume: kept until the container is replaced"
    else
        name=$(id -un 2>/dev/null) || name=$(id -u)
        dir=$(mktemp -d "${TMPDIR:-/tmp}/home-$name.XXXXXX" 2>/dev/null) || {
            log "home: $HOME_DIR is not writable and there is no temporary directory; HOME=${HOME:-} as given"
            return 1
        }
        real=$dir
        where="$HOME_DIR is not writable: a temporary home, lost at the next start"
    fi
    seed_home "$dir"
    # the image's /home/jovyan links to /workspace/.home: keep that name for it
    if [ "$(readlink -f -- "${HOME:-/}")" != "$real" ]; then
        export HOME=$dir
    fi
    log "home: HOME=$HOME ($where)"
}

# ---- threads ---------------------------------------------------------------------------------------
set_threads() {
    local line set=()
    while IFS= read -r line; do
        if [[ $line =~ ^[A-Z_]+=[0-9]+$ ]]; then
            export "${line?}"
            set+=("$line")
        fi
    done < <(python3 -I -S "$THREADS_SCRIPT")
    log "threads: ${set[*]:-none set}"
}

setup_home
set_threads
[ "$#" -gt 0 ] || set -- jupyterhub-singleuser
# ~/.local/bin (`pip install --user` scripts) right after the venv: the image's Python first, as for imports
case ":$PATH:" in
    *":$HOME/.local/bin:"*) ;;
    *":$VENV_BIN:"*) export PATH=${PATH/"$VENV_BIN"/"$VENV_BIN:$HOME/.local/bin"} ;;
    *) export PATH=$HOME/.local/bin:$PATH ;;
esac

if [ "${MLHUB_SSHD:-1}" != 0 ]; then
    # in the background, left to tini: the Jupyter server does not wait for host keys and sshd
    ( (start_sshd || log "sshd: not started; the workspace runs without SSH") </dev/null & )
fi
exec "$@"
