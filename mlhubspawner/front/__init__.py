"""The hub image's front door: nginx + sslh + sshd + supervisord around JupyterHub (see ``entrypoint``)."""
