"""The EKS access the deploy needs (k8s/eks-deployer-rbac.yaml) is exactly what it does.

deploy-eks.sh runs against the stand-in kubectl of test_deploy_script.py in every path that
reaches the cluster (success with smoke test; a failed rollout with diagnostics; the
pull-secret preflight); each recorded kubectl call is turned into the API requests real
kubectl makes for it (`REQUESTS`, below), and the RBAC file must grant those and no more.

What this does not prove: that EKS maps the access entry's Kubernetes group as documented
(AWS's side, only a real cluster shows it), and the request model of each kubectl command is
ours, written from kubectl's source (named per command), not observed on an API server.
"""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from conftest import MAPPING, ROOT
from test_deploy_script import eks

RBAC = ROOT / "k8s" / "eks-deployer-rbac.yaml"
GROUP = "orion-deployer"

# kind -> (API group, resource) for what the renders hold (Kubernetes API reference).
RESOURCES = {
    "Namespace": ("", "namespaces"), "ServiceAccount": ("", "serviceaccounts"), "ConfigMap": ("", "configmaps"),
    "Secret": ("", "secrets"), "Service": ("", "services"), "Deployment": ("apps", "deployments"),
    "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
    "HorizontalPodAutoscaler": ("autoscaling", "horizontalpodautoscalers"),
    "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
    "Role": ("rbac.authorization.k8s.io", "roles"), "RoleBinding": ("rbac.authorization.k8s.io", "rolebindings"),
}


