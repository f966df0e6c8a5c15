# shellcheck shell=sh disable=SC1090
# /etc/profile.d/mlhub-workspace.sh: login shells (SSH sessions, JupyterLab terminals) get the workspace's env
# back after /etc/profile set its own PATH: the venv first on PATH, then ~/.local/bin (`pip install --user`
# scripts). See /usr/local/bin/mlhub-ssh-session and start-workspace.sh.
if [ -n "${BASH_VERSION:-}" ] && [ -n "${MLHUB_SSH_SESSION_ENV:-}" ] && [ -r "$MLHUB_SSH_SESSION_ENV" ]; then
    . "$MLHUB_SSH_SESSION_ENV"
fi
case ":$PATH:" in
    *:/opt/mlhub/venv/bin:*) ;;
    *) PATH=/opt/mlhub/venv/bin:$PATH; export PATH ;;
esac
case ":$PATH:" in
    *":$HOME/.local/bin:"*) ;;
    *) PATH=/opt/mlhub/venv/bin:$HOME/.local/bin:${PATH#/opt/mlhub/venv/bin:}; export PATH ;;
esac
# shells the workspace's server or sshd did not start (docker/kubectl exec): the thread variables
if { [ -z "${OMP_NUM_THREADS:-}" ] || [ -z "${MKL_NUM_THREADS:-}" ] || [ -z "${OPENBLAS_NUM_THREADS:-}" ]; } \
    && [ -r /usr/local/lib/mlhub/mlhub_threads.py ]; then
    for mlhub_var in $(python3 -I -S /usr/local/lib/mlhub/mlhub_threads.py 2>/dev/null); do
        case $mlhub_var in
            [A-Z]*=[0-9]*) export "$mlhub_var" ;;
        esac
    done
    unset mlhub_var
fi
