# shellcheck shell=sh disable=SC1090
# /etc/profile.d/mlhub-workspace.sh: login shells of SSH sessions get the workspace's env back (with the venv
# first on PATH) after /etc/profile set its own PATH. See /usr/local/bin/mlhub-ssh-session.
if [ -n "${BASH_VERSION:-}" ] && [ -n "${MLHUB_SSH_SESSION_ENV:-}" ] && [ -r "$MLHUB_SSH_SESSION_ENV" ]; then
    . "$MLHUB_SSH_SESSION_ENV"
fi
case ":$PATH:" in
    *:/opt/mlhub/venv/bin:*) ;;
    *) PATH=/opt/mlhub/venv/bin:$PATH; export PATH ;;
esac
