"""ML Hub cleanup service (a JupyterHub-managed service); built in a later step."""
