#!/usr/bin/env python3
"""Non-cluster helpers of the deploy scripts (scripts/deploy-lib.sh).

Kept in Python because they read and write YAML; everything here runs without a
cluster and is tested by tests/ci.

  ci-env                                branch -> environment -> image tag -> namespace, from
                                        k8s/environments.yaml (the k8s area's data file, the
                                        one source of truth) and GitHub's default variables
                                        GITHUB_EVENT_NAME, GITHUB_REF_NAME, GITHUB_BASE_REF,
                                        GITHUB_SHA. Prints key=value lines ($GITHUB_OUTPUT).
  env-info ENV                          the same mapping for one environment name.
  set-image KUSTOMIZATION NAME=REF...   what `kustomize edit set image NAME=REF` does:
                                        kubectl's embedded kustomize can build but not
                                        edit, and a standalone kustomize is not on PyPI.
                                        Only ever run on a temporary copy of an overlay.
  check RENDERED --namespace NS [--image SERVICE=REF]...
                                        asserts what the deploy relies on: Deployments
                                        api and worker in NS, each running exactly REF.
  summary RESULTS                       the Markdown deployment summary ($GITHUB_STEP_SUMMARY)
                                        from the key=value results file a deploy writes.
  netpol-enforcer DAEMONSETS_JSON... [--configmap JSON] [--auto-mode-nodes N]
                                        EKS preflight: what enforces NetworkPolicies, from the
                                        DaemonSets of kube-system and calico-system, ConfigMap
                                        kube-system/amazon-vpc-cni and the count of EKS Auto Mode
                                        nodes; prints the reason, exit 1 when nothing does.
  default-storage-class STORAGECLASSES_JSON
                                        EKS preflight: the default StorageClass that provisions
                                        Prometheus's claim; exit 1 with the reason when none.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import yaml

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# The services whose images a deploy pins, and the bare image names k8s/base uses.
SERVICES = ("api", "worker")


def load_environments(path: Path) -> dict:
    envs = (yaml.safe_load(path.read_text()) or {}).get("environments") or {}
    for name, env in envs.items():
        for key in ("branch", "namespace", "image_tag"):
            if not env.get(key):
                raise ValueError(f"{path}: environment {name!r} has no {key!r}")
    if not envs:
        raise ValueError(f"{path}: no environments")
    return envs


def ci_env(envs: dict, event: str, ref_name: str, base_ref: str, sha: str, registry: str) -> dict:
    """What one CI run builds, tags, validates and deploys.

    push / workflow_dispatch on an environment branch: publish and deploy that environment.
    pull_request: build and validate the environment of the target branch, never publish.
    Anything else (a manual run on a feature branch): build and validate dev, never publish.
    """
    by_branch = {env["branch"]: name for name, env in envs.items()}
    if event == "pull_request":
        branch, publish = base_ref, False
    else:
        branch = ref_name
        publish = event in ("push", "workflow_dispatch") and branch in by_branch
    name = by_branch.get(branch) or by_branch.get("dev") or sorted(envs)[0]
    env = envs[name]
    if not re.fullmatch(r"[0-9a-f]{7,40}", sha or ""):
        raise ValueError(f"GITHUB_SHA {sha!r} is not a commit id")
    return {
        "env": name,
        "namespace": env["namespace"],
        "overlay": f"k8s/overlays/{name}",
        "tag": env["image_tag"],
        "sha_tag": f"sha-{sha[:7]}",
        "push": "true" if publish else "false",
        "deploy": "true" if publish else "false",
        "api_repo": f"{registry}/orion-api",
        "worker_repo": f"{registry}/orion-worker",
    }


def parse_ref(ref: str) -> dict:
    """Split an image reference into kustomize's newName / newTag / digest."""
    if not ref or any(c.isspace() for c in ref):
        raise ValueError(f"invalid image reference {ref!r}")
    out: dict = {}
    if "@" in ref:
        name, digest = ref.split("@", 1)
        if not DIGEST_RE.match(digest):
            raise ValueError(f"invalid digest in {ref!r}: expected sha256:<64 hex>")
        out["digest"] = digest
    else:
        name = ref
    # A tag is a ':' after the last '/' (a ':' before it is a registry port).
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if "digest" in out:
            # name:tag@digest: the digest wins, as it does for the container runtime.
            pass
        elif not tag:
            raise ValueError(f"empty tag in {ref!r}")
        else:
            out["newTag"] = tag
    if not name:
        raise ValueError(f"invalid image reference {ref!r}")
    out["newName"] = name
    return out


