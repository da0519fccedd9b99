# The two commands of the README: `make run` and `make test`. Both set up what they need first.
# `make unit` is for contributors: the unit tests, without root and without apt.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
APT_PKGS := clang-19 llvm-19 libbpf-dev libbpf1 bpftool libelf-dev gcc make libcap2-bin
EXPORT ?= /var/log/tetragon/tetragon.log
ARGS ?=

.PHONY: setup deps venv package bpf run test unit lint bench clean

setup: deps venv

# Debian build tools for the BPF objects; installed only when something is missing.
deps:
	@if ! command -v clang-19 >/dev/null || ! command -v bpftool >/dev/null || \
	    [ ! -e /usr/include/bpf/bpf_helpers.h ] || ! ldconfig -p | grep -q 'libbpf.so.1 '; then \
		echo "installing $(APT_PKGS)"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PKGS); \
	fi

venv: deps
	@$(MAKE) --no-print-directory package

# The package into .venv with what is installed, no apt. Its build compiles bpf/*.bpf.c (clang-19,
# libbpf-dev) and generates the gRPC modules (hatch_build.py).
package:
	@[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'

bpf:
	$(MAKE) -C bpf

run: setup
	$(VENV)/bin/tetragon --export-filename $(EXPORT) $(ARGS)

test: setup
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
