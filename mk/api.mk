# API benchmark (make bench): orion-api against nginx-light under wrk.
BENCH_TARGETS += bench-api

.PHONY: bench-api
bench-api: deps build ## benchmark: orion-api vs nginx (wrk, GET /health, 64 connections, 10 s)
	python3 bench/api_bench.py
