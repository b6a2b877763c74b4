#!/usr/bin/env python3
"""ci-rerun.py RUN_ID: decide whether a failed CI run is re-run, and re-run it if so.

Called by .github/workflows/rerun.yml (on workflow_run: completed) with GH_REPO set and a
token in GH_TOKEN; only `gh` is used (preinstalled on GitHub's runners), no code of the
failed run is read or executed: only its metadata, its jobs' annotations and its failed steps'
`##[error]` lines, as data.

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
  6. every failed job failed for a transient reason, judged ONLY from what the runner and the
     failing step's tool said about the failure, never from what a test printed:
       - the job's check-run annotations (`GET /repos/{repo}/check-runs/{job id}/annotations`,
         level "failure"): the runner's own verdicts ("The hosted runner lost communication
         with the server…", "The runner has received a shutdown signal…", "The job has
         exceeded the maximum execution time of 1h30m0s") and every `::error::` a tool raised;
       - the `##[error]` lines of the failed steps (`gh run view --log-failed`): the runner
         writes each error issue there as `##[error]<message>`.
     "Process completed with exit code N." and "The operation was canceled." say only that
     a step failed; they are set aside. A job whose remaining statements are all transient
     (emulation / exec-format errors, registry or network 5xx / 429 / timeouts) or whose
     runner was lost is transient; a job that hit timeout-minutes is genuine (it would time
     out again); a job with no statement beyond its exit code is genuine: a failing test, a
     clippy error, a Trivy finding. A test that prints "503 Service Unavailable" or
     "connection reset by peer" is therefore never re-run: its text is the step's output,
     not a `##[error]` line. (The arm64 smoke test under qemu states an emulator crash as an
     `::error title=emulation error::` annotation itself: tests/images/test_binaries.py.)
     Cancelled jobs (a job cancelled by its own timeout aside) are not a cause: they were
     stopped, and `--failed` re-runs them with the rest.

The cap (check 4) is GitHub's own attempt number, read from the API each time; nothing is
counted here. That makes it hold whether or not GitHub starts rerun.yml again for an attempt
this script requested. GitHub's documentation ("Triggering a workflow from a workflow",
docs.github.com/en/actions/how-tos/write-workflows/choose-when-workflows-run/trigger-a-workflow)
says events triggered by the GITHUB_TOKEN, except workflow_dispatch and repository_dispatch,
"will not create a new workflow run", and says nothing specific about the workflow_run event of
a re-run attempt requested with it. If no event follows, one automatic re-run is all that
happens; if one does, attempt 3 is the last; a duplicate event for an attempt already re-run
finds the run in progress (check 1) and does nothing.

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

# The runner's and GitHub's own statements about a job (actions/runner: JobRunner.cs,
# StepsRunner.cs, Handlers/ScriptHandler.cs; the service: lost runner, job timeout).
TIMED_OUT = re.compile(r"has exceeded the maximum execution time|has timed out after \d+ minutes", re.IGNORECASE)
RUNNER_LOST = re.compile(r"lost communication with the server|runner has received a shutdown signal|"
                         r"hosted runner encountered an error|was not acquired by runner", re.IGNORECASE)
# Say only that a step failed or was stopped, not why.
NEUTRAL = re.compile(r"^(Process completed with exit code \d+\.|The operation was canceled\.)$")

# Each pattern names one transient cause a tool can state in an `::error::`; matched
# case-insensitively against whole statements. Keep them specific: a genuine failure must
# match none.
TRANSIENT = {
    # "emulation error: ..." is how the arm64 smoke test states one (tests/images/test_binaries.py).
    "emulation error": r"^emulation error: |\bqemu(-[a-z0-9_]+)?: |qemu: uncaught target signal|"
                       r"exec format error|cannot execute binary file",
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
ERROR_LINE = re.compile(r"^(?:\d{4}-\d\d-\d\dT[\d:.]+Z )?##\[error\](.*)$")
FAILED = ("failure", "timed_out", "startup_failure")


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


def transient_cause(statement: str) -> str | None:
    for name, rx in TRANSIENT_RE.items():
        if rx.search(statement):
            return name
    return None


def error_lines(log: str, jobs: list[str]) -> dict[str, list[str]]:
    """The `##[error]` statements per job. `gh run view --log-failed` prints
    "<job name>\\t<step name>\\t<timestamp> <log line>" for each line of each failed step
    (cli/cli pkg/cmd/run/view/view.go, displayRunLog); everything else is the step's output."""
    out: dict[str, list[str]] = {job: [] for job in jobs}
    for line in log.splitlines():
        job, _, rest = line.partition("\t")
        if job not in out:
            continue
        _step, _, text = rest.partition("\t")
        m = ERROR_LINE.match(text.strip())
        if m and m.group(1).strip():
            out[job].append(m.group(1).strip())
    return out


def classify(statements: list[str]) -> tuple[bool, str]:
    """(transient, why) for one failed job from the runner's and its tools' statements."""
    for s in statements:
        if TIMED_OUT.search(s):
            return False, f"it hit its timeout ({s!r}): it would time out again"
    for s in statements:
        if RUNNER_LOST.search(s):
            return True, "runner lost"
    specific = list(dict.fromkeys(s for s in statements if not NEUTRAL.match(s)))
    if not specific:
        return False, "nothing but its exit code was reported"
    causes = []
    for s in specific:
        cause = transient_cause(s)
        if cause is None:
            return False, f"{s[:120]!r}"
        causes.append(cause)
    return True, ", ".join(dict.fromkeys(causes))


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
    stopped = [j for j in jobs.get("jobs", []) if j.get("conclusion") in FAILED + ("cancelled",)]
    if not any(j.get("conclusion") in FAILED for j in stopped):
        return False, f"{what}: no failed job to re-run"
    statements = {}
    for job in stopped:
        notes = gh_json("api", f"repos/{repo}/check-runs/{job['id']}/annotations?per_page=100")
        statements[job["name"]] = [n.get("message", "").strip() for n in notes
                                   if n.get("annotation_level") == "failure" and n.get("message", "").strip()]
    try:
        log = gh("run", "view", run_id, "--attempt", str(attempt), "--log-failed")
    except GhError:
        # No log to download (a lost runner uploads none): the annotations hold every
        # `##[error]` issue the runner recorded anyway.
        log = ""
    for job, lines in error_lines(log, list(statements)).items():
        statements[job] += lines
    causes = []
    for job in stopped:
        name = job["name"]
        transient, why = classify(statements[name])
        if job.get("conclusion") == "cancelled" and not TIMED_OUT.search(" ".join(statements[name])):
            continue  # stopped, not failed: not a cause either way
        if not transient:
            if why.startswith("it hit its timeout"):
                return False, f"{what}: job {name!r} timed out: {why}; not re-run"
            return False, f"{what}: job {name!r} failed for a non-transient reason ({why}); not re-run"
        causes.append(f"{name}: {why}")
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
