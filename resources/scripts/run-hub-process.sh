#!/usr/bin/env bash
# Developer mode: JupyterHub as a process on this host (no nginx/sshd front), in the background:
#   run-hub-process.sh start|stop   (make run-dev / make stop-dev)
# Uses MLHUB_STATE_DIR (logs, pid) and the MLHUB_* / HUB_NAME variables of jupyterhub_config.py. Ready when
# <base_url>hub/health answers, the base URL being the one the hub logs ("JupyterHub is now running at ...":
# MLHUB_BASE_URL or c.JupyterHub.base_url).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
state="${MLHUB_STATE_DIR:-$here/.mlhub}"
pidfile="$state/hub.pid"
log="$state/hub.log"
port="${MLHUB_PORT:-8080}"
mkdir -p "$state"

running() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

# The path of the URL the hub says it runs at (its base URL), once it has said so; else nothing.
logged_base_url() {
  local base
  base=$(sed -n 's#.*JupyterHub is now running at [a-z]*://[^/]*\(/[^ ]*\).*#\1#p' "$log" | tail -n 1)
  [[ "$base" =~ ^/([A-Za-z0-9_~-][A-Za-z0-9._~-]*/)*$ ]] && echo "$base"
  return 0
}

start() {
  if running; then
    echo "ML Hub is already running (pid $(cat "$pidfile")) on http://localhost:$port"
    return 0
  fi
  cd "$state"
  setsid nohup jupyterhub -f "$here/jupyterhub_config.py" >"$log" 2>&1 < /dev/null &
  echo $! >"$pidfile"
  local base deadline=$((SECONDS + 60))
  while (( SECONDS < deadline )); do
    base=$(logged_base_url)
    if [[ -n "$base" ]] && curl -fsS -o /dev/null "http://127.0.0.1:$port${base}hub/health" 2>/dev/null; then
      echo "ML Hub is up on http://localhost:$port$base (log: $log)"
      generated=$(sed -n 's/.*generated admin password: \([^ ]*\).*/\1/p' "$log" | head -n 1)
      if [[ -n "$generated" ]]; then
        echo "First start: log in at http://localhost:$port${base}hub/login as 'admin' with the generated password: $generated"
      else
        echo "Log in at http://localhost:$port${base}hub/login as 'admin' (MLHUB_ADMIN_PASSWORD, or the password generated at the first start)"
      fi
      return 0
    fi
    if ! running; then
      echo "ML Hub exited during start; the end of $log:" >&2
      tail -n 30 "$log" >&2
      return 1
    fi
    sleep 0.5
  done
  echo "ML Hub did not answer on port $port within 60 s; see $log" >&2
  return 1
}

stop() {
  if ! running; then
    echo "ML Hub is not running"
    rm -f "$pidfile"
    return 0
  fi
  pid="$(cat "$pidfile")"
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  rm -f "$pidfile"
  echo "ML Hub stopped (workspaces keep running; stop them from the hub before 'make stop' if you want them gone)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
