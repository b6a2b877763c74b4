# API benchmark (make bench): orion-api against nginx-light under wrk (rounds) and hey (fixed rate).
BENCH_TARGETS += bench-api

.PHONY: bench-api
bench-api: deps build ## benchmark: orion-api vs nginx (GET /health: wrk rounds at 64 and 128 connections, hey at a fixed rate)
	python3 bench/api_bench.py
