"""Your JupyterHub/ML Hub settings: loaded last by jupyterhub_config.py, so they always win.

Examples (see the README for every setting):

    c.MLHubDockerSpawner.workspace_images = ["mltooling/ml-workspace:0.13.2"]
    c.MLHubDockerSpawner.max_cpu_limit = 8
    c.MLHubDockerSpawner.max_mem_limit = "32G"
    c.MLHubDockerSpawner.max_days_to_live = 30
"""
