#!/usr/bin/env python3
"""ci-rerun.py RUN_ID: decide whether a failed CI run is re-run, and re-run it if so.

Called by .github/workflows/rerun.yml (on workflow_run: completed) with GH_REPO set and a
token in GH_TOKEN; only `gh` is used (preinstalled on GitHub's runners), no code of the
failed run is read or executed: only its metadata and its failed jobs' logs, as data.

A run is re-run (`gh run rerun RUN_ID --failed`) only when ALL of these hold, checked in
this order, and the first that does not hold is the one line of output:

  1. it failed and is complete (a newer attempt is not already under way);
  2. it was not started by Dependabot (its workflow_run token is read-only: the re-run
     request would answer 403);
  3. it belongs to this repository (never a fork's pull request);
  4. fewer than MAX_ATTEMPTS attempts ran (3: two automatic re-runs at most);
  5. its head_sha is still the tip of its branch: re-running an old commit would queue
     behind, or cancel, the newer run in the concurrency group, re-push the environment
     tag with old code and deploy it over the newer commit;
  6. every failed job failed for a transient reason, i.e. its log (`gh run view
     --log-failed`) matches TRANSIENT below: emulation / exec-format errors, a lost runner,
     a registry or network 5xx / 429 / timeout. A clippy error, a Trivy finding or a failed
     test matches none of them and is never re-run.

Prints exactly one line, "ci-rerun: re-run ..." or "ci-rerun: skip ...", and exits 0 in
both cases; exits 1 (with one line) when gh itself fails, 2 on bad usage.

Environment: GH_REPO (owner/name, required), RERUN_DELAY seconds to wait before deciding
(default 30 x attempt: lets a flaky registry recover, and lets a newer push land first so
check 5 sees it), MAX_ATTEMPTS (3), GH (the gh binary, default gh).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

DEPENDABOT = "dependabot[bot]"

# Each pattern names one transient cause; matched case-insensitively against the failed
# jobs' log lines. Keep them specific: a genuine failure must match none.
TRANSIENT = {
    "emulation error": r"\bqemu(-[a-z0-9_]+)?: |qemu: uncaught target signal|"
                       r"exec format error|cannot execute binary file",
    "runner lost": r"runner has received a shutdown signal|lost communication with the server|"
                   r"the hosted runner encountered an error|runner .* did not connect|"
                   r"the job was not acquired by runner",
    "registry/network 5xx": r"\b50[0234]\b.{0,40}(internal server error|bad gateway|service unavailable|"
                            r"gateway time-?out)|\b(internal server error|bad gateway|"
                            r"service unavailable|gateway time-?out)\b.{0,10}\b50[0234]\b",
    "registry/network 429": r"\b429 too many requests|status(?: code)?:? 429\b|http/[\d.]+ 429\b|"
                            r"toomanyrequests|rate limit exceeded",
    "network timeout": r"i/o timeout|tls handshake timeout|connection timed out|operation timed out|"
                       r"context deadline exceeded|connection reset by peer|"
                       r"temporary failure in name resolution|could not resolve host|"
                       r"spurious network error",
}
TRANSIENT_RE = {name: re.compile(rx, re.IGNORECASE) for name, rx in TRANSIENT.items()}


class GhError(Exception):
    pass


def gh(*args: str) -> str:
    cmd = [os.environ.get("GH", "gh"), *args]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as err:
        raise GhError(f"`gh {' '.join(args)}` failed: {err}") from err
    if res.returncode != 0:
        detail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise GhError(f"`gh {' '.join(args)}` failed ({res.returncode}): {detail}")
    return res.stdout


def gh_json(*args: str):
    out = gh(*args)
    try:
        return json.loads(out)
    except ValueError as err:
        raise GhError(f"`gh {' '.join(args)}` did not return JSON: {err}") from err


def transient_cause(lines: list[str]) -> str | None:
    for line in lines:
        for name, rx in TRANSIENT_RE.items():
            if rx.search(line):
                return name
    return None


def failed_job_logs(log: str, jobs: list[str]) -> dict[str, list[str]]:
    """`gh run view --log-failed` prints "<job name>\\t<step name>\\t<timestamp> <text>"."""
    out: dict[str, list[str]] = {job: [] for job in jobs}
    for line in log.splitlines():
        job, _, rest = line.partition("\t")
        if job in out:
            out[job].append(rest)
    return out


def decide(run_id: str, repo: str, max_attempts: int) -> tuple[bool, str]:
    run = gh_json("api", f"repos/{repo}/actions/runs/{run_id}")
    attempt = int(run.get("run_attempt") or 1)
    sha, branch = run.get("head_sha", ""), run.get("head_branch") or ""
    what = f"run {run_id} attempt {attempt} ({branch}@{sha[:7]})"
    if run.get("status") != "completed" or run.get("conclusion") != "failure":
        return False, f"{what}: status {run.get('status')}/{run.get('conclusion')}, not a completed failure"
    actors = {(run.get(k) or {}).get("login") for k in ("actor", "triggering_actor")}
    if DEPENDABOT in actors:
        return False, f"{what}: started by Dependabot, whose token cannot re-run (403); re-run it by hand"
    head_repo = (run.get("head_repository") or {}).get("full_name")
    if head_repo != repo:
        return False, f"{what}: from {head_repo}, not {repo} (fork runs are never re-run)"
    if attempt >= max_attempts:
        return False, f"{what}: attempt cap reached ({max_attempts} attempts ran), stays red"
    try:
        tip = gh_json("api", f"repos/{repo}/branches/{branch}")["commit"]["sha"]
    except GhError as err:
        return False, f"{what}: branch {branch!r} has no tip to compare with ({err}); not re-run"
    if tip != sha:
        return False, f"{what}: stale, {branch} is now at {tip[:7]}; its own run deploys it"
    jobs = gh_json("api", f"repos/{repo}/actions/runs/{run_id}/attempts/{attempt}/jobs?per_page=100")
    failed = [j["name"] for j in jobs.get("jobs", []) if j.get("conclusion") == "failure"]
    if not failed:
        return False, f"{what}: no failed job to re-run"
    logs = failed_job_logs(gh("run", "view", run_id, "--attempt", str(attempt), "--log-failed"), failed)
    causes = []
    for job in failed:
        if not logs[job]:
            # A job that failed without uploading a single log line lost its runner.
            causes.append(f"{job}: no log (runner lost)")
            continue
        cause = transient_cause(logs[job])
        if cause is None:
            return False, f"{what}: job {job!r} failed for a non-transient reason; not re-run"
        causes.append(f"{job}: {cause}")
    return True, f"{what}: transient ({'; '.join(causes)})"


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: ci-rerun.py RUN_ID (GH_REPO=owner/name in the environment)", file=sys.stderr)
        return 2
    repo = os.environ.get("GH_REPO", "")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        print(f"ci-rerun: GH_REPO={repo!r} is not owner/name", file=sys.stderr)
        return 2
    try:
        max_attempts = int(os.environ.get("MAX_ATTEMPTS", "3"))
        delay = os.environ.get("RERUN_DELAY")
        if delay is None:
            run = gh_json("api", f"repos/{repo}/actions/runs/{argv[0]}")
            delay = str(30 * int(run.get("run_attempt") or 1))
        time.sleep(int(delay))
        rerun, why = decide(argv[0], repo, max_attempts)
        if rerun:
            gh("run", "rerun", argv[0], "--failed")
    except ValueError as err:
        print(f"ci-rerun: bad MAX_ATTEMPTS/RERUN_DELAY: {err}", file=sys.stderr)
        return 2
    except GhError as err:
        print(f"ci-rerun: {err}", file=sys.stderr)
        return 1
    print(f"ci-rerun: {'re-run' if rerun else 'skip'} {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