def set_image(kustomization: Path, assignments: list[str]) -> None:
    doc = yaml.safe_load(kustomization.read_text()) or {}
    images = doc.setdefault("images", [])
    for assignment in assignments:
        if "=" not in assignment:
            raise ValueError(f"expected NAME=REF, got {assignment!r}")
        name, ref = assignment.split("=", 1)
        fields = parse_ref(ref)
        entry = next((e for e in images if e.get("name") == name), None)
        if entry is None:
            entry = {"name": name}
            images.append(entry)
        for key in ("newName", "newTag", "digest"):
            entry.pop(key, None)
        if fields["newName"] != name:
            entry["newName"] = fields["newName"]
        for key in ("newTag", "digest"):
            if key in fields:
                entry[key] = fields[key]
    kustomization.write_text(yaml.safe_dump(doc, sort_keys=False))


def deployments(rendered: Path) -> dict:
    found = {}
    for doc in yaml.safe_load_all(rendered.read_text()):
        if isinstance(doc, dict) and doc.get("kind") == "Deployment":
            found[(doc["metadata"].get("namespace"), doc["metadata"]["name"])] = doc
    return found


def check(rendered: Path, namespace: str, images: list[str]) -> list[str]:
    """Return the problems found (empty list: the render is what the deploy expects)."""
    problems = []
    deps = deployments(rendered)
    wanted = dict(a.split("=", 1) for a in images)
    for service in SERVICES:
        dep = deps.get((namespace, service))
        if dep is None:
            problems.append(f"no Deployment {service} in namespace {namespace}")
            continue
        containers = dep["spec"]["template"]["spec"]["containers"]
        main = next((c for c in containers if c["name"] == service), containers[0])
        image = main.get("image", "")
        if service in wanted:
            if image != wanted[service]:
                problems.append(f"Deployment {namespace}/{service} runs {image!r}, expected {wanted[service]!r}")
        elif "/" not in image:
            # k8s/base says `orion-api`; an overlay that forgot `images:` leaves it bare.
            problems.append(f"Deployment {namespace}/{service} image {image!r} was not mapped by the overlay")
    return problems


# ---------------------------------------------------------------- EKS preflight: NetworkPolicy
#
# What enforces NetworkPolicies on EKS, as upstream ships it (checked 2026-08):
#
#  * The VPC CNI add-on: DaemonSet kube-system/aws-node. Its policy agent is the container
#    `aws-eks-nodeagent`, image <account>.dkr.ecr.<region>.amazonaws.com/amazon/
#    aws-network-policy-agent:<tag> (the add-on: v1.x.y-eksbuild.z), started with
#    `--enable-network-policy=<enableNetworkPolicy>` (default "false"); the same setting renders
#    ConfigMap kube-system/amazon-vpc-cni `enable-network-policy-controller`, which switches on
#    the controller that turns NetworkPolicies into the agent's PolicyEndpoints. Source:
#    github.com/aws/amazon-vpc-cni-k8s, charts/aws-vpc-cni (chart 1.23.1) templates/daemonset.yaml
#    and templates/configmap.yaml, values.yaml (nodeAgent.enabled: true, enableNetworkPolicy:
#    "false"); README.md "ConfigMap". The agent parses the flag with spf13/pflag BoolVar
#    (github.com/aws/aws-network-policy-agent pkg/config/controller_config.go): a bare flag is
#    true, `=value` goes through strconv.ParseBool, the last occurrence wins.
#  * EKS Auto Mode: no aws-node DaemonSet (the CNI runs on the AWS-managed node); network policy
#    is switched on by the same ConfigMap kube-system/amazon-vpc-cni with
#    enable-network-policy-controller: "true". A NodeClass's spec.networkPolicy (DefaultAllow |
#    DefaultDeny) only sets what happens to pods no policy selects. Source: EKS user guide,
#    "Use Network Policies with EKS Auto Mode" (awsdocs/amazon-eks-user-guide
#    latest/ug/automode/auto-net-pol.adoc) and "Create a Node Class" (create-node-class.adoc).
#    Auto Mode nodes carry eks.amazonaws.com/compute-type=auto (the guide's sample workloads
#    select them by it: latest/ug/automode/sample-apps/inflate-stateful.yaml).
#  * Calico installed by the Tigera operator: DaemonSet calico-system/calico-node
#    (projectcalico/calico hack/test/kind/migration/run_test.sh reads it there); installed from
#    the manifest: kube-system/calico-node. Cilium, Antrea and kube-router run in kube-system.
#    These enforce NetworkPolicies whenever they run (also in policy-only mode next to the VPC
#    CNI), so they are looked for first.

