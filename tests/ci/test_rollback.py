"""A failed rollout is undone, not left half-done (scripts/deploy-lib.sh orion_rollout /
orion_undo, called by deploy-kind.sh and deploy-eks.sh), against the stand-in cluster
tests/ci/fixtures/cluster/kubectl.py (its docstring names the kubectl source of each answer)
and the docker / kind / aws / curl stand-ins of test_deploy_script.py.

The environment before each deploy: api at revision 3 (template api-old), worker at revision 5
(worker-old), the monitoring Deployments at revision 2. The deploy renders api-new and
worker-new; the monitoring templates are unchanged unless a test says otherwise.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import DIGEST_A, DIGEST_B, REGISTRY, kv, run, tool_env
from test_deploy_script import CONTROLLER_ON, EKS_CREDS, EMPTY, NETPOL_ON, STORAGE, calls_of, stand_ins

STANDIN = Path(__file__).resolve().parent / "fixtures" / "cluster" / "kubectl.py"
NS = "orion-uat"
MONITORING = ("prometheus", "alertmanager", "grafana")


def cluster(*, existing=True, bad=("api-new",), monitoring_changes=False) -> dict:
    deps = {}
    for name, rev in (("api", "3"), ("worker", "5")):
        deps[f"{NS}/{name}"] = {"history": {str(int(rev) - 1): f"{name}-older", rev: f"{name}-old"} if existing else {},
                                "current": f"{name}-old" if existing else None, "applied": f"{name}-new"}
    for name in MONITORING:
        new = f"{name}-new" if monitoring_changes else f"{name}-old"
        deps[f"monitoring/{name}"] = {"history": {"2": f"{name}-old"} if existing else {},
                                      "current": f"{name}-old" if existing else None, "applied": new}
    return {"deployments": deps, "outcome": {t: "deadline" for t in bad}}


def deploy(tmp_path, state: dict, *, target="kind", env_name="uat"):
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    state_file = tmp_path / "cluster.json"
    state_file.write_text(json.dumps(state))
    stand_ins(bin_dir, log, kubectl=f'exec python3 {STANDIN} "$@"\n',
              curl='case "$*" in *ghcr.io/token*) echo \'{"token":"anon"}\' ;; *) exit 0 ;; esac\n')
    results = tmp_path / "results.env"
    env = tool_env(ORION_API_IMAGE=f"{REGISTRY}/orion-api@{DIGEST_A}", ORION_WORKER_IMAGE=f"{REGISTRY}/orion-worker@{DIGEST_B}",
                   ORION_RESULTS=str(results), ORION_OUT_DIR=str(tmp_path / "out"), RETRY_DELAY="0",
                   KIND_PLATFORM="linux/amd64", FAKE_CLUSTER=str(state_file))
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    if target == "kind":
        res = run(["scripts/deploy-kind.sh", "up", env_name], env=env)
    else:
        env.update(EKS_CREDS, GRAFANA_ADMIN_PASSWORD="a real one")
        res = run(["scripts/deploy-eks.sh", env_name], env=env)
    calls = [c.removeprefix("kubectl ") for c in calls_of(log)
             if c.startswith("kubectl ") and not c.startswith("kubectl kustomize")]
    after = json.loads(state_file.read_text())["deployments"]
    return res, calls, (kv(results.read_text()) if results.exists() else {}), after


def undo_calls(calls):
    return [c for c in calls if " rollout undo " in c]


def test_a_failed_api_rollout_undoes_every_deployment_then_prints_the_diagnostics(tmp_path):
    res, calls, results, after = deploy(tmp_path, cluster())
    assert res.returncode != 0
    # What each Deployment was at, read before anything was applied.
    reads = [c for c in calls if " get deployment " in c]
    first_apply = next(i for i, c in enumerate(calls) if c.startswith("apply "))
    assert len(reads) == 5 and all(calls.index(r) < first_apply for r in reads)
    assert reads[0] == (f"-n {NS} get deployment api --ignore-not-found "
                        "-o jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}")
    # The api's rollout fails; the worker's is never waited for; every Deployment goes back.
    rollouts = [c.split(" --timeout")[0] for c in calls if " rollout status " in c]
    assert rollouts == [f"-n {NS} rollout status deployment/api",  # fails: progress deadline
                        f"-n {NS} rollout status deployment/api",  # the undo, waited for
                        f"-n {NS} rollout status deployment/worker"]
    assert undo_calls(calls) == [
        f"-n {NS} rollout undo deployment/api --to-revision=3",
        f"-n {NS} rollout undo deployment/worker --to-revision=5",
        "-n monitoring rollout undo deployment/prometheus --to-revision=2",
        "-n monitoring rollout undo deployment/alertmanager --to-revision=2",
        "-n monitoring rollout undo deployment/grafana --to-revision=2",
    ]
    # ... and only then the diagnostics.
    last_undo_wait = max(i for i, c in enumerate(calls) if " rollout " in c)
    assert calls[last_undo_wait + 1] == f"-n {NS} get deploy,rs,pods -o wide"
    assert {k: v["current"] for k, v in after.items()} == {
        f"{NS}/api": "api-old", f"{NS}/worker": "worker-old",
        **{f"monitoring/{m}": f"{m}-old" for m in MONITORING}}
    assert 'error: deployment "api" exceeded its progress deadline' in res.stderr
    assert results["status"] == "failed during rollout"
    assert results["rollback"] == (
        f"done: {NS}/api back at revision 3; {NS}/worker back at revision 5; monitoring/prometheus unchanged by "
        "this deploy; monitoring/alertmanager unchanged by this deploy; monitoring/grafana unchanged by this deploy")
    assert f"| Undo after the failed rollout | {results['rollback']} |" in res.stdout


def test_a_failed_worker_rollout_brings_the_old_worker_back(tmp_path):
    """The worker is Recreate: left as it is, the environment would have no worker."""
    res, calls, results, after = deploy(tmp_path, cluster(bad=("worker-new",)))
    assert res.returncode != 0
    assert after[f"{NS}/worker"]["current"] == "worker-old" and after[f"{NS}/api"]["current"] == "api-old"
    assert results["rollback"].startswith(f"done: {NS}/api back at revision 3; {NS}/worker back at revision 5;")


def test_a_failed_monitoring_rollout_undoes_the_app_too(tmp_path):
    res, calls, results, after = deploy(tmp_path, cluster(bad=("grafana-new",), monitoring_changes=True))
    assert res.returncode != 0
    assert {k: v["current"] for k, v in after.items()} == {
        f"{NS}/api": "api-old", f"{NS}/worker": "worker-old",
        **{f"monitoring/{m}": f"{m}-old" for m in MONITORING}}
    assert "monitoring/grafana back at revision 2" in results["rollback"]


def test_when_the_undo_is_refused_the_deploy_says_so_and_still_fails(tmp_path):
    state = cluster()
    state["undo_refused"] = [f"{NS}/api"]
    res, calls, results, after = deploy(tmp_path, state)
    assert res.returncode != 0
    # The others are still put back, and the diagnostics still printed.
    assert after[f"{NS}/worker"]["current"] == "worker-old" and after[f"{NS}/api"]["current"] == "api-new"
    assert f"-n {NS} get deploy,rs,pods -o wide" in calls
    assert results["rollback"].startswith(
        f"INCOMPLETE: {NS}/api undo to revision 3 FAILED (error: failed restoring revision 3: deployments.apps "
        '"api" is forbidden: ')
    assert f"{NS}/worker back at revision 5" in results["rollback"]


def test_kubectl_1_36s_warning_before_an_undo_changes_no_verdict(tmp_path):
    """kubectl >= 1.36 (the .venv one, used for 1.36-1.38 clusters) warns on stderr before every
    undo of an applied Deployment; each verdict still comes from kubectl's own answer."""
    state = cluster()
    state["kubectl_1_36"] = True
    state["undo_refused"] = [f"{NS}/api"]
    res, calls, results, after = deploy(tmp_path, state)
    assert res.returncode != 0
    assert results["rollback"].startswith(
        f"INCOMPLETE: {NS}/api undo to revision 3 FAILED (error: failed restoring revision 3: deployments.apps "
        '"api" is forbidden: ')
    assert f"{NS}/worker back at revision 5; monitoring/prometheus unchanged by this deploy" in results["rollback"]
    assert "Warning: resource deployments/worker was previously managed with 'kubectl apply'" in res.stderr


