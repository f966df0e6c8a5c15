#!/bin/bash
# docker-stacks mimic: started by a hub (JUPYTERHUB_API_TOKEN set), hand over to start-singleuser.sh
set -e
if [ -n "${JUPYTERHUB_API_TOKEN:-}" ]; then
    echo "start-notebook.sh: started by JupyterHub, running start-singleuser.sh" >&2
    exec /usr/local/bin/start-singleuser.sh "$@"
fi
exec /usr/local/bin/start.sh jupyter lab --ip=0.0.0.0 --port=8888 "$@"
