"""The monitoring stack (k8s/monitoring) as rendered by k8s/render-monitoring.sh."""

from __future__ import annotations

import base64
from fnmatch import fnmatch
import os
import re
import shutil
import subprocess
from pathlib import PurePosixPath
from urllib.parse import urlparse

import pytest
import yaml

from conftest import REPO, container_ports, kubectl, load_docs, objs, one, pod_spec

NS = "monitoring"
SHARED_FILES = {  # ConfigMap -> key -> file shared with docker compose
    "prometheus-rules": {"alerts.yaml": "monitoring/alerts.yaml", "slo.yaml": "monitoring/slo.yaml"},
    "alertmanager-config": {"alertmanager.yml": "monitoring/alertmanager.yml"},
    "grafana-datasources": {"datasource.yaml": "monitoring/grafana/provisioning/datasources/datasource.yaml"},
    "grafana-dashboard-providers": {"dashboards.yaml": "monitoring/grafana/provisioning/dashboards/dashboards.yaml"},
    "grafana-dashboards": {"orion.json": "monitoring/grafana/dashboards/orion.json"},
}


@pytest.fixture(scope="module")
def docs(renders):
    return renders["monitoring"]


def configmap(docs, base_name):
    found = [c for c in objs(docs, "ConfigMap") if re.fullmatch(rf"{base_name}-[a-z0-9]{{10}}", c["metadata"]["name"])]
    assert len(found) == 1, f"one generated ConfigMap {base_name}-<hash> expected"
    return found[0]


