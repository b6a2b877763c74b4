"""The Kubernetes scrape job's relabeling, run by a real Prometheus.

No cluster exists here, and Debian's prometheus/promtool are built without kubernetes_sd
(client-go is stripped from the Debian package). So the test reproduces what kubernetes_sd
`role: pod` hands to relabeling -- one target per container port, with the documented
__meta_kubernetes_* labels -- for pods built from the rendered dev/uat/prod Deployments (their
real labels, annotations and ports; api replicas = the environment's HPA minimum) plus decoys,
and serves them through file_sd. The relabel_configs are the rendered ConfigMap's, unchanged;
Prometheus's /api/v1/targets shows what it would scrape and under which labels.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest
import yaml

from conftest import objs, one

ENVS = ("dev", "uat", "prod")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def pod_role_targets(pod: dict) -> list[dict]:
    """kubernetes_sd role pod: a target per declared container port (docs: 'pod' role)."""
    meta, spec, status = pod["metadata"], pod["spec"], pod["status"]
    common = {
        "__meta_kubernetes_namespace": meta["namespace"],
        "__meta_kubernetes_pod_name": meta["name"],
        "__meta_kubernetes_pod_ip": status["podIP"],
        "__meta_kubernetes_pod_phase": status["phase"],
        "__meta_kubernetes_pod_ready": "true",
        "__meta_kubernetes_pod_node_name": "kind-control-plane",
        "__meta_kubernetes_pod_host_ip": "172.18.0.2",
        "__meta_kubernetes_pod_uid": f"uid-{meta['namespace']}-{meta['name']}",
    }
    for k, v in meta.get("labels", {}).items():
        common[f"__meta_kubernetes_pod_label_{sanitize(k)}"] = v
        common[f"__meta_kubernetes_pod_labelpresent_{sanitize(k)}"] = "true"
    for k, v in meta.get("annotations", {}).items():
        common[f"__meta_kubernetes_pod_annotation_{sanitize(k)}"] = v
        common[f"__meta_kubernetes_pod_annotationpresent_{sanitize(k)}"] = "true"
    groups = []
    for c in spec["containers"]:
        cl = dict(common, __meta_kubernetes_pod_container_name=c["name"],
                  __meta_kubernetes_pod_container_image=c["image"], __meta_kubernetes_pod_container_init="false")
        for p in c.get("ports", []) or [None]:
            labels = dict(cl)
            addr = status["podIP"]
            if p:
                addr = f"{addr}:{p['containerPort']}"
                labels["__meta_kubernetes_pod_container_port_name"] = p.get("name", "")
                labels["__meta_kubernetes_pod_container_port_number"] = str(p["containerPort"])
                labels["__meta_kubernetes_pod_container_port_protocol"] = p.get("protocol", "TCP")
            groups.append({"targets": [addr], "labels": labels})
    return groups


def make_pod(template, namespace, name, ip, phase="Running"):
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": dict(template["metadata"].get("labels", {})),
                     "annotations": dict(template["metadata"].get("annotations", {}))},
        "spec": {"containers": copy.deepcopy(template["spec"]["containers"])},
        "status": {"phase": phase, "podIP": ip},
    }


@pytest.fixture(scope="module")
def cluster(renders, environments):
    """All pods of a pretend cluster, and the targets Prometheus must end up with."""
    pods, expected, n = [], {}, 0
    for env in ENVS:
        ns = environments[env]["namespace"]
        for dep in objs(renders[env], "Deployment"):
            svc = dep["metadata"]["name"]
            count = environments[env]["api_min_replicas"] if svc == "api" else dep["spec"]["replicas"]
            for i in range(count):
                n += 1
                template = copy.deepcopy(dep["spec"]["template"])
                if svc == "api" and i == 0:
                    # a second container port (think: a debug sidecar) must not become a target
                    template["spec"]["containers"][0]["ports"].append({"name": "debug", "containerPort": 6060})
                name, ip = f"{svc}-{i}", f"10.244.{n // 250}.{n % 250 + 1}"
                pods.append(make_pod(template, ns, name, ip))
                port = template["metadata"]["annotations"]["prometheus.io/port"]
                expected[(ns, name)] = {"job": svc, "namespace": ns, "pod": name, "instance": f"{ip}:{port}"}
        api_tpl = one(renders[env], "Deployment", "api")["spec"]["template"]
        quiet = copy.deepcopy(api_tpl)
        quiet["metadata"]["annotations"] = {}
        pods.append(make_pod(quiet, ns, "not-annotated", "10.244.9.1"))
        pods.append(make_pod(api_tpl, ns, "completed", "10.244.9.2", phase="Succeeded"))
    pods.append(make_pod(api_tpl, "default", "other-namespace", "10.244.9.3"))
    return pods, expected


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


@pytest.fixture(scope="module")
def prometheus(renders, cluster, tmp_path_factory):
    binary = shutil.which("prometheus") or ("/usr/bin/prometheus" if os.path.exists("/usr/bin/prometheus") else None)
    if not binary:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus missing (Debian package prometheus; `make deps`)")
        pytest.skip("SKIPPED: prometheus binary not installed (make deps)")
    pods, _ = cluster
    tmp = tmp_path_factory.mktemp("prometheus")
    docs = renders["monitoring"]
    cm = lambda base: next(c for c in objs(docs, "ConfigMap") if c["metadata"]["name"].startswith(base + "-"))  # noqa: E731
    cfg = yaml.safe_load(cm("prometheus-config")["data"]["prometheus.yml"])
    (tmp / "rules").mkdir()
    (tmp / "rules" / "alerts.yaml").write_text(cm("prometheus-rules")["data"]["alerts.yaml"])
    cfg["rule_files"] = [str(tmp / "rules" / os.path.basename(cfg["rule_files"][0]))]
    for job in cfg["scrape_configs"]:
        for sd in job.pop("kubernetes_sd_configs", []):
            assert sd["role"] == "pod"
            watched = set(sd["namespaces"]["names"])  # what the API server would return
            groups = [g for p in pods if p["metadata"]["namespace"] in watched for g in pod_role_targets(p)]
            path = tmp / f"{job['job_name']}-pods.json"
            path.write_text(json.dumps(groups))
            job.setdefault("file_sd_configs", []).append({"files": [str(path)]})
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    log = open(tmp / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}", tmp / "prometheus.log"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def wait_for_targets(base, count, logfile, timeout=60):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = get_json(f"{base}/api/v1/targets")["data"]
            if len([t for t in last["activeTargets"] if t["scrapePool"] == "orion"]) >= count:
                return last
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"Prometheus has {last and len(last['activeTargets'])} active targets, wanted {count}\n"
                + logfile.read_text()[-3000:])


def test_every_pod_is_scraped_once_with_job_namespace_pod(prometheus, cluster):
    base, logfile = prometheus
    _, expected = cluster
    data = wait_for_targets(base, len(expected), logfile)
    active = [t for t in data["activeTargets"] if t["scrapePool"] == "orion"]
    got = {(t["labels"]["namespace"], t["labels"]["pod"]): t for t in active}
    assert len(got) == len(active), "a pod is scraped more than once"
    assert set(got) == set(expected)
    for key, labels in expected.items():
        assert got[key]["labels"] == labels, key
        assert got[key]["scrapeUrl"] == f"http://{labels['instance']}/metrics"


def test_decoys_and_extra_ports_are_dropped(prometheus, cluster):
    base, logfile = prometheus
    _, expected = cluster
    data = wait_for_targets(base, len(expected), logfile)
    dropped = [t["discoveredLabels"] for t in data["droppedTargets"]]
    dropped_pods = {d.get("__meta_kubernetes_pod_name") for d in dropped}
    assert {"not-annotated", "completed"} <= dropped_pods
    assert any(d.get("__meta_kubernetes_pod_container_port_name") == "debug" for d in dropped)
    active_pods = {t["labels"].get("pod") for t in data["activeTargets"]}
    assert not {"not-annotated", "completed", "other-namespace"} & active_pods


def test_alert_rules_load_and_evaluate(prometheus, renders):
    base, _ = prometheus
    docs = renders["monitoring"]
    cm = next(c for c in objs(docs, "ConfigMap") if c["metadata"]["name"].startswith("prometheus-rules-"))
    want = sum(len(g["rules"]) for g in yaml.safe_load(cm["data"]["alerts.yaml"])["groups"])
    deadline = time.monotonic() + 30
    while True:
        groups = get_json(f"{base}/api/v1/rules")["data"]["groups"]
        loaded = sum(len(g["rules"]) for g in groups)
        if loaded == want or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert loaded == want
    for g in groups:
        for r in g["rules"]:
            assert r.get("health") in ("ok", "unknown"), f"{r['name']}: {r.get('lastError')}"