def test_when_the_old_revision_does_not_come_back_either_the_deploy_says_so(tmp_path):
    res, calls, results, after = deploy(tmp_path, cluster(bad=("api-new", "api-old")))
    assert res.returncode != 0
    assert results["rollback"].startswith(
        f"INCOMPLETE: {NS}/api undone to revision 3 but that rollout did not finish; {NS}/worker back at revision 5")
    assert "undo orion-uat/api: revision 3 did not finish rolling out either" in res.stderr


def test_a_first_deploy_has_nothing_to_go_back_to(tmp_path):
    res, calls, results, after = deploy(tmp_path, cluster(existing=False))
    assert res.returncode != 0 and not undo_calls(calls)
    assert results["rollback"] == "done: " + "; ".join(
        [f"{NS}/api new, left as applied", f"{NS}/worker new, left as applied"]
        + [f"monitoring/{m} new, left as applied" for m in MONITORING])


def test_a_good_rollout_undoes_nothing(tmp_path):
    res, calls, results, after = deploy(tmp_path, cluster(bad=()))
    assert not undo_calls(calls) and "rollback" not in results, res.stderr
    assert results["rollout"].startswith("ok")
    assert after[f"{NS}/api"]["current"] == "api-new" and after[f"{NS}/api"]["history"]["4"] == "api-new"