# (namespace, DaemonSet) -> what it is, for the CNIs that always enforce.
ENFORCING_DAEMONSETS = {
    ("calico-system", "calico-node"): "Calico (Tigera operator)",
    ("kube-system", "calico-node"): "Calico",
    ("kube-system", "cilium"): "Cilium",
    ("kube-system", "antrea-agent"): "Antrea",
    ("kube-system", "kube-router"): "kube-router",
}
VPC_CNI_AGENT = "aws-eks-nodeagent"
VPC_CNI_AGENT_IMAGE = "aws-network-policy-agent"
VPC_CNI_FLAG = "--enable-network-policy"
VPC_CNI_CONFIGMAP = "kube-system/amazon-vpc-cni"
VPC_CNI_CONTROLLER_KEY = "enable-network-policy-controller"
AUTO_MODE_LABEL = "eks.amazonaws.com/compute-type=auto"
ADDON_FIX = ("aws eks update-addon --cluster-name <cluster> --addon-name vpc-cni "
             "--configuration-values '{\"enableNetworkPolicy\":\"true\"}'")
AUTO_MODE_DOC = "https://docs.aws.amazon.com/eks/latest/userguide/auto-net-pol.html"

# strconv.ParseBool, which pflag's BoolVar uses.
_PARSE_BOOL = {**dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
               **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False)}


