# API benchmark (make bench): orion-api against nginx-light under wrk (rounds) and hey (fixed rate).
BENCH_TARGETS += bench-api

.PHONY: bench-api
bench-api: deps build ## benchmark: orion-api vs nginx and tiny_http alone (GET /health: wrk rounds at 64 and 128 connections, hey at a fixed rate)
	cargo build --locked --release --target $(MUSL_TARGET) -p orion-api --example bare_tiny_http
	python3 bench/api_bench.py
