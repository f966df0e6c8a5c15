# ML Hub: JupyterHub + configurable-http-proxy + nginx + sslh + sshd under supervisord, one public port (8080).
#   docker run -p 8080:8080 --sysctl net.ipv4.ip_forward=0 -v /var/run/docker.sock:/var/run/docker.sock \
#       -v mlhub-data:/data mlhub:<version>
# Also runs as a user other than root with a read-only root filesystem (the Helm chart): the hub as
# mlhub 1000:1000, the proxy as tunnel 1001:1001; writable /run/mlhub, /tmp and $MLHUB_DATA_DIR only.
# Built by resources/scripts/build-hub-image.sh (offline: BASE_IMAGE is a Debian base made with mmdebstrap
# that already holds resources/hub/packages.txt; with a registry, BASE_IMAGE=debian:bookworm works too).
# The build context holds this file, packages.txt, requirements.txt, wheels/ (all Python packages, ours
# included: no index is used), jupyterhub_config.py, jupyterhub_user_config.py and front-authorized-keys.
ARG BASE_IMAGE=debian:bookworm

FROM ${BASE_IMAGE} AS base
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY packages.txt /tmp/packages.txt
# Upstream bases lack the packages: install them only when missing (the offline base needs no network).
RUN if [ "$(command -v supervisord sslh nginx sshd configurable-http-proxy | wc -l)" -ne 5 ]; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
           $(grep -v '^[[:space:]]*#' /tmp/packages.txt) \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && rm -f /tmp/packages.txt

# Separate stage so the wheels never become a layer of the final image.
FROM base AS venv
LABEL mlhub.build-stage=venv
COPY requirements.txt /tmp/mlhub/requirements.txt
COPY wheels/ /tmp/mlhub/wheels/
RUN python3 -m venv /opt/mlhub/venv \
    && /opt/mlhub/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-index \
       --find-links /tmp/mlhub/wheels -r /tmp/mlhub/requirements.txt \
    && /opt/mlhub/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-index --no-deps \
       /tmp/mlhub/wheels/mlhub-*.whl \
    && /opt/mlhub/venv/bin/jupyterhub --version

FROM base
ARG VERSION=dev
ARG WORKSPACE_IMAGE=mlhub-workspace:${VERSION}
LABEL org.opencontainers.image.title="ML Hub" \
      org.opencontainers.image.description="Multi-user hub for ML workspaces (JupyterHub, Docker or Kubernetes)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=venv /opt/mlhub/venv /opt/mlhub/venv
COPY jupyterhub_config.py /etc/mlhub/jupyterhub_config.py
COPY jupyterhub_user_config.py /resources/jupyterhub_user_config.py
COPY front-authorized-keys /usr/local/libexec/mlhub/front-authorized-keys

# `tunnel` (1001:1001): the jump host's only account (no shell; '*' = no password, not locked for sshd);
# the chart's proxy pod runs as it (sshd not root can only log in its own account).
# `mlhub` (1000:1000): the chart's hub pod runs as it. Neither has a home: not root, the entrypoint sets
# HOME=/tmp. `mlhub-keys`: runs the AuthorizedKeysCommand when root (Docker mode).
# Host keys are made per hub in /data (or mounted by the chart), never baked in.
RUN groupadd --gid 1001 tunnel \
    && useradd --uid 1001 --gid 1001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
       -p '*' tunnel \
    && groupadd --gid 1000 mlhub \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mlhub \
    && useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mlhub-keys \
    && chmod 0755 /usr/local/libexec/mlhub/front-authorized-keys \
    && rm -f /etc/ssh/ssh_host_* /etc/nginx/sites-enabled/default \
    && mkdir -p /data /resources/ssl /run/sshd

ENV PATH=/opt/mlhub/venv/bin:${PATH} \
    NODE_PATH=/usr/share/nodejs \
    HUB_NAME=mlhub \
    EXECUTION_MODE=docker \
    SSL_ENABLED=false \
    START_NGINX=true \
    START_SSH=true \
    START_JHUB=true \
    START_CHP=false \
    MLHUB_DATA_DIR=/data \
    MLHUB_WORKSPACE_IMAGE=${WORKSPACE_IMAGE} \
    MLHUB_VERSION=${VERSION}

VOLUME /data
EXPOSE 8080
# the hub's <base_url>hub/health on loopback, under the base URL it runs with (MLHUB_BASE_URL or its config)
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python3", "-m", "mlhubspawner.front.health"]
ENTRYPOINT ["/usr/bin/tini", "-g", "--"]
CMD ["mlhub-entrypoint"]