def requests(call: str) -> set[tuple[str, str, str, str]]:
    """(namespace or "" for cluster scope, API group, resource, verb) for one kubectl call, as
    kubectl v1.3x makes them (kubernetes/kubectl, pkg/cmd/...):
    - version: GET /version, a non-resource URL every client may read (default ClusterRole
      system:public-info-viewer), so nothing to grant
    - get KIND NAME / get KIND -o json: a GET of the object, or a LIST (get/get.go)
    - apply -f FILE: per object a GET, then POST (create) when absent or PATCH (apply/apply.go,
      client-side apply); a Role/RoleBinding also needs the Role's own permissions held
      (RBAC escalation prevention, kubernetes.io/docs/reference/access-authn-authz/rbac)
    - rollout status deployment/D: GET, then LIST+WATCH of it by name (rollout/rollout_status.go)
    - port-forward svc/S or deploy/D: GET of the object, LIST of its pods by selector, GET of
      the pod, POST pods/portforward (portforward/portforward.go, polymorphichelpers
      attachablepodforobject.go)
    - get deploy,rs,pods: LIST of each; get events: LIST; describe pods: LIST pods + LIST
      events; logs -l SEL: LIST pods, GET pods/log (get, describe, logs)
    """
    argv = shlex.split(call)[1:]
    ns = ""
    if argv[:1] == ["-n"]:
        ns, argv = argv[1], argv[2:]
    verb = argv[0]
    out: set[tuple[str, str, str, str]] = set()
    if verb == "kustomize":
        return out  # local, no API request
    if verb == "version":
        return out  # GET /version: system:public-info-viewer, granted to everyone by default
    if verb == "get":
        kinds = argv[1].split(",")
        named = len(argv) > 2 and not argv[2].startswith("-")
        short = {"daemonsets": ("apps", "daemonsets"), "apiservice": ("apiregistration.k8s.io", "apiservices"),
                 "secret": ("", "secrets"), "serviceaccount": ("", "serviceaccounts"),
                 "deploy": ("apps", "deployments"), "rs": ("apps", "replicasets"), "pods": ("", "pods"),
                 "events": ("", "events")}
        for k in kinds:
            group, res = short[k]
            out.add((ns if res != "apiservices" else "", group, res, "get" if named else "list"))
        return out
    if verb == "apply":
        path = Path(argv[argv.index("-f") + 1])
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            group, res = RESOURCES[doc["kind"]]
            where = doc["metadata"].get("namespace", "")
            out |= {(where, group, res, v) for v in ("get", "create", "patch")}
            if doc["kind"] == "Role":
                for rule in doc["rules"]:
                    out |= {(where, g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
        return out
    if verb == "rollout" and argv[1] == "status":
        return {(ns, "apps", "deployments", v) for v in ("get", "list", "watch")}
    if verb == "port-forward":
        kind = argv[1].split("/")[0]
        target = {"svc": ("", "services"), "deploy": ("apps", "deployments")}[kind]
        return {(ns, *target, "get"), (ns, "", "pods", "list"), (ns, "", "pods", "get"),
                (ns, "", "pods/portforward", "create")}
    if verb == "describe" and argv[1] == "pods":
        return {(ns, "", "pods", "list"), (ns, "", "events", "list")}
    if verb == "logs":
        return {(ns, "", "pods", "list"), (ns, "", "pods/log", "get")}
    raise AssertionError(f"no request model for kubectl call {call!r}: add it here and to {RBAC.name}")


def granted() -> dict[str, set[tuple[str, str, str]]]:
    """namespace ("" = cluster scope) -> {(group, resource, verb)} the group orion-deployer holds."""
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    roles = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d
             for d in docs if d["kind"] in ("Role", "ClusterRole")}
    out: dict[str, set[tuple[str, str, str]]] = {}
    for b in docs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        assert b["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": GROUP}], b
        ns = b["metadata"].get("namespace", "")
        ref = b["roleRef"]
        role = roles[(ref["kind"], "" if ref["kind"] == "ClusterRole" else ns, ref["name"])]
        for rule in role["rules"]:
            out.setdefault(ns, set()).update(
                (g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"])
    return out


def deploy_calls(tmp_path: Path) -> list[str]:
    """Every kubectl call deploy-eks.sh makes on the cluster, over the paths that reach it."""
    calls = []
    for name, kwargs in (("ok", dict(rollout_fails=False)), ("rollout-fails", {}),
                         ("pull-secret", dict(public=False, extra={"ORION_IMAGE_PULL_SECRET": "ghcr-pull"}))):
        d = tmp_path / name
        d.mkdir()
        _, recorded, _ = eks(d, **kwargs)
        calls += [c for c in recorded if c.startswith("kubectl ")]
    return calls


def test_the_rbac_file_grants_exactly_what_the_deploy_requests(tmp_path):
    calls = deploy_calls(tmp_path)
    assert any(" port-forward " in c for c in calls) and any(" logs " in c for c in calls), "every path ran"
    needed: dict[str, set[tuple[str, str, str]]] = {}
    for c in calls:
        for ns, group, res, verb in requests(c):
            needed.setdefault(ns, set()).add((group, res, verb))
    have = granted()
    # The prod run stands for every environment: the same calls in orion-<env>.
    app = needed.pop("orion-prod")
    for m in MAPPING.values():
        missing = app - have.get(m["namespace"], set())
        assert not missing, f"{m['namespace']}: the deploy requests {sorted(missing)}, not granted"
    for ns, want in needed.items():
        missing = want - have.get(ns, set())
        assert not missing, f"{ns or 'cluster scope'}: the deploy requests {sorted(missing)}, not granted"
    union_needed = app | set().union(*needed.values())
    union_granted = set().union(*have.values())
    extra = union_granted - union_needed
    assert not extra, f"{RBAC.name} grants what no call requests: {sorted(extra)}"
    assert set(have) == {"", "kube-system", "monitoring", *(m["namespace"] for m in MAPPING.values())}


def test_a_new_kubectl_call_must_be_documented():
    """The request model refuses a call it does not know, so a new kubectl call in the deploy
    scripts fails above until it and its permission are written down."""
    with pytest.raises(AssertionError, match="no request model"):
        requests("kubectl -n orion-prod delete deployment api")
