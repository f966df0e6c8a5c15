# ML Hub hub image — placeholder.
# The one-container deployment (nginx + sshd + configurable-http-proxy + JupyterHub + cleanup service under
# supervisord, one public port) is built in a later step. Until then, run the hub on the Docker host with
# `make run`; the workspace image is built from resources/workspace/Dockerfile by resources/scripts/build-images.sh.
ARG BASE_IMAGE=debian:bookworm
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="ML Hub (placeholder)"
CMD ["sh", "-c", "echo 'The ML Hub hub image is not built yet: use make run on the Docker host.'; exit 1"]