def test_nothing_is_applied_when_the_revisions_cannot_be_read(tmp_path):
    state = cluster()
    read = f"-n {NS} get deployment api --ignore-not-found -o jsonpath={{.metadata.annotations.deployment\\.kubernetes\\.io/revision}}"
    state["answers"] = {read: {"stderr": "error: You must be logged in to the server (Unauthorized)\n", "rc": 1}}
    res, calls, results, _ = deploy(tmp_path, state)
    assert res.returncode != 0 and not any(c.startswith("apply ") for c in calls)
    assert "cannot read the revision of deployment orion-uat/api before applying (nothing applied)" in res.stderr


def eks_cluster(**kwargs) -> dict:
    """cluster(**kwargs) that also answers the EKS preflight's reads, as test_deploy_script's
    stand-in does for a cluster that passes them (VPC CNI with network policy on, a default
    StorageClass, metrics-server)."""
    state = cluster(**kwargs)
    preflight = {
        "-n kube-system get daemonsets -o json": NETPOL_ON,
        "-n calico-system get daemonsets -o json": EMPTY,
        "-n kube-system get configmap amazon-vpc-cni --ignore-not-found -o json": CONTROLLER_ON,
        "get storageclass -o json": STORAGE,
    }
    state["answers"] = {k: {"stdout": json.dumps(v)} for k, v in preflight.items()}
    state["answers"]['get apiservice v1beta1.metrics.k8s.io -o jsonpath={.status.conditions[?(@.type=="Available")].status}'] = {"stdout": "True"}
    return state


def test_eks_undoes_a_failed_rollout_the_same_way(tmp_path):
    res, calls, results, after = deploy(tmp_path, eks_cluster(), target="eks")
    assert res.returncode == 1, res.stderr
    assert after[f"{NS}/api"]["current"] == "api-old"
    assert results["eks"].startswith("FAILED during rollout on orion-eks")
    assert results["eks_rollback"].startswith(f"done: {NS}/api back at revision 3; {NS}/worker back at revision 5")
    diag = calls.index(f"-n {NS} get deploy,rs,pods -o wide")
    assert diag > max(i for i, c in enumerate(calls) if " rollout undo " in c)
    summary = run(["scripts/deploy-kind.sh", "summary", str(tmp_path / "results.env")], check=True).stdout
    assert f"| EKS undo after the failed rollout | {results['eks_rollback']} |" in summary


def test_every_rendered_deployment_is_remembered_and_waited_for(kubectl):
    """Both scripts remember (before the apply) and wait for (after it) the same Deployments,
    and those are every Deployment the renders contain."""
    import re
    import yaml
    root = Path(__file__).resolve().parents[2]
    rendered = {}
    for render in ("dev", "uat", "prod", "monitoring"):
        if render == "monitoring":
            text = run(["k8s/render-monitoring.sh"], env=tool_env(KUBECTL=kubectl), check=True).stdout
        else:
            text = run([kubectl, "kustomize", f"k8s/overlays/{render}"], check=True).stdout
        rendered[render] = sorted(d["metadata"]["name"] for d in yaml.safe_load_all(text)
                                  if d and d["kind"] == "Deployment")
    assert rendered == {"dev": ["api", "worker"], "uat": ["api", "worker"], "prod": ["api", "worker"],
                        "monitoring": sorted(MONITORING)}
    for script in ("deploy-kind.sh", "deploy-eks.sh"):
        body = "\n".join(l for l in (root / "scripts" / script).read_text().splitlines()
                         if not l.lstrip().startswith("#"))
        remembered = re.findall(r"^\s*orion_remember_revisions (\S+) ([a-z ]+)$", body, re.M)
        waited = re.findall(r"orion_rollout (\S+) ([a-z ]+?)\s*(?:;|\|\||$)", body, re.M)
        assert remembered == waited, (script, remembered, waited)
        assert sorted(remembered[0][1].split()) == ["api", "worker"]
        assert remembered[1] == ("monitoring", " ".join(MONITORING))
