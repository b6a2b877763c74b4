"""Policy over the rendered overlays (dev, uat, prod, and kind = dev with local images).

Each test reads the YAML that `kubectl kustomize k8s/overlays/<env>` produces, i.e. what a
cluster would receive, and the expected per-environment values from k8s/environments.yaml.
"""

from __future__ import annotations

import re
import shutil

import pytest
import yaml

from conftest import (
    OVERLAYS,
    REPO,
    container_ports,
    duration_seconds,
    effective_env,
    kustomize,
    objs,
    one,
    pod_spec,
    selector_matches,
)

ENV_OF = {"dev": "dev", "uat": "uat", "prod": "prod", "kind": "dev"}  # kind = dev on local images
REGISTRY = "ghcr.io/orionlynn19"
# Which container port carries each service's /metrics (contract: api on http, worker on metrics).
SCRAPE_PORT_NAME = {"api": "http", "worker": "metrics"}
MONITORING_NS = "monitoring"

overlay = pytest.mark.parametrize("name", OVERLAYS)


def env_row(environments, name):
    return environments[ENV_OF[name]]


def deployments(docs):
    deps = {d["metadata"]["name"]: d for d in objs(docs, "Deployment")}
    assert set(deps) == {"api", "worker"}, f"unexpected Deployments {sorted(deps)}"
    return deps


def the_container(dep):
    containers = pod_spec(dep)["containers"]
    assert len(containers) == 1, "one container per pod expected"
    return containers[0]


def quantity(q) -> float:
    """Kubernetes quantity -> float (CPU cores or bytes)."""
    q = str(q)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix in sorted(units, key=len, reverse=True):
        if q.endswith(suffix):
            return float(q[: -len(suffix)]) * units[suffix]
    return float(q)


