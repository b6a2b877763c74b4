"""The EKS access the deploy needs (k8s/eks-deployer-rbac.yaml) is exactly what it does.

deploy-eks.sh runs against stand-in kubectls in every path that reaches the cluster: success
with the smoke test, a rollout that fails with nothing to undo (first deploy) and diagnostics,
the pull-secret preflight (test_deploy_script.py's stand-in), and a failed rollout that is
undone (`rollout undo --to-revision`, the undo's `rollout status`) against the stand-in cluster
of test_rollback.py. Each recorded kubectl call is turned into the API requests real kubectl
makes for it (`requests`, below), and the RBAC file must grant those and no more, namespace by
namespace:
- every request is granted where it is made;
- every rule serves some request in every namespace it is bound in (a ClusterRoleBinding of a
  namespaced resource, which grants it in every namespace, only where `CLUSTER_WIDE` says why);
- outside the namespaces the deploy owns (cluster scope, kube-system), a rule whose requests
  all name their object is limited to those names (resourceNames). Inside orion-<env> and
  monitoring the renders decide the names, so rules there are not.

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
from test_rollback import deploy, eks_cluster

RBAC = ROOT / "k8s" / "eks-deployer-rbac.yaml"
GROUP = "orion-deployer"
APP = "<orion-env>"  # orion-dev, orion-uat, orion-prod: the same calls in each
APP_NAMESPACES = {m["namespace"] for m in MAPPING.values()}
OWNED = APP_NAMESPACES | {"monitoring"}

# kind -> (API group, resource) for what the renders hold (Kubernetes API reference).
RESOURCES = {
    "Namespace": ("", "namespaces"), "ServiceAccount": ("", "serviceaccounts"), "ConfigMap": ("", "configmaps"),
    "Secret": ("", "secrets"), "Service": ("", "services"), "Deployment": ("apps", "deployments"),
    "PersistentVolumeClaim": ("", "persistentvolumeclaims"),
    "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
    "HorizontalPodAutoscaler": ("autoscaling", "horizontalpodautoscalers"),
    "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
    "Role": ("rbac.authorization.k8s.io", "roles"), "RoleBinding": ("rbac.authorization.k8s.io", "rolebindings"),
}
# What `kubectl get` accepts below -> (API group, resource).
GET_KINDS = {
    "daemonsets": ("apps", "daemonsets"), "apiservice": ("apiregistration.k8s.io", "apiservices"),
    "secret": ("", "secrets"), "serviceaccount": ("", "serviceaccounts"), "configmap": ("", "configmaps"),
    "deploy": ("apps", "deployments"), "deployment": ("apps", "deployments"), "rs": ("apps", "replicasets"),
    "pods": ("", "pods"), "events": ("", "events"), "nodes": ("", "nodes"),
    "storageclass": ("storage.k8s.io", "storageclasses"),
}
CLUSTER_SCOPED = {"namespaces", "nodes", "storageclasses", "apiservices"}
# Namespaced resources granted in every namespace (ClusterRoleBinding), and why no Role would do.
CLUSTER_WIDE = {
    ("apps", "daemonsets", "list"):
        "the preflight lists DaemonSets in kube-system and calico-system; calico-system exists only "
        "where the Tigera operator runs, a RoleBinding cannot be made in a namespace that does not "
        "exist, and without one the list is Forbidden instead of empty",
}

Request = tuple[str, str, str, str, str]  # namespace ("" = cluster scope), group, resource, verb, name ("" = none)


def requests(call: str) -> set[Request]:
    """The API requests of one kubectl call, as kubectl makes them (kubernetes/kubectl at
    v0.35.4, the kubectl 1.35 the deploy uses for EKS 1.35; unchanged since v0.34.7 in the files
    named, and at dee3483a, the 1.36 line). A request that names one object carries its name.
    - version: GET /version, a non-resource URL every client may read (default ClusterRole
      system:public-info-viewer), so nothing to grant
    - get KIND NAME [--ignore-not-found]: a GET of that object (pkg/cmd/get/get.go; a 404 is
      turned into exit 0, the request is the same); get KIND [-l SEL] -o json|name: a LIST
      (with the label selector; cluster-scoped for nodes and storageclasses)
    - apply -f FILE: per object a GET of it by name, then POST (create) when absent or PATCH
      of it (pkg/cmd/apply/apply.go, client-side apply); a Role also needs the Role's own
      permissions held (RBAC escalation prevention, kubernetes.io/docs/reference/access-authn-
      authz/rbac/#privilege-escalation-prevention-and-bootstrapping)
    - rollout status deployment/D: GET, then LIST+WATCH of it by name
      (pkg/cmd/rollout/rollout_status.go); the same after an undo
    - rollout undo deployment/D --to-revision=N: GET of the Deployment (rollout_undo.go's
      builder .Latest(): cli-runtime v0.35.4 pkg/resource/visitor.go RetrieveLatest), GET again
      and LIST of the ReplicaSets by its selector (pkg/polymorphichelpers/rollback.go
      DeploymentRollbacker.Rollback, deploymentRevision; pkg/util/deployment GetAllReplicaSets
      -> listReplicaSets), then PATCH of the Deployment (JSON patch of spec.template and the
      annotations; not sent when the template already matches: "skipped rollback")
    - port-forward svc/S or deploy/D: GET of the object, LIST of its pods by selector, GET of
      the pod, POST pods/portforward (pkg/cmd/portforward/portforward.go,
      pkg/polymorphichelpers/attachablepodforobject.go)
    - get deploy,rs,pods: LIST of each; get events: LIST; describe pods: LIST pods, then per
      pod a GET and a LIST of its events (pkg/cmd/describe/describe.go, pkg/describe
      PodDescriber.Describe); logs -l SEL: LIST pods, GET pods/log (pkg/cmd/logs)
    """
    argv = shlex.split(call)[1:]
    ns = ""
    if argv[:1] == ["-n"]:
        ns, argv = argv[1], argv[2:]
    verb = argv[0]
    if verb in ("kustomize", "version"):
        return set()  # kustomize: local; version: GET /version, granted to everyone by default
    if verb == "get":
        named = len(argv) > 2 and not argv[2].startswith("-")
        out = set()
        for k in argv[1].split(","):
            group, res = GET_KINDS[k]
            where = "" if res in CLUSTER_SCOPED else ns
            out.add((where, group, res, "get", argv[2]) if named else (where, group, res, "list", ""))
        return out
    if verb == "apply":
        path = Path(argv[argv.index("-f") + 1])
        out = set()
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            group, res = RESOURCES[doc["kind"]]
            where, name = doc["metadata"].get("namespace", ""), doc["metadata"]["name"]
            out |= {(where, group, res, "get", name), (where, group, res, "create", ""),
                    (where, group, res, "patch", name)}
            if doc["kind"] == "Role":
                for rule in doc["rules"]:
                    out |= {(where, g, r, v, "") for g in rule["apiGroups"] for r in rule["resources"]
                            for v in rule["verbs"]}
        return out
    if verb == "rollout" and argv[1] in ("status", "undo"):
        name = argv[2].removeprefix("deployment/")
        if argv[1] == "status":
            return {(ns, "apps", "deployments", "get", name), (ns, "apps", "deployments", "list", ""),
                    (ns, "apps", "deployments", "watch", "")}
        return {(ns, "apps", "deployments", "get", name), (ns, "apps", "replicasets", "list", ""),
                (ns, "apps", "deployments", "patch", name)}
    if verb == "port-forward":
        kind, name = argv[1].split("/")
        group, res = {"svc": ("", "services"), "deploy": ("apps", "deployments")}[kind]
        return {(ns, group, res, "get", name), (ns, "", "pods", "list", ""), (ns, "", "pods", "get", "<pod>"),
                (ns, "", "pods/portforward", "create", "<pod>")}
    if verb == "describe" and argv[1] == "pods":
        return {(ns, "", "pods", "list", ""), (ns, "", "pods", "get", "<pod>"), (ns, "", "events", "list", "")}
    if verb == "logs":
        return {(ns, "", "pods", "list", ""), (ns, "", "pods/log", "get", "<pod>")}
    raise AssertionError(f"no request model for kubectl call {call!r}: add it here and to {RBAC.name}")


def app(value: str) -> str:
    """orion-dev/uat/prod (as a namespace or a Namespace's name) -> APP."""
    return APP if value in APP_NAMESPACES else value


def needed_of(calls: list[str]) -> dict[str, set[tuple[str, str, str, str]]]:
    """namespace (APP for the app namespaces, "" = cluster scope) -> {(group, resource, verb, name)}.
    The app's Namespace object, applied under one environment's name, stands for all three."""
    out: dict[str, set[tuple[str, str, str, str]]] = {}
    for c in calls:
        for ns, group, res, verb, name in requests(c):
            names = sorted(APP_NAMESPACES) if res == "namespaces" and name in APP_NAMESPACES else [name]
            out.setdefault(app(ns), set()).update((group, res, verb, n) for n in names)
    return out


def granted() -> dict[str, list[tuple[str, str, str, frozenset[str]]]]:
    """namespace ("" = ClusterRoleBinding) -> [(group, resource, verb, resourceNames or empty)]
    the group orion-deployer holds, one entry per rule, resource and verb."""
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    roles = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d
             for d in docs if d["kind"] in ("Role", "ClusterRole")}
    out: dict[str, list[tuple[str, str, str, frozenset[str]]]] = {}
    for b in docs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        assert b["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": GROUP}], b
        ns = b["metadata"].get("namespace", "")
        ref = b["roleRef"]
        role = roles[(ref["kind"], "" if ref["kind"] == "ClusterRole" else ns, ref["name"])]
        for rule in role["rules"]:
            names = frozenset(rule.get("resourceNames", []))
            out.setdefault(ns, []).extend(
                (g, r, v, names) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"])
    return out


def covers(grant: tuple[str, str, str, frozenset[str]], want: tuple[str, str, str, str]) -> bool:
    g, r, v, names = grant
    return (g, r, v) == want[:3] and (not names or want[3] in names)


def deploy_calls(tmp_path: Path) -> list[str]:
    """Every kubectl call deploy-eks.sh makes on the cluster, over the paths that reach it."""
    calls = []
    for name, kwargs in (("ok", dict(rollout_fails=False)), ("rollout-fails", {}),
                         ("pull-secret", dict(public=False, extra={"ORION_IMAGE_PULL_SECRET": "ghcr-pull"}))):
        d = tmp_path / name
        d.mkdir()
        _, recorded, _ = eks(d, **kwargs)
        calls += [c for c in recorded if c.startswith("kubectl ")]
    d = tmp_path / "undo"
    d.mkdir()
    res, recorded, results, _ = deploy(d, eks_cluster(), target="eks")
    assert results["eks_rollback"].startswith("done: orion-uat/api back at revision 3"), res.stderr
    calls += [f"kubectl {c}" for c in recorded]
    return calls


def test_the_rbac_file_grants_exactly_what_the_deploy_requests(tmp_path):
    calls = deploy_calls(tmp_path)
    for what in (" port-forward ", " logs ", " rollout undo ", " get configmap ", " get nodes ", " get storageclass "):
        assert any(what in c for c in calls), f"no path ran kubectl{what}"
    needed = needed_of(calls)
    have = granted()
    cluster_wide = have.pop("", [])
    assert set(have) == {"kube-system", "monitoring", *APP_NAMESPACES}, sorted(have)
    assert set(needed) == {"", "kube-system", "calico-system", "monitoring", APP}, sorted(needed)

    # Every request is granted where it is made.
    for ns, want in needed.items():
        for where in sorted(APP_NAMESPACES) if ns == APP else [ns]:
            rules = have.get(where, []) + cluster_wide
            missing = sorted(w for w in want if not any(covers(g, w) for g in rules))
            assert not missing, f"{where or 'cluster scope'}: the deploy requests {missing}, not granted"

    def served(where: str, g) -> set[tuple[str, str, str, str]]:
        """The requests rule g, bound in `where`, grants."""
        if where:
            scope = [needed[app(where)]]
        elif g[1] in CLUSTER_SCOPED:
            scope = [needed[""]]
        else:
            assert g[:3] in CLUSTER_WIDE, (f"{RBAC.name} grants {g[:3]} in every namespace: bind it in a namespace (or, "
                                          "if it is cluster-scoped, add it to CLUSTER_SCOPED)")
            scope = [w for ns, w in needed.items() if ns]
        return {w for want in scope for w in want if covers(g, w)}

    for where, rules in [("", cluster_wide), *have.items()]:
        for g in rules:
            # Every rule serves a request in every namespace it is bound in ...
            assert served(where, g), f"{RBAC.name} grants in {where or 'cluster scope'} what no call requests: {g}"
            # ... and outside the namespaces the deploy owns, a read of named objects only those.
            names = sorted({w[3] for w in served(where, g)})
            if where not in OWNED and not g[3] and "" not in names:
                pytest.fail(f"{RBAC.name}: {g[:3]} in {where or 'cluster scope'} is only requested for {names}: "
                            "limit it with resourceNames")


def test_a_new_kubectl_call_must_be_documented():
    """The request model refuses a call it does not know, so a new kubectl call in the deploy
    scripts fails above until it and its permission are written down."""
    with pytest.raises(AssertionError, match="no request model"):
        requests("kubectl -n orion-prod delete deployment api")
