# Release binaries for both architectures, cross-compiled natively (no QEMU):
# rust-lld links both musl targets (.cargo/config.toml), so the arm64 build is an
# ordinary cross-compile that takes about as long as the amd64 one.
#
#   make build       ->  dist/amd64/orion-{api,worker}, dist/arm64/orion-{api,worker}
#   make build-host  ->  dist/<this machine's arch>/orion-{api,worker} only (what `make images`
#                        and `make up` need): the same command for one target, so the same
#                        binaries, and cargo reuses either build for the other
#
# `cargo auditable` embeds the resolved dependency tree (a compressed .dep-v0 ELF
# section, a few KiB) so Trivy, Syft and `cargo audit bin` can list every crate
# inside a stripped static binary that has no package database to read.

CARGO_AUDITABLE_VERSION := 0.7.7
# Where cargo puts its output; honours CARGO_TARGET_DIR like cargo itself does.
BUILD_TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
BUILD_BINARIES   := orion-api orion-worker
# Docker's TARGETARCH names <- Rust target triples.
DIST_amd64 := $(MUSL_TARGET)
DIST_arm64 := $(ARM_TARGET)
# This machine's architecture in Docker's names (amd64, arm64), as used in dist/.
HOST_ARCH  := $(shell uname -m | sed -e 's/^x86_64$$/amd64/' -e 's/^aarch64$$/arm64/')

.PHONY: build build-host cargo-auditable

cargo-auditable: ## install the pinned cargo-auditable when missing or at another version
	@if cargo install --list | grep -qx 'cargo-auditable v$(CARGO_AUDITABLE_VERSION):'; then \
	  :; \
	else \
	  echo "build: installing cargo-auditable $(CARGO_AUDITABLE_VERSION)"; \
	  cargo install --locked cargo-auditable@$(CARGO_AUDITABLE_VERSION); \
	fi

build: rust-targets cargo-auditable ## static release binaries (amd64+arm64, auditable) into dist/
	cargo auditable build --release --locked \
	  --target $(MUSL_TARGET) --target $(ARM_TARGET) \
	  $(addprefix -p ,$(BUILD_BINARIES))
	@for arch in amd64 arm64; do \
	  case $$arch in amd64) triple=$(DIST_amd64);; arm64) triple=$(DIST_arm64);; esac; \
	  install -d dist/$$arch; \
	  for bin in $(BUILD_BINARIES); do \
	    install -m 0755 "$(BUILD_TARGET_DIR)/$$triple/release/$$bin" "dist/$$arch/$$bin"; \
	  done; \
	done
	@ls -l dist/amd64 dist/arm64 | sed 's/^/build: /'

build-host: rust-targets cargo-auditable ## static release binaries for this machine's architecture only, into dist/<arch>/
	@test -n "$(DIST_$(HOST_ARCH))" || { echo "build-host: no musl target for this machine ($(HOST_ARCH)): amd64 and arm64 only" >&2; exit 1; }
	cargo auditable build --release --locked --target $(DIST_$(HOST_ARCH)) \
	  $(addprefix -p ,$(BUILD_BINARIES))
	@install -d dist/$(HOST_ARCH)
	@for bin in $(BUILD_BINARIES); do \
	  install -m 0755 "$(BUILD_TARGET_DIR)/$(DIST_$(HOST_ARCH))/release/$$bin" "dist/$(HOST_ARCH)/$$bin"; \
	done
