#!/usr/bin/env python3
"""Benchmark: orion-api (the shipped musl binary) against nginx-light, side by side.

wrk drives GET /health at 64 and at 128 connections (BENCH_CONNECTIONS, "64,128")
for 5 s (BENCH_DURATION) against each server in the same run; nginx serves the
same JSON body through `return 200` with its access log on, and the API runs
with per-request logging on (LOG_LEVEL=debug, because probes log at debug) into
a file, as nginx does. Every round is printed (requests/s, p50, p99, slowest),
then the medians, the ratios and the API's RSS idle and at 64 connections. Then a
fixed-rate run: hey at 128 connections and about 20 % of nginx's measured
capacity (BENCH_FIXED_SHARE), reporting p99, p99.9 and the slowest request of
each server. Then 3,000 idle keep-alive connections are opened to each server
(BENCH_IDLE; the API and tiny_http with HTTP_MAX_CONNECTIONS and nginx with
worker_connections above it) and a fresh client's GET /health is timed 20 times
beside them, with the servers' RSS. Figures, not pass/fail.

The build machine is a shared VM whose speed drifts by tens of percent within a
minute, so the two servers are measured in alternating rounds (BENCH_ROUNDS,
default 3; nginx then the API, each round and connection count) and the summary
is the median of the per-round figures: each ratio compares two runs seconds
apart. Between rounds the API sits idle while nginx runs, long enough for
tiny_http's spare pool threads to exit (5 s), so each API round starts from a
cold pool, as a burst after a quiet spell does in production.

A third server runs in the same rounds: tiny_http alone (api/examples/bare_tiny_http.rs:
its README's recv/respond loop, the same body, one access-log line per request to a file,
mimalloc, no front, framing checks or metrics). orion-api serves every request through
tiny_http too, behind its front, so the summary gives orion-api's ratio to it (what the
front and our layer cost or save) and tiny_http's own ratio to nginx. BENCH_BARE=0 leaves
it out.

Targets (issue 21): median req/s >= 0.8x tiny_http alone at 64 and 128 connections; p99
<= 10 ms in every round; slowest request at the fixed rate <= 50 ms; RSS <= 12 MiB at 64
connections; with 3,000 idle connections open, a fresh client answered within 50 ms.
"""
import json
import os
import re
import resource
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
DURATION = os.environ.get("BENCH_DURATION", "5s")
CONNECTIONS = [int(c) for c in os.environ.get("BENCH_CONNECTIONS", "64,128").split(",")]
FIXED_CONNECTIONS = int(os.environ.get("BENCH_FIXED_CONNECTIONS", "128"))
FIXED_SHARE = float(os.environ.get("BENCH_FIXED_SHARE", "0.2"))
THREADS = os.environ.get("BENCH_WRK_THREADS", "2")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
BARE_BIN = os.environ.get("BARE_BIN", os.path.join(
    ROOT, "target", "x86_64-unknown-linux-musl", "release", "examples", "bare_tiny_http"))
BARE = os.environ.get("BENCH_BARE", "1") != "0"
IDLE = int(os.environ.get("BENCH_IDLE", "3000"))


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


