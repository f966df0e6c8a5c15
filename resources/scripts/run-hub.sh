#!/usr/bin/env bash
# Start or stop ML Hub as operators run it: the hub image in a container, in the background.
#   run-hub.sh start|stop        (make run / make stop)
# start: docker run -d --name $HUB_NAME -p ${MLHUB_PUBLIC_PORT:-8080}:8080 --sysctl net.ipv4.ip_forward=0 \
#        -v /var/run/docker.sock:... \
#        -v $HUB_NAME-data:/data [-v $MLHUB_USER_CONFIG:/resources/jupyterhub_user_config.py:ro]
#        [-v $MLHUB_SSL_DIR:/resources/ssl:ro] [-v $MLHUB_USERS_DIR:/resources/users:ro] -e NAME=value for every variable of
#        `python3 -m mlhubspawner.settings passthrough` that is set (the registry settings.VARIABLES: HUB_NAME,
#        SSL_ENABLED, GPU_IDS, ...; never host paths such as MLHUB_DATA_DIR nor what the image sets itself),
#        secrets (`... by-name`: MLHUB_ADMIN_PASSWORD) as -e NAME only, then waits until <base_url>hub/health
#        answers on the public port (the base URL the hub runs with: MLHUB_BASE_URL or c.JupyterHub.base_url,
#        read from the container's /run/mlhub/base-url) and says how the admin logs in (the password generated
#        at the first start, printed once). The data volume
#        outlives the container. Needs python3 (standard library only, no venv).
#        Workspace images: unset MLHUB_WORKSPACE_IMAGE becomes the ml flavor (else minimal) and unset
#        MLHUB_WORKSPACE_IMAGES the flavors built on this engine (minimal, ml, gpu), named in the options form.
# stop:  removes the container; the data volume and the running workspaces stay.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$here/mlhubspawner/_version.py")
image="${MLHUB_HUB_IMAGE:-mlhub:$version}"
name="${HUB_NAME:-mlhub}"
port="${MLHUB_PUBLIC_PORT:-8080}"
scheme=http
case "${SSL_ENABLED:-false}" in true|True|TRUE|1|yes|on) scheme=https ;; esac

# the variables to pass, from the registry in mlhubspawner/settings.py (one name a line)
variables() {
  (cd "$here" && PYTHONPATH="$here" python3 -m mlhubspawner.settings "$1")
}

state() { docker inspect --format '{{.State.Status}}' "$name" 2>/dev/null || true; }

# The base URL the hub runs with, as the container tells its front (mlhubspawner/base_url.py); else /.
base_url() {
  local base
  base=$(docker exec "$name" cat /run/mlhub/base-url 2>/dev/null | head -n 1) || true
  [[ "$base" =~ ^/([A-Za-z0-9_~-][A-Za-z0-9._~-]*/)*$ ]] || base=/
  echo "$base"
}

