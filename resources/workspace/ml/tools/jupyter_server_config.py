"""Browser tools of ML Hub's ml workspace flavor, served by jupyter-server-proxy (installed by install.sh as
/usr/local/etc/jupyter/jupyter_server_config.py).

Every tool is a process the Jupyter server starts on first use and proxies under its own prefix, so each URL is
``/user/<name>/<server>/<tool>/`` and the hub's login protects it like the notebooks (no port is published):

- ``vscode/``: code-server (VS Code) on ``/workspace``, no login of its own, no telemetry, no marketplace;
- ``tensorboard/``: TensorBoard on ``/workspace/logs``;
- ``desktop/``: jupyter-remote-desktop-proxy's noVNC page, its websocket to TigerVNC's unix socket; the session
  is ``desktop/xstartup`` (IceWM and a terminal) instead of the package's xfce4.

Each has a JupyterLab launcher tile and opens in a new browser tab.
"""

import os

TOOLS = "/opt/mlhub/tools"

# read by jupyter-remote-desktop-proxy when the server loads it (after this file)
os.environ.setdefault("JUPYTER_REMOTE_DESKTOP_PROXY_XSTARTUP", f"{TOOLS}/desktop/xstartup")

c = get_config()  # noqa: F821 (defined by Jupyter when it loads this file)
c.ServerProxy.servers.update(
    {
        "vscode": {
            "command": [f"{TOOLS}/bin/mlhub-code-server", "--bind-addr", "127.0.0.1:{port}", "/workspace"],
            "timeout": 60,
            "new_browser_window": True,
            "launcher_entry": {"title": "VS Code", "icon_path": f"{TOOLS}/icons/vscode.svg"},
        },
        "tensorboard": {
            "command": [f"{TOOLS}/bin/mlhub-tensorboard", "{port}", "{base_url}tensorboard"],
            # TensorBoard serves under --path_prefix: it gets the full path
            "absolute_url": True,
            "timeout": 60,
            "new_browser_window": True,
            "launcher_entry": {"title": "TensorBoard", "icon_path": f"{TOOLS}/icons/tensorboard.svg"},
        },
    }
)
