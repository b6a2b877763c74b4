#!/usr/bin/env python3
"""`make bench-images`: figures for docs/benchmarks.md and docs/images.md, never pass/fail.

1. clean release build time per architecture (own scratch target dir under .tmp/, so the
   shared target/ cache neither helps nor is disturbed), arm64 / amd64 ratio;
2. binary and image sizes, uncompressed (`docker image inspect`) and compressed
   (`docker save | gzip`), against node:20-alpine's size as published on Docker Hub;
3. cold start: `docker run` to the first 200 from /health, and to Docker's `healthy`
   (health interval 100ms here; the shipped interval is 5s).

Env: ORION_TAG (image tag), ORION_BENCH_BUILD_RUNS (default 3), ORION_BENCH_STARTS (default 5).
"""

from __future__ import annotations

import gzip
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from imagetest_util import REPO, SERVICES, free_port, http_get, image, inspect  # noqa: E402

# node:20-alpine, linux/amd64, as published on Docker Hub (the image the original used).
NODE_ALPINE_COMPRESSED = 45_000_000
NODE_ALPINE_UNCOMPRESSED = 130_000_000
TRIPLES = {"amd64": "x86_64-unknown-linux-musl", "arm64": "aarch64-unknown-linux-musl"}


def mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def bench_builds(runs: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU seconds per clean build. CPU time is the steadier figure on a shared
    2-core machine, where another build running at the same time stretches wall time."""
    subprocess.run(["cargo", "fetch", "--locked"], cwd=REPO, check=True)
    times: dict[str, list[float]] = {a: [] for a in TRIPLES}
    cpu: dict[str, list[float]] = {a: [] for a in TRIPLES}
    scratch = REPO / ".tmp" / "bench-images"
    for i in range(runs):
        # alternate the order so neither arch always profits from a warm page cache
        order = list(TRIPLES) if i % 2 == 0 else list(reversed(TRIPLES))
        for arch in order:
            tdir = scratch / arch
            shutil.rmtree(tdir, ignore_errors=True)
            cmd = ["cargo", "auditable", "build", "--release", "--locked", "--target", TRIPLES[arch],
                   "-p", "orion-api", "-p", "orion-worker"]
            t0, c0 = time.monotonic(), children_cpu()
            subprocess.run(cmd, cwd=REPO, env={**os.environ, "CARGO_TARGET_DIR": str(tdir)}, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[arch].append(time.monotonic() - t0)
            cpu[arch].append(children_cpu() - c0)
            print(f"  build {arch}: {times[arch][-1]:.1f}s wall, {cpu[arch][-1]:.1f}s CPU", flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    return times, cpu


def compressed_size(ref: str) -> int:
    saved = subprocess.run(["docker", "save", ref], capture_output=True, check=True).stdout
    return len(gzip.compress(saved, compresslevel=6))


def cold_start(svc: str, runs: int) -> tuple[float, float]:
    port = SERVICES[svc][1]
    to_http, to_healthy = [], []
    for _ in range(runs):
        host_port = free_port()
        t0 = time.monotonic()
        cid = subprocess.run(["docker", "run", "-d", "--read-only", "--cap-drop", "ALL", "--health-interval",
                              "100ms", "-p", f"127.0.0.1:{host_port}:{port}", image(svc)],
                             capture_output=True, text=True, check=True).stdout.strip()
        try:
            t_http = None
            while time.monotonic() - t0 < 30:
                if t_http is None:
                    try:
                        if http_get(f"http://127.0.0.1:{host_port}/health", timeout=0.5)[0] == 200:
                            t_http = time.monotonic() - t0
                    except OSError:
                        pass
                if inspect(cid, "{{.State.Health.Status}}") == "healthy":
                    to_healthy.append(time.monotonic() - t0)
                    break
                time.sleep(0.005)
            to_http.append(t_http if t_http is not None else float("nan"))
        finally:
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
    return statistics.median(to_http), statistics.median(to_healthy)


def main() -> None:
    build_runs = int(os.environ.get("ORION_BENCH_BUILD_RUNS", "3"))
    starts = int(os.environ.get("ORION_BENCH_STARTS", "5"))
    print(f"bench-images: clean release builds ({build_runs} run(s) per arch, {os.cpu_count()} cores)")
    builds, cpu = bench_builds(build_runs)
    amd, arm = statistics.median(builds["amd64"]), statistics.median(builds["arm64"])
    amd_cpu, arm_cpu = statistics.median(cpu["amd64"]), statistics.median(cpu["arm64"])

    print("\n| | amd64 | arm64 |\n|---|---|---|")
    print(f"| clean build of both binaries, wall (median of {build_runs}) | {amd:.1f} s | {arm:.1f} s ({arm / amd:.2f}x) |")
    print(f"| clean build of both binaries, CPU (user+sys) | {amd_cpu:.1f} s | {arm_cpu:.1f} s ({arm_cpu / amd_cpu:.2f}x) |")
    for svc in SERVICES:
        sizes = [mb((REPO / "dist" / a / f"orion-{svc}").stat().st_size) for a in TRIPLES]
        print(f"| orion-{svc} binary | {sizes[0]} | {sizes[1]} |")

    print(f"\n| image ({os.environ.get('ORION_HOST_ARCH', 'host')}) | uncompressed | compressed (docker save, gzip) "
          f"| vs node:20-alpine | cold start: /health 200 | cold start: Docker healthy |")
    print("|---|---|---|---|---|---|")
    for svc in SERVICES:
        unc = int(inspect(image(svc), "{{.Size}}"))
        comp = compressed_size(image(svc))
        http, healthy = cold_start(svc, starts)
        print(f"| orion-{svc} | {mb(unc)} | {mb(comp)} | {NODE_ALPINE_COMPRESSED / comp:.0f}x smaller compressed, "
              f"{NODE_ALPINE_UNCOMPRESSED / unc:.0f}x uncompressed | {http * 1000:.0f} ms | {healthy * 1000:.0f} ms |")
    print(f"| node:20-alpine (published on Docker Hub) | ~{mb(NODE_ALPINE_UNCOMPRESSED)} | ~{mb(NODE_ALPINE_COMPRESSED)} | | | |")
    print(f"\ncold start: median of {starts} `docker run -d` (container create + start) to the first answer; "
          "healthy = first passing HEALTHCHECK at a 100ms interval.")


if __name__ == "__main__":
    main()