# The workspace flavors built on this engine (make images, make image-gpu): the default image, when not given, is
# the ml flavor (else minimal), and the form offers every built flavor by its name (minimal, ml, gpu).
workspace_flavors() {
  local flavor built=()
  for flavor in ml=mlhub-workspace-ml minimal=mlhub-workspace gpu=mlhub-workspace-gpu; do
    docker inspect --type image "${flavor#*=}:$version" >/dev/null 2>&1 && built+=("$flavor:$version")
  done
  [[ ${#built[@]} -gt 0 ]] || return 0
  [[ -n "${MLHUB_WORKSPACE_IMAGE:-}" ]] || export MLHUB_WORKSPACE_IMAGE="${built[0]#*=}"
  [[ -n "${MLHUB_WORKSPACE_IMAGES+set}" ]] || export MLHUB_WORKSPACE_IMAGES="$(IFS=,; echo "${built[*]}")"
}

# How the admin logs in (at $1, the hub's URL <public URL><base_url>hub/): the password this container generated
# (logged once, at the hub's first start on this data volume), else MLHUB_ADMIN_PASSWORD's, else the one chosen before.
admin_login() {
  local generated
  generated=$(docker logs "$name" 2>&1 | sed -n 's/.*generated admin password: \([^ ]*\).*/\1/p' | head -n 1)
  if [[ -n "$generated" ]]; then
    echo "First start: log in at ${1}login as 'admin' with the generated password: $generated"
    echo "  (shown once; also in the data volume as /data/admin-password, mode 0600; change it at ${1}change-password)"
  elif [[ -n "${MLHUB_ADMIN_PASSWORD:-}" ]]; then
    echo "Log in at ${1}login as 'admin' with the password in MLHUB_ADMIN_PASSWORD"
  else
    echo "Log in at ${1}login as 'admin' (lost the password? make stop, then MLHUB_ADMIN_PASSWORD=<new one> make run)"
  fi
}

# The allow list's directory (MLHUB_USERS_DIR, for DYNAMIC_WHITELIST_ENABLED) as a real path, checked before
# anything changes. A directory, not the file: an editor's replace-by-rename of dynamic_whitelist.txt then reaches
# the hub, which reads it again at the next login (a file bind mount would keep the old inode).
users_dir() {
  [[ -n "${MLHUB_USERS_DIR:-}" ]] || return 0
  if [[ ! -d "$MLHUB_USERS_DIR" ]]; then
    echo "run-hub.sh: MLHUB_USERS_DIR=$MLHUB_USERS_DIR is not a directory: give the directory that holds" \
      "dynamic_whitelist.txt (mounted read-only at /resources/users)" >&2
    return 1
  fi
  local dir
  dir=$(realpath "$MLHUB_USERS_DIR")
  if [[ "$dir" == *:* ]]; then
    echo "run-hub.sh: MLHUB_USERS_DIR=$dir contains ':', which docker run -v cannot mount: use another directory" >&2
    return 1
  fi
  local enabled="${DYNAMIC_WHITELIST_ENABLED:-false}"
  case "${enabled,,}" in
    true|1|yes|on)
      [[ -f "$dir/dynamic_whitelist.txt" ]] || echo "run-hub.sh: note: $dir has no dynamic_whitelist.txt:" \
        "until it does, only the admins can log in" >&2 ;;
    *) echo "run-hub.sh: note: MLHUB_USERS_DIR is mounted, but the hub reads its allow list only with" \
        "DYNAMIC_WHITELIST_ENABLED=true" >&2 ;;
  esac
  echo "$dir"
}

start() {
  if ! command -v python3 >/dev/null; then
    echo "run-hub.sh: python3 is missing (it reads the variables to pass from mlhubspawner/settings.py);" \
      "install it, e.g. apt-get install -y python3" >&2
    return 1
  fi
  local users_dir
  users_dir=$(users_dir) || return 1
  if [[ "$(state)" == running ]]; then
    if [[ "$(docker inspect --format '{{.Config.Image}}' "$name")" == "$image" ]]; then
      echo "ML Hub is already running (container $name) on $scheme://localhost:$port$(base_url)"
      return 0
    fi
    echo "Replacing container $name (image changed to $image; data and workspaces stay)"
  fi
  [[ -n "$(state)" ]] && docker rm -f "$name" >/dev/null
  workspace_flavors
  # ip_forward=0: the hub container joins every user network and must not route between them
  args=(-d --name "$name" --restart unless-stopped -p "$port:8080" --sysctl net.ipv4.ip_forward=0
        -v /var/run/docker.sock:/var/run/docker.sock -v "$name-data:/data")
  [[ -s "${MLHUB_USER_CONFIG:-}" ]] && args+=(-v "$(realpath "$MLHUB_USER_CONFIG"):/resources/jupyterhub_user_config.py:ro")
  [[ -n "${MLHUB_SSL_DIR:-}" ]] && args+=(-v "$(realpath "$MLHUB_SSL_DIR"):/resources/ssl:ro")
  [[ -n "$users_dir" ]] && args+=(-v "$users_dir:/resources/users:ro")
  local passthrough by_name var
  passthrough=$(variables passthrough) && by_name=" $(variables by-name | tr '\n' ' ') " || {
    echo "run-hub.sh: cannot read the variables to pass from mlhubspawner/settings.py (see above)" >&2
    return 1
  }
  for var in $passthrough; do
    [[ "$var" =~ ^[A-Z][A-Z0-9_]*$ ]] || { echo "run-hub.sh: bad variable name '$var'" >&2; return 1; }
    if [[ "$by_name" == *" $var "* ]]; then
      # a secret by name only: docker reads it from our environment (not shown in the host's process list)
      [[ -n "${!var:-}" ]] && export "${var?}" && args+=(-e "$var")
    else
      [[ -n "${!var+set}" ]] && args+=(-e "$var=${!var}")
    fi
  done
  docker run "${args[@]}" "$image" >/dev/null
  local base deadline=$((SECONDS + 120))
  while (( SECONDS < deadline )); do
    base=$(base_url)  # read again each time: the hub rewrites it once it has read its config
    if curl -fsSk -o /dev/null "$scheme://127.0.0.1:$port${base}hub/health" 2>/dev/null; then
      echo "ML Hub is up on $scheme://localhost:$port$base (container $name; logs: docker logs $name)"
      admin_login "$scheme://localhost:$port${base}hub/"
      return 0
    fi
    if [[ "$(state)" != running ]]; then
      echo "ML Hub exited during start; its last log lines:" >&2
      docker logs --tail 30 "$name" >&2
      return 1
    fi
    sleep 0.5
  done
  echo "ML Hub did not answer on port $port within 120 s; see: docker logs $name" >&2
  return 1
}

stop() {
  if [[ -z "$(state)" ]]; then
    echo "ML Hub is not running"
    return 0
  fi
  docker stop -t 30 "$name" >/dev/null && docker rm "$name" >/dev/null
  echo "ML Hub stopped (data in volume $name-data; workspaces keep running and are found again by 'make run')"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
