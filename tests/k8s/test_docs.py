"""The docs' Kubernetes text against the manifests.

- The per-environment table in section `kubernetes` (docs/kubernetes.md) equals
  k8s/environments.yaml (which the overlay tests check the rendered pods against).
- Every kubectl command in sections `kubernetes` and `failure-scenarios` names namespaces,
  objects and label selectors that the renders really contain (the runbooks of
  docs/operating.md included); every `make` target and k8s/ path it mentions exists.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from conftest import OVERLAYS, REPO, doc_section

SECTIONS = ("kubernetes", "failure-scenarios")
KIND_ALIASES = {
    "svc": "Service", "service": "Service", "services": "Service",
    "deploy": "Deployment", "deployment": "Deployment", "deployments": "Deployment",
    "hpa": "HorizontalPodAutoscaler", "horizontalpodautoscaler": "HorizontalPodAutoscaler",
    "pdb": "PodDisruptionBudget", "poddisruptionbudget": "PodDisruptionBudget",
    "networkpolicy": "NetworkPolicy", "netpol": "NetworkPolicy",
    "sa": "ServiceAccount", "serviceaccount": "ServiceAccount",
}


def table_rows(section: str) -> list[dict]:
    text = section.split("<!-- k8s-environments-table -->", 1)[1]
    lines = [ln.strip() for ln in text.strip().splitlines()]
    table = []
    for ln in lines:
        if not ln.startswith("|"):
            break
        table.append([c.strip().strip("`") for c in ln.strip("|").split("|")])
    header, rows = table[0], [r for r in table[2:]]
    return [dict(zip(header, r)) for r in rows]


def test_docs_table_matches_the_data_file(environments):
    rows = table_rows(doc_section("kubernetes"))
    assert [r["Environment"].lower() for r in rows] == list(environments)
    for row in rows:
        env = environments[row["Environment"].lower()]
        assert row["Branch"] == env["branch"]
        assert row["Namespace"] == env["namespace"]
        assert row["NODE_ENV"] == env["NODE_ENV"]
        assert row["LOG_LEVEL"] == env["LOG_LEVEL"]
        assert row["CRON_SCHEDULE"] == env["CRON_SCHEDULE"]
        assert row["Image tag"] == env["image_tag"]
        lo, hi = re.fullmatch(r"(\d+)\s*[–-]\s*(\d+)", row["api replicas (HPA min–max)"]).groups()
        assert (int(lo), int(hi)) == (env["api_min_replicas"], env["api_max_replicas"])


def code_lines(section: str) -> list[str]:
    out = []
    for block in re.findall(r"```(?:bash|sh|shell|console)?\n(.*?)```", section, re.S):
        joined = block.replace("\\\n", " ")
        for ln in joined.splitlines():
            ln = ln.split(" #", 1)[0].strip()
            ln = ln[2:] if ln.startswith("$ ") else ln
            if ln:
                out.append(ln)
    return out


@pytest.fixture(scope="module")
def cluster_view(renders):
    """namespace -> {(Kind, name)}, and namespace -> pod template label sets."""
    objects: dict[str, set] = {}
    pod_labels: dict[str, list[dict]] = {}
    service_ports: dict[tuple, set] = {}
    for name in (*OVERLAYS, "monitoring"):
        for d in renders[name]:
            ns = d["metadata"].get("namespace")
            if not ns:
                continue
            objects.setdefault(ns, set()).add((d["kind"], d["metadata"]["name"]))
            if d["kind"] == "Service":
                service_ports[(ns, d["metadata"]["name"])] = {p["port"] for p in d["spec"]["ports"]}
            if d["kind"] == "Deployment":
                pod_labels.setdefault(ns, []).append(d["spec"]["template"]["metadata"]["labels"])
    return objects, pod_labels, service_ports


def kubectl_commands():
    cmds = []
    for section in SECTIONS:
        for ln in code_lines(doc_section(section)):
            for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", ln):
                if part.startswith("kubectl "):
                    cmds.append((section, part))
    return cmds


def test_docs_kubectl_commands_match_the_manifests(cluster_view):
    objects, pod_labels, service_ports = cluster_view
    checked = 0
    for section, cmd in kubectl_commands():
        if "$" in cmd or "<" in cmd:
            continue  # placeholders and variables
        tokens = shlex.split(cmd)
        ns = selector = None
        refs = []
        i = 1
        while i < len(tokens):
            t = tokens[i]
            if t in ("-n", "--namespace"):
                ns = tokens[i + 1]
                i += 2
                continue
            if t.startswith("--namespace="):
                ns = t.split("=", 1)[1]
            elif t in ("-l", "--selector"):
                selector = tokens[i + 1]
                i += 2
                continue
            elif "/" in t and not t.startswith("-") and t.split("/", 1)[0].lower() in KIND_ALIASES:
                kind, name = t.split("/", 1)
                refs.append((KIND_ALIASES[kind.lower()], name))
            i += 1
        if tokens[1] in ("apply", "kustomize") or "-A" in tokens or "--all-namespaces" in tokens:
            continue
        if not (refs or selector):
            continue
        where = f"docs section {section}: `{cmd}`"
        assert ns, f"{where}: no -n, would act on the default namespace"
        assert ns in objects, f"{where}: namespace {ns} is not created by any overlay"
        for ref in refs:
            assert ref in objects[ns], f"{where}: {ref[0]}/{ref[1]} does not exist in {ns}"
        if tokens[1] == "port-forward":
            (kind, name), = refs
            remote = int(tokens[-1].split(":")[-1])
            if kind == "Service":
                assert remote in service_ports[(ns, name)], f"{where}: service {name} has no port {remote}"
        if selector:
            wanted = dict(pair.split("=", 1) for pair in selector.split(","))
            assert any(all(lbl.get(k) == v for k, v in wanted.items()) for lbl in pod_labels[ns]), (
                f"{where}: selector {selector} matches no pod in {ns}"
            )
        checked += 1
    assert checked >= 5, "the kubernetes section's own commands should have been checked"


def test_docs_make_targets_and_paths_exist():
    makefiles = [REPO / "Makefile", *sorted((REPO / "mk").glob("*.mk"))]
    targets = set()
    for mf in makefiles:
        targets |= set(re.findall(r"^([A-Za-z0-9_-]+):", mf.read_text(), re.M))
    text = doc_section("kubernetes")
    for target in re.findall(r"\bmake ([a-z][a-z0-9-]+)", text):
        assert target in targets, f"docs/kubernetes.md mentions `make {target}`, which no makefile defines"
    for path in set(re.findall(r"(?<![\w/.-])(k8s/[A-Za-z0-9_./-]+)", text)):
        path = path.rstrip(".")
        if "{" in path:
            continue
        assert (REPO / path).exists(), f"docs/kubernetes.md mentions {path}, which does not exist"
    for path in re.findall(r"k8s/overlays/\{([a-z,]+)\}", text):
        for env in path.split(","):
            assert (REPO / "k8s" / "overlays" / env).is_dir()


def test_docs_kind_commands_match_the_deploy_script():
    """The docs' local kind cluster is the one scripts/deploy-kind.sh (and CI) creates: the same
    pinned node image, and images loaded the same way (a single-platform archive). The recipe
    saves `make images`' own single-platform images, so it needs no `--platform` (which an engine
    below API 1.48, Docker 20.10-27, refuses)."""
    script = (REPO / "scripts" / "deploy-kind.sh").read_text()
    node = re.search(r'KIND_NODE_IMAGE:-(kindest/node:v[\d.]+@sha256:[0-9a-f]{64})\}', script).group(1)
    text = "\n".join(code_lines(doc_section("kubernetes")))
    creates = [ln for ln in text.splitlines() if ln.startswith("kind create cluster")]
    assert creates, "docs/kubernetes.md shows how to create the kind cluster"
    for ln in creates:
        assert f"--image {node}" in ln, f"docs/kubernetes.md: {ln!r} does not use {node}"
    assert "kind load docker-image" not in text, "kind load docker-image fails on Docker's containerd image store"
    assert "kind load image-archive" in text
    saves = [ln for ln in text.splitlines() if ln.startswith("docker save")]
    assert saves and not any("--platform" in ln for ln in saves), saves
