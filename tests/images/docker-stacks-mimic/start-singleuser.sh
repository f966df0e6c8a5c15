#!/bin/bash
# docker-stacks mimic: jupyterhub-singleuser through start.sh; --ip=0.0.0.0 unless given, the port is
# JUPYTERHUB_SERVICE_URL's (the hub's)
set -e
case " $* " in
    *" --ip="*) ;;
    *) set -- --ip=0.0.0.0 "$@" ;;
esac
exec /usr/local/bin/start.sh jupyterhub-singleuser "$@"
