# The worker. Its unit and integration tests (tests against the real binary included) run in the
# lead's `cargo test --workspace --target $(MUSL_TARGET)`; this file only adds the benchmark.
#
#   make bench-worker   lateness of real runs over minute boundaries, idle CPU per minute, RSS
#                       (figures, not pass/fail; about BENCH_WORKER_MINUTES + 1 minutes)

BENCH_WORKER_MINUTES ?= 3

BENCH_TARGETS += bench-worker

.PHONY: bench-worker

bench-worker: build ## worker: run lateness (p50/p99/max), idle CPU per minute and RSS of the shipped binary
	python3 worker/bench/bench_worker.py \
	  --binary $(CURDIR)/dist/amd64/orion-worker \
	  --minutes $(BENCH_WORKER_MINUTES)
