"""The re-run decision (scripts/ci-rerun.py, called by rerun.yml) against a stand-in `gh`.

tests/ci/fixtures/bin/gh records its argv and answers from fixture files the way the CLI and
the REST API answer (its header names each source): a failed run (fixtures/rerun/run.json), its
branch tip, its jobs (fixtures/rerun/jobs.json: REST "List jobs for a workflow run attempt"),
each job's check-run annotations, and the failed steps' log (fixtures/rerun/logs/*.txt, in
`gh run view --log-failed`'s "<job>\\t<step>\\t<timestamp> <line>" format). Each test copies
them, changes what its case is about, and checks the one line printed and whether
`gh run rerun` was called.

The formats the fixtures follow:
  - `##[error]<message>`: how the runner writes an error issue into the step log
    (actions/runner src/Runner.Worker/ExecutionContext.cs: WellKnownTags.Error, AddIssue);
    the same issue becomes a check-run annotation of level "failure". A `run:` step that
    exits non-zero adds "Process completed with exit code N."
    (src/Runner.Worker/Handlers/ScriptHandler.cs); a runner stopped under a job adds "The
    runner has received a shutdown signal. This can happen when the runner service is
    stopped, or a manually started runner is canceled." (src/Runner.Worker/JobRunner.cs).
  - a lost hosted runner leaves no log, only the annotation "The hosted runner lost
    communication with the server. Anything in your workflow that terminates the runner
    process, starves it for CPU/Memory, or blocks its network access can cause this error."
    (path ".github", as GitHub's service writes it; public runs show the same text).
  - a job that hits `timeout-minutes` is cancelled by GitHub ("The maximum number of minutes
    to let a job run before GitHub automatically cancels it", workflow syntax,
    jobs.<job_id>.timeout-minutes): job and running step conclude `cancelled`, the step
    log's last line is `##[error]The operation was canceled.`, and the annotations are "The
    job has exceeded the maximum execution time of 1h30m0s" and "The operation was
    canceled.". `--log-failed` prints nothing for it (cli/cli IsFailureState: a cancelled
    step is not a failed one).
  - a tool's own `::error title=T::message` (workflow commands, docs.github.com
    .../workflow-commands) is logged as `##[error]message` and annotated with title T: the
    arm64 qemu smoke test (tests/images/test_binaries.py) and docker/login-action
    (core.setFailed) state their failures that way.

What this does not prove: that GitHub's API still answers in this shape, or the exact wording
of the service's own annotations (lost runner, timeout), which GitHub may change; the
patterns in ci-rerun.py match both wordings seen so far ("The job running on runner X has
exceeded the maximum execution time of N minutes." and "...of 1h30m0s").
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import ROOT, run, tool_env

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SCRIPT = ROOT / "scripts" / "ci-rerun.py"
REPO = "orionlynn19/orion"
TIP = "1111111111111111111111111111111111111111"
NEWER = "2222222222222222222222222222222222222222"
TEST_JOB = 910002
BUILD_JOB = 910004


def annotation(message: str, *, title: str = "", line: int = 1) -> dict:
    """One item of REST "List check run annotations"."""
    return {"path": ".github", "blob_href": f"https://github.com/{REPO}/blob/{TIP}/.github",
            "start_line": line, "start_column": None, "end_line": line, "end_column": None,
            "annotation_level": "failure", "title": title, "message": message, "raw_details": ""}


EXIT_2 = annotation("Process completed with exit code 2.", line=64)
QEMU_CRASH = annotation("emulation error: qemu-aarch64 failed running dist/arm64/orion-api --version: qemu: uncaught "
                        "target signal 11 (Segmentation fault) - core dumped", title="emulation error", line=61)
RUNNER_LOST = annotation("The hosted runner lost communication with the server. Anything in your workflow that "
                         "terminates the runner process, starves it for CPU/Memory, or blocks its network access "
                         "can cause this error.")
SHUTDOWN = annotation("The runner has received a shutdown signal. This can happen when the runner service is "
                      "stopped, or a manually started runner is canceled.")
TIMED_OUT = annotation("The job has exceeded the maximum execution time of 1h30m0s")
CANCELED = annotation("The operation was canceled.", line=12)
LOGIN_503 = annotation('Error response from daemon: Get "https://ghcr.io/v2/": received unexpected HTTP status: '
                       "503 Service Unavailable")


def job(id_: int, name: str, conclusion: str, steps: list[tuple[str, str | None]]) -> dict:
    """One item of REST "List jobs for a workflow run attempt"."""
    return {"id": id_, "run_id": 4242, "run_attempt": 1, "name": name,
            "status": "completed", "conclusion": conclusion,
            "check_run_url": f"https://api.github.com/repos/{REPO}/check-runs/{id_}",
            "steps": [{"name": s, "status": "completed" if c else "in_progress", "conclusion": c, "number": i}
                      for i, (s, c) in enumerate(steps, 1)]}


def jobs_with(*changed: dict) -> list[dict]:
    jobs = json.loads((FIXTURES / "rerun" / "jobs.json").read_text())["jobs"]
    by_name = {j["name"]: j for j in jobs}
    for j in changed:
        by_name[j["name"]] = j
    return list(by_name.values())


@pytest.fixture()
def fake_gh(tmp_path):
    data = tmp_path / "gh"
    shutil.copytree(FIXTURES / "rerun", data)
    calls = tmp_path / "calls.log"

    def env():
        e = tool_env(GH_REPO=REPO, RERUN_DELAY="0", FAKE_GH_DIR=str(data), FAKE_GH_CALLS=str(calls))
        e["PATH"] = f"{FIXTURES / 'bin'}{os.pathsep}{e['PATH']}"
        return e

    def go(log: str, *, extra_log="", run_patch=None, jobs=None, tip=TIP, notes=None):
        (data / "log-failed.txt").write_text((data / "logs" / log).read_text() + extra_log)
        r = json.loads((data / "run.json").read_text())
        r.update(run_patch or {})
        (data / "run.json").write_text(json.dumps(r))
        if jobs is not None:
            (data / "jobs.json").write_text(json.dumps({"total_count": len(jobs), "jobs": jobs}))
        for job_id, items in (notes or {}).items():
            (data / f"annotations-{job_id}.json").write_text(json.dumps(items))
        if tip is None:
            (data / "branch-dev.json").unlink()
        else:
            (data / "branch-dev.json").write_text(json.dumps({"name": "dev", "commit": {"sha": tip}}))
        return again()

    def again():
        res = run([str(SCRIPT), "4242"], env=env())
        made = calls.read_text().splitlines() if calls.exists() else []
        calls.unlink(missing_ok=True)
        return res, made

    go.again = again
    go.run_json = lambda: json.loads((data / "run.json").read_text())
    go.patch_run = lambda **kv: (data / "run.json").write_text(json.dumps({**go.run_json(), **kv}))
    return go


def reran(calls):
    return [c for c in calls if c.startswith("run rerun")]


def line_of(res) -> str:
    (line,) = res.stdout.splitlines()
    return line


# ---------------------------------------------------------------- transient: re-run ---------

def test_an_emulator_crash_stated_by_the_qemu_smoke_test_is_re_run(fake_gh):
    res, calls = fake_gh("transient-qemu.txt", notes={TEST_JOB: [QEMU_CRASH, EXIT_2]})
    assert res.returncode == 0, res.stderr
    assert reran(calls) == ["run rerun 4242 --failed"]
    assert line_of(res) == "ci-rerun: re-run run 4242 attempt 1 (dev@1111111): transient (test: emulation error)"
    # The exact questions asked, in order: the run, its branch's tip, its jobs, the failed
    # job's annotations, the failed steps' log.
    assert calls == [
        f"api repos/{REPO}/actions/runs/4242",
        f"api repos/{REPO}/branches/dev",
        f"api repos/{REPO}/actions/runs/4242/attempts/1/jobs?per_page=100",
        f"api repos/{REPO}/check-runs/{TEST_JOB}/annotations?per_page=100",
        "run view 4242 --attempt 1 --log-failed",
        "run rerun 4242 --failed",
    ]


@pytest.mark.parametrize("note", [RUNNER_LOST, SHUTDOWN], ids=["lost-communication", "shutdown-signal"])
def test_a_lost_runner_is_re_run(fake_gh, note):
    deploy = job(920001, "deploy (dev)", "failure", [("Set up job", "success"), ("Deploy to kind", None)])
    notes = {920001: [note] + ([annotation("Process completed with exit code 143.")] if note is SHUTDOWN else [])}
    res, calls = fake_gh("none.txt", jobs=jobs_with(job(TEST_JOB, "test", "success", []), deploy), notes=notes)
    assert reran(calls), res.stdout
    assert line_of(res).endswith("transient (deploy (dev): runner lost)")


def test_a_registry_outage_stated_by_the_failing_action_is_re_run(fake_gh):
    build = job(BUILD_JOB, "build + push (amd64, arm64)", "failure", [("Log in to GHCR", "failure")])
    res, calls = fake_gh("transient-registry.txt", jobs=jobs_with(job(TEST_JOB, "test", "success", []), build),
                         notes={BUILD_JOB: [LOGIN_503]})
    assert reran(calls), res.stdout
    assert line_of(res).endswith("transient (build + push (amd64, arm64): registry/network 5xx)")


def test_a_cancelled_matrix_leg_beside_a_transient_failure_is_no_cause(fake_gh):
    cancelled = job(930001, "scan (Trivy, worker)", "cancelled", [("Trivy (gate)", "cancelled")])
    res, calls = fake_gh("transient-qemu.txt", jobs=jobs_with(cancelled),
                         notes={TEST_JOB: [QEMU_CRASH, EXIT_2], 930001: [CANCELED]})
    assert reran(calls), res.stdout
    assert line_of(res).endswith("transient (test: emulation error)")


# ---------------------------------------------------------------- genuine: never re-run -----

def test_a_failing_api_test_printing_network_errors_is_genuine(fake_gh):
    """"503 Service Unavailable", "Connection reset by peer", "timed out" in the tests' own
    output: the old classifier called this `transient (test: registry/network 5xx)`."""
    res, calls = fake_gh("genuine-api-503.txt", notes={TEST_JOB: [EXIT_2]})
    assert res.returncode == 0 and not reran(calls), res.stdout
    assert line_of(res) == ("ci-rerun: skip run 4242 attempt 1 (dev@1111111): job 'test' failed for a non-transient "
                            "reason (nothing but its exit code was reported); not re-run")


def test_an_emulator_killed_by_a_signal_without_its_own_line_is_re_run(fake_gh):
    killed = annotation("emulation error: qemu-aarch64 failed running dist/arm64/orion-worker healthcheck: "
                        "killed by signal 11", title="emulation error")
    res, calls = fake_gh("none.txt", notes={TEST_JOB: [killed, EXIT_2]})
    assert reran(calls) and line_of(res).endswith("transient (test: emulation error)")


def test_qemu_text_in_a_tests_output_alone_is_genuine(fake_gh):
    res, calls = fake_gh("genuine-qemu-text-in-test-output.txt", notes={TEST_JOB: [EXIT_2]})
    assert not reran(calls) and "nothing but its exit code was reported" in res.stdout


@pytest.mark.parametrize("conclusion", ["cancelled", "failure"])
def test_a_job_that_hit_timeout_minutes_is_genuine(fake_gh, conclusion):
    timed_out = job(TEST_JOB, "test", conclusion, [("Set up job", "success"), ("make test", "cancelled")])
    res, calls = fake_gh("none.txt", jobs=jobs_with(timed_out, job(BUILD_JOB, "build + push (amd64, arm64)",
                                                                    "failure", [("Log in to GHCR", "failure")])),
                         extra_log=(FIXTURES / "rerun" / "logs" / "transient-registry.txt").read_text(),
                         notes={TEST_JOB: [TIMED_OUT, CANCELED], BUILD_JOB: [LOGIN_503]})
    assert res.returncode == 0 and not reran(calls), res.stdout
    assert line_of(res) == ("ci-rerun: skip run 4242 attempt 1 (dev@1111111): job 'test' timed out: it hit its "
                            "timeout ('The job has exceeded the maximum execution time of 1h30m0s'): it would time "
                            "out again; not re-run")


def test_a_failed_job_nobody_explained_is_genuine(fake_gh):
    """No log, no annotation: nothing says the runner was lost, so it is not assumed."""
    res, calls = fake_gh("none.txt", notes={})
    assert not reran(calls) and "nothing but its exit code was reported" in res.stdout


@pytest.mark.parametrize("log,job_name", [
    ("genuine-clippy.txt", "test"),
    ("genuine-test.txt", "test"),
    ("genuine-trivy.txt", "scan (Trivy, api)"),
])
def test_genuine_failure_is_never_re_run(fake_gh, log, job_name):
    failed = job(TEST_JOB, job_name, "failure", [("make test", "failure")])
    exit_1 = annotation("Process completed with exit code 1.")
    res, calls = fake_gh(log, jobs=[failed], notes={TEST_JOB: [exit_1]})
    assert res.returncode == 0, res.stderr
    assert not reran(calls)
    assert res.stdout.strip().endswith(f"job {job_name!r} failed for a non-transient reason "
                                       "(nothing but its exit code was reported); not re-run")


def test_a_genuine_failure_beside_a_transient_one_is_not_re_run(fake_gh):
    # Re-running would only fail the genuine job again.
    clippy = (FIXTURES / "rerun" / "logs" / "genuine-clippy.txt").read_text().replace("test\t", "lint\t")
    lint = job(910001, "lint", "failure", [("make lint", "failure")])
    res, calls = fake_gh("transient-qemu.txt", extra_log=clippy, jobs=jobs_with(lint),
                         notes={TEST_JOB: [QEMU_CRASH, EXIT_2], 910001: [annotation("Process completed with exit code 2.")]})
    assert res.returncode == 0 and not reran(calls)
    assert "job 'lint' failed for a non-transient reason" in res.stdout


def test_one_transient_statement_beside_a_genuine_one_is_genuine(fake_gh):
    trivy = annotation("CRITICAL vulnerability CVE-2026-0001 in tokio 1.40.0 (fixed in 1.40.1)")
    res, calls = fake_gh("transient-qemu.txt", notes={TEST_JOB: [QEMU_CRASH, trivy, EXIT_2]})
    assert not reran(calls)
    assert "failed for a non-transient reason ('CRITICAL vulnerability CVE-2026-0001" in res.stdout


# ---------------------------------------------------------------- the other checks ---------

def test_stale_commit_is_not_re_run(fake_gh):
    res, calls = fake_gh("transient-qemu.txt", tip=NEWER)
    assert res.returncode == 0 and not reran(calls)
    assert "stale, dev is now at 2222222" in res.stdout
    # Decided before reading any job, annotation or log.
    assert not any(c.startswith(("run view", f"api repos/{REPO}/check-runs")) for c in calls)


def test_deleted_branch_is_not_re_run(fake_gh):
    res, calls = fake_gh("transient-qemu.txt", tip=None)
    assert res.returncode == 0 and not reran(calls) and "no tip" in res.stdout


@pytest.mark.parametrize("field", ["actor", "triggering_actor"])
def test_dependabot_runs_are_not_re_run(fake_gh, field):
    res, calls = fake_gh("transient-qemu.txt", run_patch={field: {"login": "dependabot[bot]"}})
    assert res.returncode == 0 and not reran(calls)
    assert "Dependabot" in res.stdout and "403" in res.stdout


@pytest.mark.parametrize("attempt,expect", [(1, True), (2, True), (3, False), (4, False)])
def test_attempt_cap(fake_gh, attempt, expect):
    res, calls = fake_gh("transient-qemu.txt", run_patch={"run_attempt": attempt},
                         notes={TEST_JOB: [QEMU_CRASH, EXIT_2]})
    assert bool(reran(calls)) is expect, res.stdout
    if not expect:
        assert "attempt cap reached (3 attempts ran)" in res.stdout


def test_the_cap_holds_whether_or_not_github_starts_rerun_yml_again(fake_gh):
    """Each call reads the attempt from the API; nothing is counted here. Whatever GitHub does
    after a GITHUB_TOKEN re-run (start rerun.yml for the new attempt, or not, or twice), at
    most attempts 2 and 3 are requested."""
    res, calls = fake_gh("transient-qemu.txt", notes={TEST_JOB: [QEMU_CRASH, EXIT_2]})
    assert reran(calls) and fake_gh.run_json()["run_attempt"] == 2
    # The same event delivered again while attempt 2 is queued: nothing new is requested.
    res, calls = fake_gh.again()
    assert not reran(calls) and "status queued/None, not a completed failure" in res.stdout
    # Attempt 2 fails the same way and rerun.yml does run for it: attempt 3 is requested ...
    fake_gh.patch_run(status="completed", conclusion="failure")
    res, calls = fake_gh.again()
    assert reran(calls) and fake_gh.run_json()["run_attempt"] == 3
    # ... and attempt 3 is final, however often the script is asked.
    fake_gh.patch_run(status="completed", conclusion="failure")
    for _ in range(2):
        res, calls = fake_gh.again()
        assert not reran(calls) and "attempt cap reached (3 attempts ran), stays red" in res.stdout
    assert fake_gh.run_json()["run_attempt"] == 3


def test_fork_and_non_failures_are_not_re_run(fake_gh):
    res, calls = fake_gh("transient-qemu.txt", run_patch={"head_repository": {"full_name": "evil/orion"}})
    assert not reran(calls) and "fork" in res.stdout
    res, calls = fake_gh("transient-qemu.txt", run_patch={"status": "in_progress", "conclusion": None})
    assert not reran(calls) and "not a completed failure" in res.stdout


def test_gh_failure_is_one_line_and_non_zero(tmp_path):
    env = tool_env(GH_REPO=REPO, RERUN_DELAY="0", GH=str(tmp_path / "no-such-gh"))
    bad = run([str(SCRIPT), "4242"], env=env)
    assert bad.returncode == 1 and len(bad.stderr.splitlines()) == 1, bad.stderr
    assert bad.stderr.startswith("ci-rerun: `gh api repos/orionlynn19/orion/actions/runs/4242` failed")
    assert run([str(SCRIPT), "not-a-run"], env=env).returncode == 2
    usage = run([str(SCRIPT), "1"], env=tool_env(GH_REPO="nope"))
    assert usage.returncode == 2 and usage.stderr.strip() == "ci-rerun: GH_REPO='nope' is not owner/name"


def test_rerun_workflow_calls_the_script_and_nothing_else(ci, rerun):
    trigger = rerun["on"]["workflow_run"]
    assert trigger["workflows"] == [ci["name"]] and trigger["types"] == ["completed"]
    job_ = rerun["jobs"]["rerun"]
    cond = " ".join(job_["if"].split())
    for part in ("github.event.workflow_run.conclusion == 'failure'",
                 "github.event.workflow_run.run_attempt < 3",
                 "head_repository.full_name == github.repository",
                 "github.event.workflow_run.actor.login != 'dependabot[bot]'",
                 "github.event.workflow_run.triggering_actor.login != 'dependabot[bot]'"):
        assert part in cond, part
    # The annotations API needs `checks: read`; re-running needs `actions: write`.
    assert job_["permissions"] == {"actions": "write", "checks": "read", "contents": "read"}
    steps = job_["steps"]
    uses = [s["uses"].split("@")[0] for s in steps if "uses" in s]
    assert uses == ["actions/checkout"], "the only action: checkout of the default branch"
    checkout = steps[0]["with"]
    assert "ref" not in checkout and "repository" not in checkout, "never the failed run's code"
    runs = [s["run"].strip() for s in steps if "run" in s]
    assert runs == ['python3 scripts/ci-rerun.py "$RUN_ID"']
    assert steps[-1]["env"]["RUN_ID"] == "${{ github.event.workflow_run.id }}"
    # The script's own cap is the workflow's: `< 3` and MAX_ATTEMPTS 3.
    assert 'os.environ.get("MAX_ATTEMPTS", "3")' in SCRIPT.read_text()
