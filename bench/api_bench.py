#!/usr/bin/env python3
"""Benchmark: orion-api (the shipped musl binary) against nginx-light, side by side.

wrk drives GET /health at 64 connections for 10 s against each server in the
same run; nginx serves the same JSON body through `return 200` with its access
log on, and the API runs with per-request logging on (LOG_LEVEL=debug, because
probes log at debug) into a file, as nginx does. Prints requests/s, the ratio,
p50/p99, and the API's RSS idle and under load. Figures, not pass/fail.

The build machine is a shared VM whose speed drifts by tens of percent within a
minute, so the two servers are measured in alternating rounds (BENCH_ROUNDS,
default 3; nginx then the API, each round) and the summary is the median of
the per-round figures: each ratio compares two runs seconds apart.
"""
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("ORION_API_BIN", os.path.join(ROOT, "dist", "amd64", "orion-api"))
DURATION = os.environ.get("BENCH_DURATION", "10s")
CONNECTIONS = os.environ.get("BENCH_CONNECTIONS", "64")
THREADS = os.environ.get("BENCH_WRK_THREADS", "2")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return r.read()
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"bench: {url} did not answer")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def to_ms(v):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", v)
    if not m:
        raise SystemExit(f"bench: cannot parse wrk latency {v!r}")
    n, unit = float(m.group(1)), m.group(2)
    return {"us": n / 1000, "ms": n, "s": n * 1000, "m": n * 60000}[unit]


def wrk(url):
    out = subprocess.run(
        ["wrk", "-t", THREADS, "-c", CONNECTIONS, "-d", DURATION, "--latency", url],
        check=True, capture_output=True, text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99,
            "non2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": sock.group(1) if sock else "none"}


def main():
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            raise SystemExit(f"bench: {tool} missing (make deps installs it)")
    if not os.path.exists(BIN):
        raise SystemExit(f"bench: {BIN} missing (make build)")
    tmp = tempfile.mkdtemp(prefix="orion-bench-")
    procs = []
    try:
        # --- orion-api
        api_port = free_port()
        api_log = open(os.path.join(tmp, "api.log"), "wb")
        api = subprocess.Popen(
            [BIN], stdout=api_log, stderr=subprocess.STDOUT,
            env={"PORT": str(api_port), "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "debug"), "NODE_ENV": "production",
                 **({"HTTP_THREADS": os.environ["HTTP_THREADS"]} if os.environ.get("HTTP_THREADS") else {})},
        )
        procs.append(api)
        body = wait_http(f"http://127.0.0.1:{api_port}/health")
        time.sleep(1)
        idle_rss, _ = rss_kib(api.pid)

        # --- nginx with the same body and its access log on
        ng_port = free_port()
        payload = json.dumps(json.loads(body), separators=(",", ":"))
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""
worker_processes auto;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
daemon off;
events {{ worker_connections 1024; }}
http {{
  access_log {tmp}/nginx-access.log;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  server {{
    listen 127.0.0.1:{ng_port};
    location = /health {{ default_type application/json; return 200 '{payload}\\n'; }}
  }}
}}
""")
        nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
        ng = subprocess.Popen([nginx_bin, "-c", conf, "-p", tmp], stderr=subprocess.DEVNULL)
        procs.append(ng)
        wait_http(f"http://127.0.0.1:{ng_port}/health")

        # --- load: alternating rounds, nginx then the API, sampling the API's RSS
        peak = [idle_rss]
        done = threading.Event()

        def sample():
            while not done.is_set():
                try:
                    peak[0] = max(peak[0], rss_kib(api.pid)[0])
                except OSError:
                    pass
                time.sleep(0.1)

        rounds = []
        for _ in range(ROUNDS):
            n = wrk(f"http://127.0.0.1:{ng_port}/health")
            done.clear()
            t = threading.Thread(target=sample)
            t.start()
            a = wrk(f"http://127.0.0.1:{api_port}/health")
            done.set()
            t.join()
            rounds.append((n, a))
        _, hwm = rss_kib(api.pid)
        logged = sum(1 for _ in open(os.path.join(tmp, "api.log"), "rb"))

        def row(name, r):
            return (f"{name:12} {r['rps']:>10.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}  "
                    f"non-2xx {r['non2xx']}, socket {r['socket_errors']}")

        def med(side, key):
            return statistics.median(r[side][key] for r in rounds)

        ratios = [a["rps"] / n["rps"] for n, a in rounds]
        print(f"\nGET /health, wrk -t{THREADS} -c{CONNECTIONS} -d{DURATION}, {ROUNDS} alternating rounds, "
              "same machine, logging on for both")
        print(f"{'':12} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}  errors")
        for i, (n, a) in enumerate(rounds, 1):
            print(row(f"nginx #{i}", n))
            print(row(f"orion-api #{i}", a) + f"  ratio {a['rps'] / n['rps']:.2f}")
        print(f"median: nginx {med(0, 'rps'):.0f} req/s, orion-api {med(1, 'rps'):.0f} req/s")
        print(f"ratio orion-api/nginx: {statistics.median(ratios):.2f} median "
              f"({min(ratios):.2f}-{max(ratios):.2f})  (target >= 0.6)")
        print(f"orion-api p99: {med(1, 'p99_ms'):.2f} ms median  (target <= 5 ms; nginx {med(0, 'p99_ms'):.2f} ms)")
        print(f"orion-api RSS idle: {idle_rss / 1024:.1f} MiB (target <= 4), under load: {peak[0] / 1024:.1f} MiB, "
              f"peak (VmHWM) {hwm / 1024:.1f} MiB (target <= 12)")
        print(f"orion-api log lines written: {logged}")
        print(f"binary: {BIN} ({os.path.getsize(BIN)} bytes)")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
