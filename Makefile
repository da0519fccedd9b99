# The two commands of the README: `make run` and `make test`. Both set up what they need first.
# `make unit` is for contributors: the unit tests, without root and without apt.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
# BPF build tools; containerd and busybox-static for the CRI test (tests/unit/test_k8s_cri.py)
APT_PKGS := clang-19 llvm-19 libbpf-dev libbpf1 bpftool libelf-dev gcc make libcap2-bin containerd busybox-static
# Only for `make test`: chromium renders `tetra processtree --html` (tests/e2e/test_processtree.py)
TEST_APT_PKGS := chromium
EXPORT ?= /var/log/tetragon/tetragon.log
ARGS ?=

.PHONY: setup deps test-deps venv package bpf run test unit lint bench clean

setup: deps venv

# The Debian packages above; apt runs only when one of them is missing.
define apt_install
	@missing=$$(for p in $(1); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing" $$missing; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
endef

deps:
	$(call apt_install,$(APT_PKGS))

test-deps:
	$(call apt_install,$(TEST_APT_PKGS))

venv: deps
	@$(MAKE) --no-print-directory package

# The package into .venv with what is installed, no apt. Its build compiles bpf/*.bpf.c (clang-19,
# libbpf-dev) and generates the gRPC modules (hatch_build.py).
package:
	@[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	@# Helm's Go library for tests/unit/test_deploy_helm.py: it declares Python 3.12 but works on 3.11,
	@# which pip accepts only outside the dependency list
	$(VENV)/bin/pip install -q --ignore-requires-python helm-sdkpy==0.1.32

bpf:
	$(MAKE) -C bpf

run: setup
	$(VENV)/bin/tetragon --export-filename $(EXPORT) $(ARGS)

test: setup test-deps
	$(VENV)/bin/python -m pytest -ra tests $(ARGS)

# No root, no apt: builds .venv only when there is none; tests needing root or gcc skip (fail under CI=true).
unit:
	@[ -x $(VENV)/bin/python ] || $(MAKE) --no-print-directory package
	$(VENV)/bin/python -m pytest -ra tests/unit $(ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

bench: setup
	$(VENV)/bin/python bench/exec_storm.py $(ARGS)

clean:
	$(MAKE) -C bpf clean
	rm -rf build dist src/tetragon/api/gen
