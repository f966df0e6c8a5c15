#!/bin/bash
# docker-stacks mimic: as root, adapt the home (CHOWN_HOME) and drop to NB_UID:NB_GID; as anyone else, say
# which root-only settings are ignored and run the command as is
set -e
NB_USER=${NB_USER:-jovyan}
NB_UID=${NB_UID:-1000}
NB_GID=${NB_GID:-100}
if [ "$(id -u)" = 0 ]; then
    if [ "$NB_USER" != jovyan ]; then
        echo "start.sh: NB_USER=$NB_USER: renaming jovyan is not mimicked" >&2
    fi
    if [ "${CHOWN_HOME:-}" = yes ] || [ "${CHOWN_HOME:-}" = 1 ]; then
        chown "$NB_UID:$NB_GID" /home/jovyan
    fi
    echo "start.sh: running as $NB_UID:$NB_GID" >&2
    exec setpriv --reuid="$NB_UID" --regid="$NB_GID" --init-groups env HOME=/home/jovyan "$@"
fi
if [ "$NB_USER" != jovyan ] || [ "$(id -u)" != "$NB_UID" ] || [ -n "${CHOWN_HOME:-}" ]; then
    echo "start.sh: NB_USER, NB_UID and CHOWN_HOME need the container to start as root; running as $(id -u):$(id -g)" >&2
fi
cd "$HOME"
exec "$@"