def image_repository(image: str) -> str:
    """registry/path/name of an image reference, without tag or digest."""
    name = image.split("@", 1)[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    return name[:colon] if colon > slash else name


def flag_value(argv: list[str], flag: str) -> bool | None:
    """A pflag boolean as the program would see it: None when absent or unparsable."""
    value = None
    for arg in argv:
        if arg == flag:
            value = True
        elif arg.startswith(flag + "="):
            value = _PARSE_BOOL.get(arg.split("=", 1)[1])
    return value


def vpc_cni_agent(daemonset: dict) -> dict | None:
    """aws-node's network policy agent container: by its name in the chart, or by its image
    (so a renamed container of the same agent still counts)."""
    for c in daemonset.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []:
        repo = image_repository(c.get("image") or "")
        if c.get("name") == VPC_CNI_AGENT or repo.rsplit("/", 1)[-1] == VPC_CNI_AGENT_IMAGE:
            return c
    return None


def controller_enabled(configmap: dict | None) -> bool:
    return ((configmap or {}).get("data") or {}).get(VPC_CNI_CONTROLLER_KEY, "").strip().lower() == "true"


def netpol_enforcer(daemonsets: list[dict], configmap: dict | None, auto_mode_nodes: int) -> tuple[str | None, str]:
    """(enforcer, reason); enforcer None: NetworkPolicies would be accepted and ignored.

    daemonsets: the items of `kubectl get daemonsets -o json` in kube-system and calico-system;
    configmap: kube-system/amazon-vpc-cni (None when absent); auto_mode_nodes: how many nodes
    carry eks.amazonaws.com/compute-type=auto.
    """
    by_name = {(d["metadata"].get("namespace", "kube-system"), d["metadata"]["name"]): d for d in daemonsets}
    for key, what in ENFORCING_DAEMONSETS.items():
        if key in by_name:
            return what, f"{what} (DaemonSet {key[0]}/{key[1]}) enforces NetworkPolicies"
    controller = (f"ConfigMap {VPC_CNI_CONFIGMAP} has {VPC_CNI_CONTROLLER_KEY}: "
                  f"\"{'true' if controller_enabled(configmap) else 'false'}\""
                  if configmap is not None else f"ConfigMap {VPC_CNI_CONFIGMAP} does not exist")
    aws_node = by_name.get(("kube-system", "aws-node"))
    if aws_node is not None:
        agent = vpc_cni_agent(aws_node)
        if agent is None:
            return None, (f"the VPC CNI (aws-node) has no network policy agent container ({VPC_CNI_AGENT}, "
                          f"image …/amazon/{VPC_CNI_AGENT_IMAGE}): VPC CNI older than 1.14 or nodeAgent.enabled=false; "
                          f"update the vpc-cni add-on and enable network policy: {ADDON_FIX}")
        on = flag_value((agent.get("command") or []) + (agent.get("args") or []), VPC_CNI_FLAG)
        if on and controller_enabled(configmap):
            return "VPC CNI", (f"the VPC CNI enforces NetworkPolicies ({agent['name']} runs with "
                               f"{VPC_CNI_FLAG}=true, {controller})")
        agent_state = f"{agent['name']} runs with {VPC_CNI_FLAG}={'true' if on else 'false'}"
        return None, f"the VPC CNI (aws-node) has network policy off ({agent_state}, {controller}): {ADDON_FIX}"
    if auto_mode_nodes > 0:
        where = (f"EKS Auto Mode ({auto_mode_nodes} node(s) labelled {AUTO_MODE_LABEL}, "
                 f"no aws-node DaemonSet)")
        if controller_enabled(configmap):
            return "EKS Auto Mode", f"{where}: {controller}, so its nodes enforce NetworkPolicies"
        return None, (f"{where} has network policy off ({controller}): apply ConfigMap {VPC_CNI_CONFIGMAP} with "
                      f"{VPC_CNI_CONTROLLER_KEY}: \"true\" ({AUTO_MODE_DOC}); a NodeClass's spec.networkPolicy "
                      "only sets the default for pods no policy selects")
    names = ", ".join(sorted({name for _, name in ENFORCING_DAEMONSETS}))
    return None, ("no NetworkPolicy enforcer found: no aws-node (VPC CNI) or " + names
                  + " DaemonSet in kube-system or calico-system, and no EKS Auto Mode node")


# ---------------------------------------------------------------- EKS preflight: storage
#
# Prometheus keeps 31 days on the PersistentVolumeClaim prometheus-data, which names no
# StorageClass, so the cluster's default one provisions it: the StorageClass annotated
# storageclass.kubernetes.io/is-default-class: "true" (Kubernetes docs, "Change the default
# StorageClass"; the beta annotation is still honoured). Without one the claim stays Pending and
# Prometheus never starts. EKS Auto Mode "does not create a StorageClass for you" (EKS user
# guide, latest/ug/automode/create-storage-class.adoc: provisioner ebs.csi.eks.amazonaws.com);
# elsewhere a class needs the EBS CSI driver add-on.
DEFAULT_CLASS_ANNOTATIONS = ("storageclass.kubernetes.io/is-default-class",
                             "storageclass.beta.kubernetes.io/is-default-class")


def default_storage_class(classes: dict) -> tuple[str | None, str]:
    """(name, reason) of the default StorageClass in `kubectl get storageclass -o json`."""
    defaults = [c["metadata"]["name"] for c in classes.get("items") or []
                if any(((c["metadata"].get("annotations") or {}).get(a) or "").lower() == "true"
                       for a in DEFAULT_CLASS_ANNOTATIONS)]
    if defaults:
        # Several defaults: Kubernetes >= 1.26 uses the newest; any of them provisions the claim.
        return defaults[0], f"default StorageClass {', '.join(defaults)} provisions prometheus-data"
    names = ", ".join(c["metadata"]["name"] for c in classes.get("items") or []) or "none"
    return None, ("no default StorageClass (classes: " + names + "): the PersistentVolumeClaim "
                  "monitoring/prometheus-data (8Gi, Prometheus's 31 days) would stay Pending; mark one default "
                  "(kubectl annotate storageclass NAME storageclass.kubernetes.io/is-default-class=true), e.g. gp3 of "
                  "the aws-ebs-csi-driver add-on or, on EKS Auto Mode, one with provisioner ebs.csi.eks.amazonaws.com")


def read_results(path: Path) -> dict:
    """key=value lines, last value wins. A missing file (the deploy died before writing
    anything) is an empty result: every step then reads "not run"."""
    results = {}
    if not path.exists():
        return results
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            results[key.strip()] = value.strip()
    return results


def summary(results: dict) -> str:
    """Markdown summary. Every line states what happened; nothing is assumed."""
    env = results.get("env", "?")
    ns = results.get("namespace", "?")
    lines = [f"## Deployment: {env} (`{ns}`)", ""]
    lines += ["| | |", "|---|---|"]
    lines.append(f"| Environment | {env} |")
    lines.append(f"| Namespace | `{ns}` |")
    if results.get("commit"):
        lines.append(f"| Commit | `{results['commit']}` |")
    for service in SERVICES:
        image = results.get(f"image_{service}")
        if image:
            lines.append(f"| orion-{service} image | `{image}` |")
        loaded = results.get(f"kind_image_{service}")
        if loaded and loaded != image:
            lines.append(f"| orion-{service} loaded into kind as | `{loaded}` |")
    if results.get("manifest_sha256"):
        lines.append(f"| Rendered manifest sha256 | `{results['manifest_sha256']}` |")
    lines.append("")
    lines += ["| Step | Result |", "|---|---|"]
    steps = [
        ("render", "Render overlay"),
        ("kind_cluster", "kind cluster"),
        ("kind_load", "Load images into kind"),
        ("apply", "Apply overlay + monitoring"),
        ("rollout", "Rollouts"),
        ("smoke_api", "Smoke api /health /ready /metrics"),
        ("smoke_worker", "Smoke worker /health /ready /metrics"),
    ]
    for key, label in steps:
        value = results.get(key)
        if value is None:
            value = "not run"
        lines.append(f"| {label} | {value} |")
        if key == "rollout" and results.get("rollback"):
            lines.append(f"| Undo after the failed rollout | {results['rollback']} |")
    eks = results.get("eks")
    if eks is None:
        eks = "not run"
    lines.append(f"| EKS | {eks} |")
    if results.get("eks_rollback"):
        lines.append(f"| EKS undo after the failed rollout | {results['eks_rollback']} |")
    lines.append("")
    status = results.get("status", "unknown")
    lines.append(f"**Result: {status}**")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ci-env")
    p.add_argument("--environments", type=Path, default=Path(__file__).resolve().parent.parent / "k8s/environments.yaml")
    p.add_argument("--event", default=os.environ.get("GITHUB_EVENT_NAME", ""))
    p.add_argument("--ref-name", default=os.environ.get("GITHUB_REF_NAME", ""))
    p.add_argument("--base-ref", default=os.environ.get("GITHUB_BASE_REF", ""))
    p.add_argument("--sha", default=os.environ.get("GITHUB_SHA", ""))
    p.add_argument("--registry", default=os.environ.get("ORION_REGISTRY", "ghcr.io/orionlynn19"))
    p = sub.add_parser("env-info")
    p.add_argument("--environments", type=Path, default=Path(__file__).resolve().parent.parent / "k8s/environments.yaml")
    p.add_argument("--registry", default=os.environ.get("ORION_REGISTRY", "ghcr.io/orionlynn19"))
    p.add_argument("env")
    p = sub.add_parser("set-image")
    p.add_argument("kustomization", type=Path)
    p.add_argument("assignments", nargs="+")
    p = sub.add_parser("check")
    p.add_argument("rendered", type=Path)
    p.add_argument("--namespace", required=True)
    p.add_argument("--image", action="append", default=[])
    p = sub.add_parser("summary")
    p.add_argument("results", type=Path)
    p = sub.add_parser("default-storage-class")
    p.add_argument("classes", type=Path, help="`kubectl get storageclass -o json`")
    p = sub.add_parser("netpol-enforcer")
    p.add_argument("daemonsets", type=Path, nargs="+", help="`kubectl -n NS get daemonsets -o json` outputs")
    p.add_argument("--configmap", type=Path, help="`kubectl -n kube-system get configmap amazon-vpc-cni "
                   "--ignore-not-found -o json` (empty: absent)")
    p.add_argument("--auto-mode-nodes", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "ci-env":
            envs = load_environments(args.environments)
            values = ci_env(envs, args.event, args.ref_name, args.base_ref, args.sha, args.registry)
            sys.stdout.write("".join(f"{k}={v}\n" for k, v in values.items()))
        elif args.cmd == "env-info":
            envs = load_environments(args.environments)
            if args.env not in envs:
                raise ValueError(f"unknown environment {args.env!r} (known: {', '.join(sorted(envs))})")
            branch = envs[args.env]["branch"]
            values = ci_env(envs, "push", branch, "", "0" * 40, args.registry)
            for key in ("sha_tag", "push", "deploy"):
                values.pop(key)
            values["branch"] = branch
            sys.stdout.write("".join(f"{k}={v}\n" for k, v in values.items()))
        elif args.cmd == "set-image":
            set_image(args.kustomization, args.assignments)
        elif args.cmd == "check":
            problems = check(args.rendered, args.namespace, args.image)
            for problem in problems:
                print(f"deploy-tool: {problem}", file=sys.stderr)
            return 1 if problems else 0
        elif args.cmd == "summary":
            sys.stdout.write(summary(read_results(args.results)))
        elif args.cmd == "default-storage-class":
            name, reason = default_storage_class(json.loads(args.classes.read_text()))
            print(reason)
            return 0 if name else 1
        elif args.cmd == "netpol-enforcer":
            items = [d for f in args.daemonsets for d in (json.loads(f.read_text()).get("items") or [])]
            text = args.configmap.read_text().strip() if args.configmap else ""
            enforcer, reason = netpol_enforcer(items, json.loads(text) if text else None, args.auto_mode_nodes)
            print(reason)
            return 0 if enforcer else 1
    except (ValueError, KeyError, OSError, yaml.YAMLError) as err:
        print(f"deploy-tool: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