def volume_mounts(dep):
    """mountPath -> volume definition, for the single container."""
    spec = pod_spec(dep)
    (c,) = spec["containers"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    return {m["mountPath"]: (m, volumes[m["name"]]) for m in c.get("volumeMounts", [])}


def prometheus_config(docs):
    return yaml.safe_load(configmap(docs, "prometheus-config")["data"]["prometheus.yml"])


def test_namespace_enforces_restricted(docs):
    (ns,) = objs(docs, "Namespace")
    assert ns["metadata"]["name"] == NS
    for mode in ("enforce", "audit", "warn"):
        assert ns["metadata"]["labels"][f"pod-security.kubernetes.io/{mode}"] == "restricted"
        assert re.fullmatch(r"v1\.\d+", ns["metadata"]["labels"][f"pod-security.kubernetes.io/{mode}-version"])
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == NS, d["metadata"]["name"]


@pytest.mark.parametrize("name", ["prometheus", "alertmanager", "grafana"])
def test_hardened_as_far_as_the_upstream_image_allows(docs, name):
    dep = one(docs, "Deployment", name)
    spec = pod_spec(dep)
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True and isinstance(psc["runAsUser"], int) and psc["runAsUser"] > 0
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    (c,) = spec["containers"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"].keys() >= {"cpu", "memory"} and "memory" in c["resources"]["limits"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["port"] in container_ports(c)
    # read-only root: every writable path is an emptyDir with a size limit, or a claim of a
    # fixed size rendered beside it (Prometheus's TSDB)
    for path, (mount, volume) in volume_mounts(dep).items():
        if mount.get("readOnly"):
            continue
        if "persistentVolumeClaim" in volume:
            claim = one(docs, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
            assert claim["spec"]["resources"]["requests"]["storage"], f"{name}: {path} on an unsized claim"
        else:
            assert "emptyDir" in volume and volume["emptyDir"].get("sizeLimit"), f"{name}: {path} writable but not emptyDir"


def compose_image(service):
    compose = REPO / "docker-compose.yml"
    if not compose.exists():
        return None
    return yaml.safe_load(compose.read_text())["services"].get(service, {}).get("image")


@pytest.mark.parametrize("name", ["prometheus", "alertmanager", "grafana"])
def test_images_are_pinned_and_match_compose(docs, name):
    (c,) = pod_spec(one(docs, "Deployment", name))["containers"]
    assert re.fullmatch(rf"(prom/prometheus|prom/alertmanager|grafana/grafana):v?\d+\.\d+\.\d+(@sha256:[0-9a-f]{{64}})?", c["image"]), c["image"]
    expected = compose_image(name)
    if expected is not None:
        assert c["image"] == expected, "Kubernetes and docker compose run the same version"


def test_compose_is_the_one_source_of_the_monitoring_image_tags(tmp_path):
    """Dependabot's docker-compose ecosystem updates docker-compose.yml only; its docker
    ecosystem would read Kubernetes manifests (GitHub changelog 2022-11-16, "Dependabot version
    updates for Docker image tags in Kubernetes manifests") but not kustomize `images:`, and two
    writers would be two sources. So k8s/monitoring names the images without a tag and
    render-monitoring.sh takes compose's: a bump of compose's line (what Dependabot's pull request
    does) reaches the Kubernetes render, with nothing else edited."""
    for path in sorted((REPO / "k8s" / "monitoring").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Deployment":
                for c in doc["spec"]["template"]["spec"]["containers"]:
                    assert ":" not in c["image"] and "@" not in c["image"], f"{path.name}: {c['image']} has its own tag"
    copy = tmp_path / "repo"
    for part in ("k8s", "monitoring"):
        shutil.copytree(REPO / part, copy / part)
    bumped = {"prometheus": "prom/prometheus:v9.1.2", "alertmanager": "prom/alertmanager:v0.99.0",
              "grafana": "grafana/grafana:99.0.1"}
    text = (REPO / "docker-compose.yml").read_text()
    for name, image in bumped.items():
        text = text.replace(compose_image(name), image)
    (copy / "docker-compose.yml").write_text(text)
    res = subprocess.run([str(copy / "k8s" / "render-monitoring.sh")], capture_output=True, text=True,
                         env=dict(os.environ, KUBECTL=kubectl()))
    assert res.returncode == 0, res.stderr
    docs = load_docs(res.stdout)
    for name, image in bumped.items():
        (c,) = pod_spec(one(docs, "Deployment", name))["containers"]
        assert c["image"] == image
    dependabot = yaml.safe_load((REPO / ".github" / "dependabot.yml").read_text())["updates"]
    assert {(u["package-ecosystem"], u["directory"]) for u in dependabot} >= {("docker-compose", "/")}
    assert not [u for u in dependabot if u["package-ecosystem"] == "docker"], "a second writer of the tags"


@pytest.mark.parametrize("cm", sorted(SHARED_FILES))
def test_configmaps_carry_the_files_compose_uses_byte_for_byte(docs, cm):
    data = configmap(docs, cm)["data"]
    assert set(data) == set(SHARED_FILES[cm])
    for key, path in SHARED_FILES[cm].items():
        assert data[key] == (REPO / path).read_text(), f"{cm}/{key} differs from {path}"


def test_default_load_restrictor_refuses_the_shared_files():
    """Why the stack is always built through k8s/render-monitoring.sh: plain kustomize refuses
    files outside k8s/monitoring, so nobody can deploy it with a stale copy by accident."""
    res = subprocess.run([kubectl(), "kustomize", str(REPO / "k8s" / "monitoring")], capture_output=True, text=True)
    assert res.returncode != 0 and "security" in res.stderr, res.stderr


def test_prometheus_discovers_exactly_the_three_environments(docs, environments):
    cfg = prometheus_config(docs)
    (job,) = [j for j in cfg["scrape_configs"] if j.get("kubernetes_sd_configs")]
    (sd,) = job["kubernetes_sd_configs"]
    assert sd["role"] == "pod"
    assert sorted(sd["namespaces"]["names"]) == sorted(e["namespace"] for e in environments.values())
    targets = {r.get("target_label"): r for r in job["relabel_configs"]}
    assert targets["job"]["source_labels"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]
    assert targets["namespace"]["source_labels"] == ["__meta_kubernetes_namespace"]
    assert targets["pod"]["source_labels"] == ["__meta_kubernetes_pod_name"]


def test_prometheus_loads_the_mounted_rules_and_config(docs):
    dep = one(docs, "Deployment", "prometheus")
    (c,) = pod_spec(dep)["containers"]
    mounts = volume_mounts(dep)
    args = dict(a.split("=", 1) for a in c["args"])
    config_file = PurePosixPath(args["--config.file"])
    mount, volume = mounts[str(config_file.parent)]
    assert volume["configMap"]["name"] == configmap(docs, "prometheus-config")["metadata"]["name"]
    rules_glob = PurePosixPath(prometheus_config(docs)["rule_files"][0])
    mount, volume = mounts[str(rules_glob.parent)]
    assert volume["configMap"]["name"] == configmap(docs, "prometheus-rules")["metadata"]["name"]
    for key in configmap(docs, "prometheus-rules")["data"]:
        assert fnmatch(key, rules_glob.name), "every rules ConfigMap key must match rule_files"
    # retention is stated, the TSDB is on the rendered PersistentVolumeClaim, and the size cap
    # (powers of 2) stays below the claim (tests/monitoring/test_retention.py sizes both)
    assert args["--storage.tsdb.retention.time"]
    data_mount, data_volume = mounts[args["--storage.tsdb.path"]]
    claim = one(docs, "PersistentVolumeClaim", data_volume["persistentVolumeClaim"]["claimName"])
    size_cap = int(re.fullmatch(r"(\d+)GB", args["--storage.tsdb.retention.size"]).group(1)) * 2**30
    request = int(re.fullmatch(r"(\d+)Gi", claim["spec"]["resources"]["requests"]["storage"]).group(1)) * 2**30
    assert size_cap < request


def test_promtool_accepts_the_config_and_rules(docs, tmp_path):
    promtool = shutil.which("promtool")
    if not promtool:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool missing (Debian package prometheus; `make deps`)")
        pytest.skip("SKIPPED: promtool not installed (make deps)")
    cfg = prometheus_config(docs)
    # Debian's promtool is built without kubernetes_sd: check everything else, with the SD
    # stanza swapped for an (empty) file_sd; the stanza itself is checked field by field.
    for job in cfg["scrape_configs"]:
        for sd in job.pop("kubernetes_sd_configs", []):
            assert set(sd) <= {"role", "namespaces"} and set(sd["namespaces"]) == {"names"}, sd
            job.setdefault("file_sd_configs", []).append({"files": [str(tmp_path / "none.json")]})
    (tmp_path / "rules").mkdir()
    for key, text in configmap(docs, "prometheus-rules")["data"].items():
        (tmp_path / "rules" / key).write_text(text)
    assert set(configmap(docs, "prometheus-rules")["data"]) == {"alerts.yaml", "slo.yaml"}
    cfg["rule_files"] = [str(tmp_path / "rules" / PurePosixPath(cfg["rule_files"][0]).name)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    res = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr


def test_prometheus_rbac_is_namespaced(docs):
    assert not objs(docs, "ClusterRole") and not objs(docs, "ClusterRoleBinding")
    assert not objs(docs, "Role") and not objs(docs, "RoleBinding")  # they come with each overlay
    sa = one(docs, "ServiceAccount", "prometheus")
    assert pod_spec(one(docs, "Deployment", "prometheus"))["serviceAccountName"] == "prometheus"
    assert sa.get("automountServiceAccountToken") is True  # kubernetes_sd needs the token
    assert pod_spec(one(docs, "Deployment", "grafana")).get("automountServiceAccountToken") is False


def test_grafana_datasource_points_at_the_prometheus_service(docs):
    ds_file = yaml.safe_load(configmap(docs, "grafana-datasources")["data"]["datasource.yaml"])
    prom = [d for d in ds_file["datasources"] if d["type"] == "prometheus"]
    assert len(prom) == 1 and prom[0]["uid"] == "prometheus"
    url = urlparse(prom[0]["url"])
    svc = one(docs, "Service", "prometheus")
    assert url.hostname in ("prometheus", f"prometheus.{NS}", f"prometheus.{NS}.svc", f"prometheus.{NS}.svc.cluster.local")
    assert url.port in [p["port"] for p in svc["spec"]["ports"]]


def test_grafana_mounts_the_dashboards_where_the_provider_looks(docs):
    providers = yaml.safe_load(configmap(docs, "grafana-dashboard-providers")["data"]["dashboards.yaml"])["providers"]
    dep = one(docs, "Deployment", "grafana")
    mounts = volume_mounts(dep)
    dashboards_cm = configmap(docs, "grafana-dashboards")["metadata"]["name"]
    for p in providers:
        path = p["options"]["path"].rstrip("/")
        assert path in mounts, f"provider {p['name']} reads {path}, which Grafana does not mount"
        assert mounts[path][1]["configMap"]["name"] == dashboards_cm
    for sub in ("datasources", "dashboards"):
        assert f"/etc/grafana/provisioning/{sub}" in mounts


def _admin_password(docs):
    # Read from a file of the Secret's volume (GF_SECURITY_ADMIN_PASSWORD__FILE), never an env value.
    dep = one(docs, "Deployment", "grafana")
    (c,) = pod_spec(dep)["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env, "the admin password must not be an environment variable"
    path = env["GF_SECURITY_ADMIN_PASSWORD__FILE"]["value"]
    mount_path, key = path.rsplit("/", 1)
    mount, volume = volume_mounts(dep)[mount_path]
    assert mount.get("readOnly") is True
    secret = one(docs, "Secret", volume["secret"]["secretName"])
    return base64.b64decode(secret["data"][key]).decode()


def test_grafana_admin_password_comes_from_a_secret(docs):
    assert _admin_password(docs) == "admin"  # the local default, as in docker compose


def test_a_real_admin_password_replaces_the_local_one():
    env = dict(os.environ, GRAFANA_ADMIN_PASSWORD="not-the-default s3cret", KUBECTL=kubectl())
    res = subprocess.run([str(REPO / "k8s" / "render-monitoring.sh")], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    docs = load_docs(res.stdout)
    assert _admin_password(docs) == "not-the-default s3cret"
    assert len(objs(docs, "Secret")) == 1
    assert "not-the-default" not in res.stderr


def render_monitoring(*args: str, password: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAFANA_ADMIN_")}
    env["KUBECTL"] = kubectl()
    if password is not None:
        env["GRAFANA_ADMIN_PASSWORD"] = password
    return subprocess.run([str(REPO / "k8s" / "render-monitoring.sh"), *args], capture_output=True, text=True, env=env)


@pytest.mark.parametrize("target", ["dev", "uat", "prod"])
@pytest.mark.parametrize("password", [None, "", "admin"], ids=["unset", "empty", "default"])
def test_a_real_cluster_gets_no_grafana_without_a_real_password(target, password):
    """One line naming the variable, exit 2, nothing on stdout: nothing to apply. The password
    itself is never printed."""
    res = render_monitoring(target, password=password)
    assert res.returncode == 2 and res.stdout == ""
    (line,) = res.stderr.splitlines()
    assert line.startswith("render-monitoring: GRAFANA_ADMIN_PASSWORD is ") and target in line, line


@pytest.mark.parametrize("args", [(), ("local",)], ids=["default", "local"])
def test_a_local_render_keeps_the_committed_default(args):
    res = render_monitoring(*args, password=None)
    assert res.returncode == 0, res.stderr
    assert _admin_password(load_docs(res.stdout)) == "admin"


def test_a_real_cluster_gets_the_password_it_was_given():
    res = render_monitoring("prod", password="s3cret for prod")
    assert res.returncode == 0, res.stderr
    assert _admin_password(load_docs(res.stdout)) == "s3cret for prod"


def test_an_unknown_render_target_is_refused():
    res = render_monitoring("staging", password="x")
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip() == "render-monitoring: unknown target 'staging' (local, dev, uat or prod)"


def test_grafana_admits_nothing_but_port_forward(docs):
    """No NetworkPolicy admits traffic to Grafana: only the namespace's default deny selects it,
    and `kubectl port-forward` (how operators reach it) is not subject to NetworkPolicy."""
    grafana_labels = one(docs, "Deployment", "grafana")["spec"]["template"]["metadata"]["labels"]
    selecting = [p for p in objs(docs, "NetworkPolicy")
                 if all(grafana_labels.get(k) == v for k, v in p["spec"]["podSelector"].get("matchLabels", {}).items())
                 and not p["spec"]["podSelector"].get("matchExpressions")]
    assert selecting, "Grafana must be selected by the default deny"
    for p in selecting:
        assert "Ingress" in p["spec"]["policyTypes"]
        assert not p["spec"].get("ingress"), f"{p['metadata']['name']} admits traffic to Grafana"


def test_monitoring_network_policies(docs):
    policies = {p["metadata"]["name"]: p for p in objs(docs, "NetworkPolicy")}
    deny = [p for p in policies.values() if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")]
    assert deny
    to_prom = [
        r for p in policies.values()
        if p["spec"]["podSelector"].get("matchLabels") == {"app.kubernetes.io/name": "prometheus"}
        for r in p["spec"].get("ingress", [])
    ]
    assert to_prom and all(r.get("from") for r in to_prom), "Prometheus is reachable from Grafana only"


def test_services_target_named_ports(docs):
    for name, port in (("prometheus", 9090), ("alertmanager", 9093), ("grafana", 3000)):
        svc = one(docs, "Service", name)
        (c,) = pod_spec(one(docs, "Deployment", name))["containers"]
        (sp,) = svc["spec"]["ports"]
        assert sp["port"] == port and container_ports(c)[sp["targetPort"]] == port


def test_prometheus_sends_to_the_alertmanager_service(docs):
    (am,) = prometheus_config(docs)["alerting"]["alertmanagers"]
    (static,) = am["static_configs"]
    (target,) = static["targets"]
    host, port = target.split(":")
    svc = one(docs, "Service", "alertmanager")
    assert host in ("alertmanager", f"alertmanager.{NS}", f"alertmanager.{NS}.svc")
    assert int(port) in [p["port"] for p in svc["spec"]["ports"]]


def test_alertmanager_runs_the_shared_config_with_optional_secret_files(docs):
    dep = one(docs, "Deployment", "alertmanager")
    assert dep["spec"]["replicas"] == 1
    spec = pod_spec(dep)
    assert spec.get("automountServiceAccountToken") is False
    (c,) = spec["containers"]
    args = dict(a.split("=", 1) for a in c["args"])
    mounts = volume_mounts(dep)
    config_file = PurePosixPath(args["--config.file"])
    _, volume = mounts[str(config_file.parent)]
    cm = configmap(docs, "alertmanager-config")
    assert volume["configMap"]["name"] == cm["metadata"]["name"] and config_file.name in cm["data"]
    assert args["--cluster.listen-address"] == "", "one replica: no gossip listener"
    # Every *_file the config names lives in the optional Secret's mount.
    config = yaml.safe_load(cm["data"]["alertmanager.yml"])
    files = re.findall(r"(?:routing_key_file|api_url_file|credentials_file)': '([^']+)'", repr(config))
    assert len(files) == 3, files
    for path in files:
        mount, volume = mounts[str(PurePosixPath(path).parent)]
        assert mount.get("readOnly") is True
        assert volume["secret"]["secretName"] == "alertmanager-receivers" and volume["secret"]["optional"] is True
    # The Secret is created in the cluster, never rendered from the repository.
    assert not [s for s in objs(docs, "Secret") if s["metadata"]["name"].startswith("alertmanager")]
    (data_mount, data_volume) = mounts[args["--storage.path"]]
    assert data_volume["emptyDir"]["sizeLimit"]


def test_alertmanager_admits_prometheus_only(docs):
    policies = [
        p for p in objs(docs, "NetworkPolicy")
        if p["spec"]["podSelector"].get("matchLabels") == {"app.kubernetes.io/name": "alertmanager"}
    ]
    rules = [r for p in policies for r in p["spec"].get("ingress", [])]
    assert rules
    for r in rules:
        assert r["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]
        assert [p["port"] for p in r["ports"]] == ["http"]
