"""The re-run decision (scripts/ci-rerun.py, called by rerun.yml) against a stand-in `gh`.

tests/ci/fixtures/bin/gh records its argv and answers from fixture files: a failed run
(fixtures/rerun/run.json), its branch tip, its jobs and a failed-jobs log
(fixtures/rerun/logs/*.txt, in `gh run view --log-failed`'s format). Each test copies
them, changes what its case is about, and checks the one line printed and whether
`gh run rerun` was called. What this does not prove: that GitHub's API still answers in
this shape (the field names are those of the REST API's workflow-run and job objects).
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


@pytest.fixture()
def fake_gh(tmp_path):
    data = tmp_path / "gh"
    shutil.copytree(FIXTURES / "rerun", data)
    calls = tmp_path / "calls.log"

    def go(log: str, *, extra_log="", run_patch=None, jobs=None, tip=TIP):
        (data / "log-failed.txt").write_text((data / "logs" / log).read_text() + extra_log)
        r = json.loads((data / "run.json").read_text())
        r.update(run_patch or {})
        (data / "run.json").write_text(json.dumps(r))
        if jobs is not None:
            (data / "jobs.json").write_text(json.dumps({"jobs": jobs}))
        if tip is None:
            (data / "branch-dev.json").unlink()
        else:
            (data / "branch-dev.json").write_text(json.dumps({"name": "dev", "commit": {"sha": tip}}))
        env = tool_env(GH_REPO=REPO, RERUN_DELAY="0", FAKE_GH_DIR=str(data), FAKE_GH_CALLS=str(calls))
        env["PATH"] = f"{FIXTURES / 'bin'}{os.pathsep}{env['PATH']}"
        res = run([str(SCRIPT), "4242"], env=env)
        made = calls.read_text().splitlines() if calls.exists() else []
        calls.unlink(missing_ok=True)
        return res, made

    return go


def reran(calls):
    return [c for c in calls if c.startswith("run rerun")]


@pytest.mark.parametrize("log,cause", [
    ("transient-qemu.txt", "emulation error"),
    ("transient-registry.txt", "registry/network 5xx"),
])
def test_transient_failure_on_the_branch_tip_is_re_run(fake_gh, log, cause):
    res, calls = fake_gh(log)
    assert res.returncode == 0, res.stderr
    assert reran(calls) == ["run rerun 4242 --failed"]
    (line,) = res.stdout.splitlines()
    assert line.startswith("ci-rerun: re-run run 4242 attempt 1 (dev@1111111)") and f"test: {cause}" in line
    # The exact questions asked, in order: the run, its branch's tip, its jobs, the log.
    assert calls == [
        f"api repos/{REPO}/actions/runs/4242",
        f"api repos/{REPO}/branches/dev",
        f"api repos/{REPO}/actions/runs/4242/attempts/1/jobs?per_page=100",
        "run view 4242 --attempt 1 --log-failed",
        "run rerun 4242 --failed",
    ]


@pytest.mark.parametrize("log,job", [
    ("genuine-clippy.txt", "test"),
    ("genuine-test.txt", "test"),
    ("genuine-trivy.txt", "scan (Trivy, api)"),
])
def test_genuine_failure_is_never_re_run(fake_gh, log, job):
    res, calls = fake_gh(log, jobs=[{"name": job, "conclusion": "failure"}])
    assert res.returncode == 0, res.stderr
    assert not reran(calls)
    assert res.stdout.strip().endswith(f"job {job!r} failed for a non-transient reason; not re-run")


def test_a_genuine_failure_beside_a_transient_one_is_not_re_run(fake_gh):
    # Re-running would only fail the genuine job again.
    clippy = (FIXTURES / "rerun" / "logs" / "genuine-clippy.txt").read_text().replace("test\t", "lint\t")
    res, calls = fake_gh("transient-registry.txt", extra_log=clippy, jobs=[
        {"name": "test", "conclusion": "failure"}, {"name": "lint", "conclusion": "failure"}])
    assert res.returncode == 0 and not reran(calls)
    assert res.stdout.strip().endswith("job 'lint' failed for a non-transient reason; not re-run")


def test_a_failed_job_without_any_log_lost_its_runner(fake_gh):
    res, calls = fake_gh("transient-qemu.txt", jobs=[
        {"name": "test", "conclusion": "failure"}, {"name": "deploy (dev)", "conclusion": "failure"}])
    assert reran(calls), res.stdout
    assert "deploy (dev): no log (runner lost)" in res.stdout


def test_stale_commit_is_not_re_run(fake_gh):
    res, calls = fake_gh("transient-qemu.txt", tip=NEWER)
    assert res.returncode == 0 and not reran(calls)
    assert "stale, dev is now at 2222222" in res.stdout
    # Decided before reading any log.
    assert not any(c.startswith("run view") for c in calls)


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
    res, calls = fake_gh("transient-qemu.txt", run_patch={"run_attempt": attempt})
    assert bool(reran(calls)) is expect, res.stdout
    if not expect:
        assert "attempt cap reached (3 attempts ran)" in res.stdout


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
    job = rerun["jobs"]["rerun"]
    cond = " ".join(job["if"].split())
    for part in ("github.event.workflow_run.conclusion == 'failure'",
                 "github.event.workflow_run.run_attempt < 3",
                 "head_repository.full_name == github.repository",
                 "github.event.workflow_run.actor.login != 'dependabot[bot]'",
                 "github.event.workflow_run.triggering_actor.login != 'dependabot[bot]'"):
        assert part in cond, part
    steps = job["steps"]
    uses = [s["uses"].split("@")[0] for s in steps if "uses" in s]
    assert uses == ["actions/checkout"], "the only action: checkout of the default branch"
    checkout = steps[0]["with"]
    assert "ref" not in checkout and "repository" not in checkout, "never the failed run's code"
    runs = [s["run"].strip() for s in steps if "run" in s]
    assert runs == ['python3 scripts/ci-rerun.py "$RUN_ID"']
    assert steps[-1]["env"]["RUN_ID"] == "${{ github.event.workflow_run.id }}"
    # The script's own cap is the workflow's: `< 3` and MAX_ATTEMPTS 3.
    assert 'os.environ.get("MAX_ATTEMPTS", "3")' in SCRIPT.read_text()
