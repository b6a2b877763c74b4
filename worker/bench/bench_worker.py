#!/usr/bin/env python3
"""Worker benchmark (`make bench-worker`): figures, not pass/fail.

Measures the release musl binary that ships:

* Lateness of real runs: one worker on `* * * * *` (RUN_ON_START=false) until it has run over
  MINUTES minute boundaries; each run's "job started" log line carries `lateness_ms`, the job's
  start minus its scheduled instant, both read from the wall clock inside the process.
* Idle CPU per minute: two idle workers (`@yearly`, nothing to run) live SHORT and SHORT+60 seconds;
  the difference of their CPU time (user+system from wait4(2), microsecond resolution) is the cost
  of one idle minute, with start-up and shutdown cancelled out. /proc/<pid>/stat counts in 10 ms
  ticks, too coarse for a 5 ms target.
* RSS: VmRSS of the idle worker after a minute, and peaks (VmHWM) of both.

Targets (issue 3): lateness p99 <= 2 ms, idle CPU <= 5 ms per minute, RSS <= 4 MiB.
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

TARGET_LATENESS_P99_MS = 2.0
TARGET_IDLE_CPU_MS_PER_MIN = 5.0
TARGET_RSS_MIB = 4.0
SHORT_S = 10.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(binary, schedule, extra=None):
    env = {
        "METRICS_PORT": str(free_port()),
        "CRON_SCHEDULE": schedule,
        "RUN_ON_START": "false",
        "LOG_LEVEL": "info",
        "NODE_ENV": "bench",
    }
    env.update(extra or {})
    return subprocess.Popen([binary], env=env, stdout=subprocess.PIPE, text=True)


def collect(proc, lines):
    for line in proc.stdout:
        lines.append(line)


def status_kib(pid, field):
    """VmRSS (now) or VmHWM (peak) in KiB. Not ru_maxrss: across exec it keeps the forking
    parent's high-water mark (here Python's, ~14 MiB)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def stop(proc):
    """SIGTERM, reap with wait4; returns (exit code, cpu seconds)."""
    os.kill(proc.pid, signal.SIGTERM)  # not proc.send_signal: it may reap the child first
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, ru.ru_utime + ru.ru_stime


def percentile(values, p):
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def per_thread_cpu_ms(pid, seconds):
    """CPU per thread over `seconds`, from `perf stat --per-thread` (None without perf)."""
    try:
        res = subprocess.run(
            ["perf", "stat", "--per-thread", "-e", "task-clock", "-p", str(pid), "--", "sleep", str(seconds)],
            capture_output=True, text=True, timeout=seconds + 30)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        time.sleep(seconds)
        return None
    threads = {}
    for line in res.stderr.splitlines():
        m = re.match(r"\s*(\S+)-(\d+)\s+([\d.,]+) msec task-clock", line)
        if m:
            name = "scheduler loop (main)" if m.group(2) == str(pid) else m.group(1)
            threads[name] = threads.get(name, 0.0) + float(m.group(3).replace(",", ""))
    return threads or None


def idle_run(binary, seconds, out, split=False):
    """An idle worker for SHORT_S, then `seconds` more (optionally split per thread by perf)."""
    proc = start(binary, "@yearly")
    threading.Thread(target=collect, args=(proc, []), daemon=True).start()
    time.sleep(SHORT_S)
    if split:
        out["threads"] = per_thread_cpu_ms(proc.pid, seconds)
    else:
        time.sleep(seconds)
    rss, peak = status_kib(proc.pid, "VmRSS"), status_kib(proc.pid, "VmHWM")
    code, cpu = stop(proc)
    out.update(code=code, cpu=cpu, rss=rss, peak=peak)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", required=True)
    ap.add_argument("--minutes", type=int, default=3)
    args = ap.parse_args()
    if not os.access(args.binary, os.X_OK):
        sys.exit(f"bench-worker: {args.binary} is not an executable")

    print(f"bench-worker: {args.binary} ({os.path.getsize(args.binary) / 1024:.0f} KiB)")
    print(f"bench-worker: running over {args.minutes} minute boundaries "
          f"(up to {args.minutes + 1} minutes) ...", flush=True)

    busy = start(args.binary, "* * * * *")
    lines = []
    threading.Thread(target=collect, args=(busy, lines), daemon=True).start()

    short, long_ = {}, {}
    idle = [threading.Thread(target=idle_run, args=(args.binary, s, o, split))
            for s, o, split in ((0.0, short, False), (60.0, long_, True))]
    for t in idle:
        t.start()

    def runs():
        out = []
        for line in list(lines):
            rec = json.loads(line)
            if rec.get("message") == "job started" and rec.get("trigger") == "schedule":
                out.append(rec)
        return out

    deadline = time.time() + 60 * (args.minutes + 1) + 30
    while len(runs()) < args.minutes:
        if time.time() > deadline or busy.poll() is not None:
            sys.exit("bench-worker: the worker did not run on schedule:\n" + "".join(lines))
        time.sleep(0.5)
    time.sleep(1)  # let the last run finish
    busy_rss, busy_peak = status_kib(busy.pid, "VmRSS"), status_kib(busy.pid, "VmHWM")
    busy_code, busy_cpu = stop(busy)
    for t in idle:
        t.join()

    lateness = [r["lateness_ms"] for r in runs()]
    failures = sum(1 for line in lines if '"job failed' in line)
    idle_ms_per_min = (long_["cpu"] - short["cpu"]) * 1000.0
    rss_mib = long_["rss"] / 1024.0

    print()
    print(f"  scheduled runs            {len(lateness)} (failures {failures})")
    print(f"  lateness p50              {percentile(lateness, 50):.3f} ms")
    print(f"  lateness p99              {percentile(lateness, 99):.3f} ms   (target <= {TARGET_LATENESS_P99_MS} ms)")
    print(f"  lateness max              {max(lateness):.3f} ms")
    print(f"  lateness all (ms)         {', '.join(f'{v:.3f}' for v in lateness)}")
    print(f"  idle CPU per minute       {idle_ms_per_min:.3f} ms   (target <= {TARGET_IDLE_CPU_MS_PER_MIN} ms; "
          f"{short['cpu'] * 1000:.2f} ms over {SHORT_S:.0f} s vs {long_['cpu'] * 1000:.2f} ms over {SHORT_S + 60:.0f} s)")
    if long_.get("threads"):
        split = ", ".join(f"{k} {v:.2f} ms" for k, v in sorted(long_["threads"].items(), key=lambda kv: -kv[1]) if v > 0)
        print(f"    per thread (perf)       {split}")
    else:
        print("    per thread              (perf not available)")
    print(f"  idle RSS                  {rss_mib:.2f} MiB (peak {long_['peak'] / 1024:.2f} MiB)   (target <= {TARGET_RSS_MIB} MiB)")
    print(f"  busy RSS                  {busy_rss / 1024:.2f} MiB (peak {busy_peak / 1024:.2f} MiB)")
    print(f"  busy CPU                  {busy_cpu * 1000:.1f} ms in total")
    print(f"  exit codes after SIGTERM  busy {busy_code}, idle {short['code']}/{long_['code']}")
    missed = [name for name, ok in (
        ("lateness p99", percentile(lateness, 99) <= TARGET_LATENESS_P99_MS),
        ("idle CPU", idle_ms_per_min <= TARGET_IDLE_CPU_MS_PER_MIN),
        ("idle RSS", rss_mib <= TARGET_RSS_MIB),
    ) if not ok]
    print(f"\nbench-worker: {'all targets met' if not missed else 'targets missed: ' + ', '.join(missed)}")


if __name__ == "__main__":
    main()
