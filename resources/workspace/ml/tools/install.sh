#!/bin/sh
# Installs the ml flavor's browser tools at image build, as root (the ml Dockerfile copies this directory to
# /opt/mlhub/tools, then runs this): VS Code in the browser (code-server, put into the build context by fetch.sh on
# the host), a desktop (TigerVNC + IceWM through jupyter-remote-desktop-proxy: packages.txt, requirements.txt) and
# TensorBoard, each registered with jupyter-server-proxy by jupyter_server_config.py. Fails the build when one of
# them is missing or does not start.
set -eu
tools=/opt/mlhub/tools
venv=/opt/mlhub/venv

install -d -m 0755 /usr/local/etc/jupyter
install -m 0644 "$tools/jupyter_server_config.py" /usr/local/etc/jupyter/jupyter_server_config.py

# code-server with its own Node.js 24; `code-server` on PATH (e.g. `code-server --install-extension x.vsix`)
"$tools/code-server/lib/node" --version
"$tools/bin/mlhub-code-server" --version
ln -sf "$tools/bin/mlhub-code-server" /usr/local/bin/code-server
# VS Code's AI chat (and the side bar it opens in) needs a cloud account that workspaces never reach: off in the
# home's skeleton (copied into a home that lacks it: a user's own settings.json wins and may turn it back on)
install -d -m 0755 /etc/skel/.local/share/code-server/User
printf '{\n  "chat.disableAIFeatures": true,\n  "workbench.secondarySideBar.defaultVisibility": "hidden"\n}\n' \
    >/etc/skel/.local/share/code-server/User/settings.json

# the desktop: TigerVNC's vncserver, the session's programs, the proxy's Python side
for program in vncserver Xtigervnc icewm-session xterm xauth; do
    command -v "$program" >/dev/null || { echo "install.sh: $program missing (tools/packages.txt)" >&2; exit 1; }
done
"$venv/bin/python" -c 'import jupyter_server_proxy, jupyter_remote_desktop_proxy, tensorboard'

# the desktop's entry point (jupyter-remote-desktop-proxy) and our vscode/tensorboard entries load
"$venv/bin/python" - <<'PY'
from importlib.metadata import entry_points

from traitlets.config import PyFileConfigLoader

assert "desktop-websockify" in {e.name for e in entry_points(group="jupyter_serverproxy_servers")}
config = PyFileConfigLoader("jupyter_server_config.py", path="/usr/local/etc/jupyter").load_config()
servers = config.ServerProxy.servers.get_value({})
assert {"vscode", "tensorboard"} <= set(servers), servers
PY
echo "install.sh: code-server, desktop and TensorBoard installed"