@overlay
def test_namespace_enforces_restricted_pod_security(renders, environments, name):
    docs = renders[name]
    ns = env_row(environments, name)["namespace"]
    namespaces = objs(docs, "Namespace")
    assert [n["metadata"]["name"] for n in namespaces] == [ns]
    labels = namespaces[0]["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels.get(f"pod-security.kubernetes.io/{mode}") == "restricted"
        version = labels.get(f"pod-security.kubernetes.io/{mode}-version")
        assert version and re.fullmatch(r"v1\.\d+", version), f"{mode}-version must be pinned, got {version!r}"
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == ns, f"{d['kind']}/{d['metadata']['name']} not in {ns}"


@overlay
def test_every_pod_is_pss_restricted(renders, name):
    docs = renders[name]
    service_accounts = {sa["metadata"]["name"]: sa for sa in objs(docs, "ServiceAccount")}
    for dep in deployments(docs).values():
        spec = pod_spec(dep)
        where = f"{name}: deployment/{dep['metadata']['name']}"
        psc = spec.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True, where
        assert psc.get("runAsUser") == 65532 and psc.get("runAsGroup") == 65532, where
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(flag), where
        assert spec.get("automountServiceAccountToken") is False, where
        sa = service_accounts.get(spec.get("serviceAccountName"))
        assert sa is not None, f"{where}: serviceAccountName not in render"
        assert sa.get("automountServiceAccountToken") is False, where
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            assert not sc.get("privileged"), where
            assert sc.get("runAsUser", 65532) != 0, where


@overlay
def test_probes_use_the_services_endpoints_on_real_ports(renders, name):
    for dep in deployments(renders[name]).values():
        c = the_container(dep)
        ports = container_ports(c)
        expected = {"startupProbe": "/health", "livenessProbe": "/health", "readinessProbe": "/ready"}
        for probe, path in expected.items():
            p = c.get(probe)
            assert p, f"{name}/{dep['metadata']['name']}: no {probe}"
            assert p["httpGet"]["path"] == path
            assert p["httpGet"]["port"] in ports, f"{probe} port {p['httpGet']['port']!r} is not a container port"
            assert p.get("timeoutSeconds", 1) <= p.get("periodSeconds", 10)
        # the process answers /health in milliseconds; its own healthcheck gives up at 2 s
        assert c["livenessProbe"].get("timeoutSeconds", 1) >= 2


@overlay
def test_resources_are_requested_and_memory_is_limited(renders, name):
    for dep in deployments(renders[name]).values():
        res = the_container(dep).get("resources", {})
        req, lim = res.get("requests", {}), res.get("limits", {})
        assert "cpu" in req and "memory" in req, f"{dep['metadata']['name']}: requests missing"
        assert "memory" in lim, f"{dep['metadata']['name']}: memory limit missing"
        assert quantity(lim["memory"]) >= quantity(req["memory"])
        # sized for a static binary of a few MiB, not for Node
        assert quantity(lim["memory"]) <= 256 * 2**20
        if "cpu" in lim:
            assert quantity(lim["cpu"]) >= quantity(req["cpu"])


@overlay
def test_images_are_the_environments_tags(renders, environments, name):
    tag = env_row(environments, name)["image_tag"]
    for svc, dep in deployments(renders[name]).items():
        c = the_container(dep)
        if name == "kind":
            assert c["image"] == f"orion-{svc}:local"
        else:
            assert c["image"] == f"{REGISTRY}/orion-{svc}:{tag}"
        if ENV_OF[name] != "prod":
            assert not c["image"].endswith(":latest"), f"{name}: :latest outside prod"
        assert c.get("imagePullPolicy") == "IfNotPresent"


@overlay
def test_pods_really_get_the_environments_values(renders, environments, name):
    """The original's defect: per-env ConfigMaps existed but no pod read them."""
    docs = renders[name]
    row = env_row(environments, name)
    deps = deployments(docs)
    for svc, dep in deps.items():
        c = the_container(dep)
        env = effective_env(docs, c)
        assert env.get("NODE_ENV") == row["NODE_ENV"], f"{name}/{svc}"
        assert env.get("LOG_LEVEL") == row["LOG_LEVEL"], f"{name}/{svc}"
        for ref in c["envFrom"]:
            # generated, hash-suffixed: a changed value is a changed pod template, so pods roll
            assert re.fullmatch(r"[a-z-]+-[a-z0-9]{10}", ref["configMapRef"]["name"]), ref
    worker_env = effective_env(docs, the_container(deps["worker"]))
    assert worker_env.get("CRON_SCHEDULE") == row["CRON_SCHEDULE"]
    assert int(worker_env["METRICS_PORT"]) == container_ports(the_container(deps["worker"]))["metrics"]
    api_env = effective_env(docs, the_container(deps["api"]))
    assert int(api_env["PORT"]) == container_ports(the_container(deps["api"]))["http"]


@overlay
def test_worker_is_a_singleton(renders, name):
    docs = renders[name]
    worker = deployments(docs)["worker"]
    assert worker["spec"]["replicas"] == 1
    assert worker["spec"]["strategy"] == {"type": "Recreate"}
    assert not [h for h in objs(docs, "HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == "worker"]


@overlay
def test_hpa_only_on_the_api_with_the_environments_bounds(renders, environments, name):
    docs = renders[name]
    row = env_row(environments, name)
    hpas = objs(docs, "HorizontalPodAutoscaler")
    assert len(hpas) == 1
    hpa = hpas[0]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}
    assert hpa["spec"]["minReplicas"] == row["api_min_replicas"]
    assert hpa["spec"]["maxReplicas"] == row["api_max_replicas"]
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # the HPA owns the count; a replicas field would reset it on every apply
    assert "replicas" not in deployments(docs)["api"]["spec"]


def test_environments_differ_in_scale(environments):
    bounds = {(r["api_min_replicas"], r["api_max_replicas"]) for r in environments.values()}
    assert len(bounds) == len(environments)
    assert environments["prod"]["api_min_replicas"] >= 2, "prod must survive a node loss"


@overlay
def test_pdbs_cover_both_workloads_and_never_block_a_drain(renders, environments, name):
    docs = renders[name]
    deps = deployments(docs)
    row = env_row(environments, name)
    pdbs = objs(docs, "PodDisruptionBudget")
    for svc, dep in deps.items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        matching = [p for p in pdbs if selector_matches(p["spec"]["selector"], labels)]
        assert len(matching) == 1, f"{name}: {svc} needs exactly one PDB"
        spec = matching[0]["spec"]
        replicas = row["api_min_replicas"] if svc == "api" else dep["spec"]["replicas"]
        if "maxUnavailable" in spec:
            allowed = spec["maxUnavailable"]
        else:
            allowed = replicas - spec["minAvailable"]
        assert allowed >= 1, f"{name}: PDB of {svc} would block node drains at {replicas} replica(s)"
        if svc == "worker":
            assert spec.get("maxUnavailable") == 1


@overlay
def test_api_service_reaches_the_http_port(renders, name):
    docs = renders[name]
    deps = deployments(docs)
    svc = one(docs, "Service", "api")
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert container_ports(the_container(deps["api"]))["http"] == 8000
    assert selector_matches({"matchLabels": svc["spec"]["selector"]}, deps["api"]["spec"]["template"]["metadata"]["labels"])
    assert not selector_matches({"matchLabels": svc["spec"]["selector"]}, deps["worker"]["spec"]["template"]["metadata"]["labels"])


@overlay
def test_no_request_lost_on_rollout_or_sigterm(renders, name):
    docs = renders[name]
    deps = deployments(docs)
    api = deps["api"]
    assert api["spec"]["strategy"]["type"] == "RollingUpdate"
    assert api["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert api["spec"]["strategy"]["rollingUpdate"]["maxSurge"] >= 1
    c = the_container(api)
    sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"]  # kubelet-native: no shell in the image
    assert "exec" not in c["lifecycle"]["preStop"]
    assert sleep >= 1
    env = effective_env(docs, c)
    delay = duration_seconds(env.get("SHUTDOWN_DELAY", "0s"))
    timeout = duration_seconds(env.get("SHUTDOWN_TIMEOUT", "10s"))
    grace = pod_spec(api)["terminationGracePeriodSeconds"]
    assert grace > sleep + delay + timeout, f"api: grace {grace}s <= preStop {sleep}s + delay {delay}s + timeout {timeout}s"
    worker = deps["worker"]
    wenv = effective_env(docs, the_container(worker))
    assert pod_spec(worker)["terminationGracePeriodSeconds"] > duration_seconds(wenv.get("SHUTDOWN_TIMEOUT", "10s"))


@overlay
def test_api_spreads_over_nodes_and_zones_but_schedules_on_one_node(renders, name):
    api = deployments(renders[name])["api"]
    labels = api["spec"]["template"]["metadata"]["labels"]
    tsc = {t["topologyKey"]: t for t in pod_spec(api)["topologySpreadConstraints"]}
    assert set(tsc) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    # kind nodes have no zone label: DoNotSchedule on zone would leave every pod Pending
    assert tsc["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"
    for t in tsc.values():
        assert selector_matches(t["labelSelector"], labels)
        assert t["maxSkew"] == 1
        # Cordoned / tainted nodes must not count as empty domains: with the default (Ignore)
        # a drain leaves the DoNotSchedule replacements Pending.
        assert t.get("nodeTaintsPolicy") == "Honor", t["topologyKey"]


def _port_allowed(rule, port_name, port_number):
    ports = rule.get("ports")
    if not ports:
        return True
    return any(p.get("port") in (port_name, port_number) for p in ports)


def _from_monitoring(rule):
    peers = rule.get("from", [])
    return any(
        p.get("namespaceSelector", {}).get("matchLabels") == {"kubernetes.io/metadata.name": MONITORING_NS}
        for p in peers
    )


@overlay
def test_network_policies_default_deny_and_open_only_what_is_used(renders, name):
    docs = renders[name]
    policies = objs(docs, "NetworkPolicy")
    deny = [
        p for p in policies
        if p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress") and not p["spec"].get("egress")
    ]
    assert deny, f"{name}: no default-deny NetworkPolicy"
    assert not [p for p in policies if p["spec"].get("egress")], "the services make no outbound calls"
    pods = [d["spec"]["template"] for d in deployments(docs).values()]
    for p in policies:
        selected = [t for t in pods if selector_matches(p["spec"]["podSelector"], t["metadata"]["labels"])]
        assert selected, f"NetworkPolicy {p['metadata']['name']} selects no pod"
        for rule in p["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                assert any(port["port"] in container_ports(c) for t in selected for c in t["spec"]["containers"]), (
                    f"NetworkPolicy {p['metadata']['name']}: port {port['port']!r} exists on none of its pods"
                )
    for svc, dep in deployments(docs).items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        ports = container_ports(the_container(dep))
        port_name = SCRAPE_PORT_NAME[svc]
        rules = [r for p in policies if selector_matches(p["spec"]["podSelector"], labels) for r in p["spec"].get("ingress", [])]
        scrape = [r for r in rules if _from_monitoring(r) and _port_allowed(r, port_name, ports[port_name])]
        assert scrape, f"{name}: Prometheus cannot reach {svc}:{port_name}"
        open_to_all = [r for r in rules if not r.get("from") and _port_allowed(r, port_name, ports[port_name])]
        if svc == "api":
            assert open_to_all, "clients must reach the api's http port"
        else:
            assert not open_to_all, "worker metrics must be reachable from monitoring only"


@overlay
def test_scrape_annotations_name_the_real_metrics_port(renders, name):
    for svc, dep in deployments(renders[name]).items():
        ann = dep["spec"]["template"]["metadata"].get("annotations", {})
        ports = container_ports(the_container(dep))
        assert ann.get("prometheus.io/scrape") == "true"
        assert ann.get("prometheus.io/path") == "/metrics"
        assert int(ann["prometheus.io/port"]) == ports[SCRAPE_PORT_NAME[svc]], f"{name}/{svc}"


@overlay
def test_prometheus_may_only_read_pods(renders, name):
    docs = renders[name]
    assert not objs(docs, "ClusterRole") and not objs(docs, "ClusterRoleBinding")
    roles = objs(docs, "Role")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            assert rule["apiGroups"] == [""]
            assert set(rule["resources"]) <= {"pods"}
            assert set(rule["verbs"]) <= {"get", "list", "watch"}
    binding = one(docs, "RoleBinding", "prometheus-discovery")
    assert binding["roleRef"]["kind"] == "Role"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "prometheus", "namespace": MONITORING_NS}]


@overlay
def test_labels(renders, name):
    for d in renders[name]:
        assert d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "orion", d["metadata"]["name"]
    for svc, dep in deployments(renders[name]).items():
        assert dep["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": svc}}
        tl = dep["spec"]["template"]["metadata"]["labels"]
        assert tl["app.kubernetes.io/name"] == svc and tl["app.kubernetes.io/component"] == svc
        assert tl["app.kubernetes.io/part-of"] == "orion"


@pytest.mark.parametrize("name", ["dev", "uat", "prod"])
def test_overlays_state_only_what_differs(name):
    k = yaml.safe_load((REPO / "k8s" / "overlays" / name / "kustomization.yaml").read_text())
    assert k["resources"] == ["../../base"]
    assert set(k) <= {"apiVersion", "kind", "namespace", "resources", "images", "configMapGenerator", "patches"}
    for gen in k.get("configMapGenerator", []):
        assert gen.get("behavior") == "merge", "overlays merge into the base's ConfigMaps"


def test_ci_digest_pinning_renders_digests(tmp_path):
    """CI runs `kustomize edit set image orion-api=ghcr.io/orionlynn19/orion-api@sha256:<d>` on a
    copy of the overlay. That rewrites the `images:` entry named orion-api to
    {name, newName, digest} (dropping newTag). The standalone kustomize binary is not among the
    pinned tools, so the edit is applied here as data; the render must then carry the digest."""
    shutil.copytree(REPO / "k8s", tmp_path / "k8s")
    kfile = tmp_path / "k8s" / "overlays" / "prod" / "kustomization.yaml"
    k = yaml.safe_load(kfile.read_text())
    digests = {"orion-api": "sha256:" + "a" * 64, "orion-worker": "sha256:" + "b" * 64}
    names = {img["name"] for img in k["images"]}
    assert names == set(digests), "the CI command addresses images by their bare base names"
    k["images"] = [{"name": n, "newName": f"{REGISTRY}/{n}", "digest": d} for n, d in digests.items()]
    kfile.write_text(yaml.safe_dump(k))
    docs = kustomize(kfile.parent)
    images = sorted(the_container(d)["image"] for d in objs(docs, "Deployment"))
    assert images == sorted(f"{REGISTRY}/{n}@{d}" for n, d in digests.items())