def wrk(url, connections):
    out = subprocess.run(
        ["wrk", "-t", THREADS, "-c", str(connections), "-d", DURATION, "--latency", url],
        check=True, capture_output=True, text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    slowest = to_ms(re.search(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "max_ms": slowest,
            "non2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": sock.group(1) if sock else "none"}


def hey(url, connections, per_conn_rate):
    """A fixed-rate run; latencies from hey's per-request CSV (seconds)."""
    out = subprocess.run(
        ["hey", "-z", DURATION, "-c", str(connections), "-q", str(per_conn_rate), "-o", "csv", url],
        check=True, capture_output=True, text=True,
    ).stdout
    lat, codes = [], {}
    for line in out.splitlines()[1:]:
        f = line.split(",")
        if len(f) < 7:
            continue
        lat.append(float(f[0]) * 1000)
        codes[f[6]] = codes.get(f[6], 0) + 1
    if not lat:
        raise SystemExit(f"bench: hey got no answer from {url}")
    lat.sort()

    def pct(q):
        return lat[min(len(lat) - 1, int(q * len(lat)))]

    return {"n": len(lat), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "p999_ms": pct(0.999),
            "max_ms": lat[-1], "codes": codes}


def idle_fresh(port, pid):
    """Opens IDLE keep-alive connections (each answered once, then idle),
    then times a fresh client's GET /health 20 times beside them."""
    held = []
    try:
        for _ in range(IDLE):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: b\r\n\r\n")
            held.append(s)
        for s in held:
            got = b""
            while b"\r\n\r\n" not in got:
                got += s.recv(4096)
        times = []
        for _ in range(20):
            t = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
                r.read()
            times.append((time.perf_counter() - t) * 1000)
            time.sleep(0.05)
        rss = rss_kib(pid)[0] if pid else None
        return {"median_ms": statistics.median(times), "max_ms": max(times), "rss_kib": rss}
    finally:
        for s in held:
            s.close()


def main():
    # The idle run holds IDLE sockets in this process.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 2 * IDLE + 1024)), hard))
    for tool in ("wrk", "hey", "nginx"):
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
                 "HTTP_MAX_CONNECTIONS": str(IDLE + 1024),
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
events {{ worker_connections {max(1024, IDLE + 1024)}; }}
worker_rlimit_nofile {2 * IDLE + 4096};
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
        ng_url, api_url = f"http://127.0.0.1:{ng_port}/health", f"http://127.0.0.1:{api_port}/health"

        # --- tiny_http alone, same body, its own access log
        bare_url = None
        if BARE:
            if not os.path.exists(BARE_BIN):
                raise SystemExit(f"bench: {BARE_BIN} missing (make bench-api builds it)")
            bare_port = free_port()
            bare = subprocess.Popen(
                [BARE_BIN], stderr=subprocess.DEVNULL,
                env={"PORT": str(bare_port), "BARE_BODY": body.decode(),
                     "BARE_LOG": os.path.join(tmp, "bare-access.log")},
            )
            procs.append(bare)
            bare_url = f"http://127.0.0.1:{bare_port}/health"
            wait_http(bare_url)

        # --- load: alternating rounds, nginx then the API, sampling the API's RSS
        peak = {c: idle_rss for c in CONNECTIONS}
        done = threading.Event()

        def sample(c):
            while not done.is_set():
                try:
                    peak[c] = max(peak[c], rss_kib(api.pid)[0])
                except OSError:
                    pass
                time.sleep(0.1)

        rounds = {c: [] for c in CONNECTIONS}
        for _ in range(ROUNDS):
            for c in CONNECTIONS:
                n = wrk(ng_url, c)
                done.clear()
                t = threading.Thread(target=sample, args=(c,))
                t.start()
                a = wrk(api_url, c)
                done.set()
                t.join()
                b = wrk(bare_url, c) if bare_url else None
                rounds[c].append((n, a, b))

        # --- fixed rate: ~FIXED_SHARE of nginx's capacity at FIXED_CONNECTIONS
        cap = statistics.median(n["rps"] for n, _, _ in rounds[max(CONNECTIONS)])
        per_conn = max(1, round(cap * FIXED_SHARE / FIXED_CONNECTIONS))
        fixed_n = hey(ng_url, FIXED_CONNECTIONS, per_conn)
        fixed_a = hey(api_url, FIXED_CONNECTIONS, per_conn)
        _, hwm = rss_kib(api.pid)
        idle = {"nginx": idle_fresh(ng_port, None), "orion-api": idle_fresh(api_port, api.pid)}
        if bare_url:
            idle["tiny_http"] = idle_fresh(bare_port, bare.pid)
        logged = sum(1 for _ in open(os.path.join(tmp, "api.log"), "rb"))

        def row(name, r):
            return (f"{name:14} {r['rps']:>10.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['max_ms']:>8.2f}  "
                    f"non-2xx {r['non2xx']}, socket {r['socket_errors']}")

        print(f"\nGET /health, wrk -t{THREADS} -d{DURATION}, {ROUNDS} alternating rounds, "
              "same machine, logging on for all")
        for c in CONNECTIONS:
            rs = rounds[c]
            print(f"\n-c{c}            {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  errors")
            for i, (n, a, b) in enumerate(rs, 1):
                print(row(f"nginx #{i}", n))
                print(row(f"orion-api #{i}", a) + f"  ratio {a['rps'] / n['rps']:.2f}")
                if b:
                    print(row(f"tiny_http #{i}", b) + f"  ratio {b['rps'] / n['rps']:.2f}")
            ratios = [a["rps"] / n["rps"] for n, a, _ in rs]
            worst = max(a["p99_ms"] for _, a, _ in rs)
            print(f"-c{c} median: nginx {statistics.median(n['rps'] for n, _, _ in rs):.0f} req/s, "
                  f"orion-api {statistics.median(a['rps'] for _, a, _ in rs):.0f} req/s; "
                  f"ratio to nginx {statistics.median(ratios):.2f} median ({min(ratios):.2f}-{max(ratios):.2f})")
            if all(b for _, _, b in rs):
                floor = [b["rps"] / n["rps"] for n, _, b in rs]
                share = [a["rps"] / b["rps"] for _, a, b in rs]
                print(f"-c{c} tiny_http alone: ratio to nginx {statistics.median(floor):.2f} median "
                      f"({min(floor):.2f}-{max(floor):.2f}); orion-api / tiny_http alone "
                      f"{statistics.median(share):.2f} median ({min(share):.2f}-{max(share):.2f}, target >= 0.8)")
            print(f"-c{c} orion-api p99 worst round {worst:.2f} ms (target <= 10 in every round; "
                  f"nginx worst {max(n['p99_ms'] for n, _, _ in rs):.2f} ms)")
        print(f"\nfixed rate: hey -z {DURATION} -c {FIXED_CONNECTIONS} -q {per_conn} "
              f"({per_conn * FIXED_CONNECTIONS} req/s, {FIXED_SHARE:.0%} of nginx's {cap:.0f})")
        print(f"{'':14} {'requests':>10} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'slowest':>8}  status")
        for name, r in (("nginx", fixed_n), ("orion-api", fixed_a)):
            print(f"{name:14} {r['n']:>10} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['p999_ms']:>9.2f} "
                  f"{r['max_ms']:>8.2f}  {r['codes']}")
        print(f"orion-api slowest at the fixed rate: {fixed_a['max_ms']:.1f} ms (target <= 50)")
        print(f"\n{IDLE} idle keep-alive connections open, a fresh client's GET /health (20 tries)")
        print(f"{'':14} {'median ms':>10} {'slowest ms':>10} {'RSS MiB':>8}")
        for name, r in idle.items():
            rss = f"{r['rss_kib'] / 1024:>8.1f}" if r["rss_kib"] else f"{'-':>8}"
            print(f"{name:14} {r['median_ms']:>10.2f} {r['max_ms']:>10.2f} {rss}")
        print(f"orion-api fresh client with {IDLE} idle open: slowest {idle['orion-api']['max_ms']:.1f} ms (target <= 50)")
        print(f"\norion-api RSS idle: {idle_rss / 1024:.1f} MiB (target <= 4), "
              + ", ".join(f"under load at {c}: {peak[c] / 1024:.1f} MiB" for c in CONNECTIONS)
              + f" (target <= 12 at 64), peak (VmHWM) {hwm / 1024:.1f} MiB")
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
