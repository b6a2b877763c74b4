"""The deploy scripts' parts that need no cluster: rendering, digest pinning, the kind image
names, the summary, the EKS guard, the image build command and its retries.

Real overlays (k8s/) where the test is about what ships; the fixture tree
(tests/ci/fixtures/k8s) where a test has to break an overlay on purpose.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

import pytest
import yaml

from conftest import DIGEST_A, DIGEST_B, MAPPING, REGISTRY, ROOT, VENV_BIN, kv, run, tool_env

ENVS = [m["env"] for m in MAPPING.values()]
NS = {m["env"]: m["namespace"] for m in MAPPING.values()}
TAG = {m["env"]: m["tag"] for m in MAPPING.values()}


def tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def images_of(rendered: Path) -> dict:
    out = {}
    for doc in yaml.safe_load_all(rendered.read_text()):
        if isinstance(doc, dict) and doc.get("kind") == "Deployment":
            ns = doc["metadata"].get("namespace")
            for c in doc["spec"]["template"]["spec"]["containers"]:
                out[(ns, doc["metadata"]["name"])] = c["image"]
    return out


def render(env_name, out, *, api=None, worker=None, k8s_dir=None):
    extra = {}
    if api:
        extra["ORION_API_IMAGE"] = api
    if worker:
        extra["ORION_WORKER_IMAGE"] = worker
    if k8s_dir:
        extra["ORION_K8S_DIR"] = str(k8s_dir)
    return run(["scripts/deploy-kind.sh", "render", env_name, str(out)], env=tool_env(**extra))


# ---------------------------------------------------------------- the real overlays -------

@pytest.mark.parametrize("env_name", ENVS)
def test_render_pins_digests_on_a_copy_only(env_name, tmp_path, kubectl):
    before = tree_digest(ROOT / "k8s")
    api, worker = f"{REGISTRY}/orion-api@{DIGEST_A}", f"{REGISTRY}/orion-worker@{DIGEST_B}"
    out = tmp_path / "r.yaml"
    res = render(env_name, out, api=api, worker=worker)
    assert res.returncode == 0, res.stderr
    assert images_of(out) == {(NS[env_name], "api"): api, (NS[env_name], "worker"): worker}
    assert res.stdout.strip() == hashlib.sha256(out.read_bytes()).hexdigest()
    assert tree_digest(ROOT / "k8s") == before, "the checked-in overlays must never be edited"
    # Only the image references differ from the checked-in overlay's own render.
    plain = run([kubectl, "kustomize", f"k8s/overlays/{env_name}"], check=True).stdout
    tagged = plain.replace(f"{REGISTRY}/orion-api:{TAG[env_name]}", api).replace(
        f"{REGISTRY}/orion-worker:{TAG[env_name]}", worker)
    assert out.read_text() == tagged


@pytest.mark.parametrize("env_name", ENVS)
def test_unpinned_render_uses_the_mapping_tag_and_is_deterministic(env_name, tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    ra, rb = render(env_name, a), render(env_name, b)
    assert ra.returncode == 0 and rb.returncode == 0, ra.stderr + rb.stderr
    assert images_of(a) == {
        (NS[env_name], "api"): f"{REGISTRY}/orion-api:{TAG[env_name]}",
        (NS[env_name], "worker"): f"{REGISTRY}/orion-worker:{TAG[env_name]}",
    }
    # The validate job and the deploy job render separately: same inputs, same bytes.
    assert ra.stdout == rb.stdout and a.read_bytes() == b.read_bytes()


def test_pinned_render_passes_kubernetes_validate_strict(tmp_path):
    out = tmp_path / "prod.yaml"
    res = render("prod", out, api=f"{REGISTRY}/orion-api@{DIGEST_A}", worker=f"{REGISTRY}/orion-worker@{DIGEST_B}")
    assert res.returncode == 0, res.stderr
    v = run([str(VENV_BIN / "kubernetes-validate"), "--strict", "--quiet", "--kubernetes-version", "1.30.0", str(out)])
    assert v.returncode == 0, v.stdout + v.stderr


@pytest.mark.parametrize("bad", [
    "ghcr.io/orionlynn19/orion-api@sha256:xyz",
    "ghcr.io/orionlynn19/orion-api@md5:" + "a" * 32,
    "ghcr.io/orionlynn19/orion-api:",
])
def test_render_rejects_malformed_references(bad, tmp_path):
    res = render("dev", tmp_path / "r.yaml", api=bad)
    assert res.returncode != 0
    assert "invalid" in res.stderr or "empty tag" in res.stderr, res.stderr


def test_render_rejects_unknown_environment(tmp_path):
    res = render("staging", tmp_path / "r.yaml")
    assert res.returncode != 0 and "unknown environment" in res.stderr


@pytest.mark.parametrize("branch", sorted(MAPPING))
def test_env_command_matches_ci_env(branch):
    want = MAPPING[branch]
    out = kv(run(["scripts/deploy-kind.sh", "env", want["env"]], check=True).stdout)
    assert out["branch"] == branch and out["namespace"] == want["namespace"] and out["tag"] == want["tag"]


# ---------------------------------------------------------------- fixture tree: negatives --

def test_fixture_renders_like_the_real_tree(fixture_k8s, tmp_path):
    out = tmp_path / "r.yaml"
    res = render("uat", out, api=f"x.example/orion-api@{DIGEST_A}", k8s_dir=fixture_k8s)
    assert res.returncode == 0, res.stderr
    assert images_of(out) == {("orion-uat", "api"): f"x.example/orion-api@{DIGEST_A}",
                              ("orion-uat", "worker"): f"{REGISTRY}/orion-worker:uat"}


def test_render_fails_when_an_overlay_forgets_to_map_an_image(fixture_k8s, tmp_path):
    k = fixture_k8s / "overlays" / "dev" / "kustomization.yaml"
    doc = yaml.safe_load(k.read_text())
    doc["images"] = [i for i in doc["images"] if i["name"] != "orion-worker"]
    k.write_text(yaml.safe_dump(doc))
    res = render("dev", tmp_path / "r.yaml", k8s_dir=fixture_k8s)
    assert res.returncode != 0
    assert "worker" in res.stderr and "expected" in res.stderr, res.stderr


def test_render_fails_when_overlay_tag_disagrees_with_the_mapping(fixture_k8s, tmp_path):
    envs = fixture_k8s / "environments.yaml"
    envs.write_text(envs.read_text().replace("image_tag: uat", "image_tag: staging"))
    res = render("uat", tmp_path / "r.yaml", k8s_dir=fixture_k8s)
    assert res.returncode != 0 and "orion-api:staging" in res.stderr, res.stderr


def test_render_fails_when_namespace_is_wrong(fixture_k8s, tmp_path):
    k = fixture_k8s / "overlays" / "prod" / "kustomization.yaml"
    k.write_text(k.read_text().replace("namespace: orion-prod", "namespace: default"))
    res = render("prod", tmp_path / "r.yaml", k8s_dir=fixture_k8s)
    assert res.returncode != 0 and "no Deployment api in namespace orion-prod" in res.stderr


# ---------------------------------------------------------------- set-image semantics ------

@pytest.mark.parametrize("ref,fields", [
    (f"ghcr.io/o/orion-api@{DIGEST_A}", {"newName": "ghcr.io/o/orion-api", "digest": DIGEST_A}),
    (f"ghcr.io/o/orion-api:dev@{DIGEST_A}", {"newName": "ghcr.io/o/orion-api", "digest": DIGEST_A}),
    ("orion-api:local", {"newTag": "local"}),
    ("localhost:5000/orion-api", {"newName": "localhost:5000/orion-api"}),
    ("localhost:5000/orion-api:v1", {"newName": "localhost:5000/orion-api", "newTag": "v1"}),
])
def test_set_image_behaves_like_kustomize_edit(ref, fields, tmp_path):
    k = tmp_path / "kustomization.yaml"
    k.write_text("images:\n  - name: orion-api\n    newName: old\n    newTag: old\n  - name: other\n    newTag: keep\n")
    run(["scripts/deploy-tool.py", "set-image", str(k), f"orion-api={ref}"], check=True)
    images = {i["name"]: i for i in yaml.safe_load(k.read_text())["images"]}
    assert images["orion-api"] == {"name": "orion-api", **fields}
    assert images["other"] == {"name": "other", "newTag": "keep"}


# ---------------------------------------------------------------- kind image names ---------

@pytest.mark.parametrize("ref,kind_ref", [
    (f"ghcr.io/orionlynn19/orion-api@{DIGEST_A}", "ghcr.io/orionlynn19/orion-api:kind-aaaaaaaaaaaa"),
    (f"ghcr.io/orionlynn19/orion-api:dev@{DIGEST_B}", "ghcr.io/orionlynn19/orion-api:kind-bbbbbbbbbbbb"),
    (f"localhost:5000/orion-api@{DIGEST_A}", "localhost:5000/orion-api:kind-aaaaaaaaaaaa"),
    ("orion-api:local", "orion-api:local"),
])
def test_kind_ref(ref, kind_ref):
    res = run(["bash", "-c", '. scripts/deploy-lib.sh && orion_kind_ref "$1"', "_", ref], check=True)
    assert res.stdout.strip() == kind_ref


def test_only_images_differ_check(tmp_path):
    validated, other = tmp_path / "v.yaml", tmp_path / "o.yaml"
    validated.write_text(f"image: r/api@{DIGEST_A}\nreplicas: 2\nimage: r/worker@{DIGEST_B}\n")
    args = [f"r/api@{DIGEST_A}", "r/api:kind-aaaaaaaaaaaa", f"r/worker@{DIGEST_B}", "r/worker:kind-bbbbbbbbbbbb"]
    check = ". scripts/deploy-lib.sh && orion_only_images_differ \"$@\""
    other.write_text("image: r/api:kind-aaaaaaaaaaaa\nreplicas: 2\nimage: r/worker:kind-bbbbbbbbbbbb\n")
    assert run(["bash", "-c", check, "_", str(validated), str(other), *args]).returncode == 0
    other.write_text("image: r/api:kind-aaaaaaaaaaaa\nreplicas: 3\nimage: r/worker:kind-bbbbbbbbbbbb\n")
    assert run(["bash", "-c", check, "_", str(validated), str(other), *args]).returncode == 1


# ---------------------------------------------------------------- summary ------------------

def test_summary_reports_every_step_and_never_invents_one(tmp_path):
    results = tmp_path / "results.env"
    results.write_text("\n".join([
        "env=uat", "namespace=orion-uat", f"image_api={REGISTRY}/orion-api@{DIGEST_A}",
        f"kind_image_api={REGISTRY}/orion-api:kind-aaaaaaaaaaaa", "render=ok (sha256 abc…)",
        "kind_cluster=created orion", "kind_load=ok", "apply=ok", "rollout=ok",
        "smoke_api=ok (/health 200, /ready 200, /metrics 200,)", "status=failed during smoke",
        "smoke_worker=FAILED (/health 503,)",
        "eks=not deployed: AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION EKS_CLUSTER_NAME not configured",
    ]) + "\n")
    step_summary = tmp_path / "summary.md"
    res = run(["scripts/deploy-kind.sh", "summary", str(results)],
              env=tool_env(GITHUB_STEP_SUMMARY=str(step_summary)), check=True)
    md = step_summary.read_text()
    assert md.strip() == res.stdout.strip()
    assert "## Deployment: uat (`orion-uat`)" in md
    assert f"`{REGISTRY}/orion-api@{DIGEST_A}`" in md and "loaded into kind as" in md
    assert "| Smoke worker /health /ready /metrics | FAILED (/health 503,) |" in md
    assert "| EKS | not deployed: AWS_ACCESS_KEY_ID" in md
    assert "**Result: failed during smoke**" in md


def test_summary_of_a_deploy_that_never_started(tmp_path):
    res = run(["scripts/deploy-kind.sh", "summary", str(tmp_path / "missing.env")], check=True)
    rows = [l for l in res.stdout.splitlines() if l.startswith("| ") and "|---" not in l]
    steps = [r for r in rows if r.endswith("| not run |")]
    assert len(steps) == 8, res.stdout  # 7 kind steps + EKS: nothing claims success
    assert "**Result: unknown**" in res.stdout


# ---------------------------------------------------------------- EKS guard ----------------

def test_eks_without_credentials_says_not_deployed(tmp_path):
    results = tmp_path / "not-yet" / "results.env"  # CI's results directory does not exist yet
    res = run(["scripts/deploy-eks.sh", "dev"], env=tool_env(ORION_RESULTS=str(results), AWS_REGION="eu-west-1"))
    assert res.returncode == 0, res.stderr
    eks = kv(results.read_text())["eks"]
    assert eks == "not deployed: AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY EKS_CLUSTER_NAME not configured"


def test_eks_refuses_images_not_pinned_by_digest(tmp_path):
    results = tmp_path / "results.env"
    creds = dict(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y", AWS_REGION="eu-west-1", EKS_CLUSTER_NAME="c")
    res = run(["scripts/deploy-eks.sh", "prod"], env=tool_env(
        ORION_RESULTS=str(results), ORION_API_IMAGE=f"{REGISTRY}/orion-api:latest",
        ORION_WORKER_IMAGE=f"{REGISTRY}/orion-worker@{DIGEST_B}", **creds))
    assert res.returncode != 0
    assert "digest" in res.stderr and kv(results.read_text())["eks"].startswith("FAILED")


# ---------------------------------------------------------------- fakes for docker / kind --

def fake_bin(dir_: Path, name: str, body: str) -> None:
    p = dir_ / name
    p.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)


# `kubectl version -o json` of a kubectl that matches the cluster (both v1.34, the kind node's):
# the deploy keeps it (scripts/deploy-kubectl.py; its own tests cover the other cases).
KUBECTL_VERSION = ('[ "$*" != "version -o json --request-timeout=30s" ] || { echo \'{"clientVersion": {"major": "1", '
                   '"minor": "34", "gitVersion": "v1.34.7"}, "serverVersion": {"major": "1", "minor": "34", '
                   '"gitVersion": "v1.34.0"}}\'; exit 0; }\n')


def stand_ins(bin_dir: Path, log: Path, **bodies: str) -> None:
    """Stand-ins for docker, kind, kubectl, aws, curl on PATH: each appends "<name> <argv>" to
    LOG, then runs its body (default: succeed silently). kubectl's `kustomize` runs the real
    pinned kubectl, so renders are real."""
    bin_dir.mkdir(exist_ok=True)
    real_kubectl = VENV_BIN / "kubectl"
    for name in ("docker", "kind", "kubectl", "aws", "curl"):
        body = bodies.get(name, "exit 0\n")
        if name == "kubectl":
            body = f'[ "$1" != kustomize ] || exec {real_kubectl} "$@"\n{KUBECTL_VERSION}' + body
        fake_bin(bin_dir, name, f'echo "{name} $*" >>{log}\n' + body)


def calls_of(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def docker_engine(api: str = "1.51", server: str = "28.5.1", containerd_store: bool = False) -> str:
    """Body of a stand-in `docker` CLI talking to an engine of API version `api`, as the real
    CLI behaves (each behaviour from upstream, not from our script):

    - `docker version --format '{{.Client.APIVersion}}'` prints the version the CLI negotiated
      with the engine: the lower of the two (docker/cli, cli/command/system/version.go; seen
      here: client 28.2.2 against engine 20.10 prints 1.41).
    - `docker save --platform ...` below API 1.48 is refused by the CLI itself, exit 1, before
      any request: the flag carries the annotation `"version": "1.48"` (docker/cli v28,
      cli/command/image/save.go, `flags.SetAnnotation("platform", "version",
      []string{"1.48"})`; the parameter is moby PR #48295, docker/cli PR #5331) and
      cmd/docker/docker.go's areFlagsSupported answers `"--%s" requires API version %s, but
      the Docker daemon API version is %s`. Verified here with the real client 28.2.2 and
      engine 20.10: `"--platform" requires API version 1.48, but the Docker daemon API
      version is 1.41`, exit 1.
    - `docker info --format '{{.DriverStatus}}'` prints `[[driver-type
      io.containerd.snapshotter.v1]]` with the containerd image store (Docker docs,
      "containerd image store with Docker Engine"), the graph driver's status otherwise.
    Everything else succeeds silently, like the other stand-ins."""
    minor = int(api.split(".")[1])
    driver = "[[driver-type io.containerd.snapshotter.v1]]" if containerd_store else "[[Backing Filesystem extfs]]"
    return (
        'case "$1" in\n'
        f'  version) case "$*" in *Client.APIVersion*) echo {api} ;; *) echo "{server}, API {api}" ;; esac ;;\n'
        f'  info) echo "{driver}" ;;\n'
        '  save) for a in "$@"; do\n'
        f'          if [ "$a" = --platform ] && [ {minor} -lt 48 ]; then\n'
        f'            echo \'"--platform" requires API version 1.48, but the Docker daemon API version is {api}\' >&2; exit 1\n'
        '          fi\n'
        '        done ;;\n'
        'esac\n'
    )


def test_up_pulls_one_platform_saves_an_archive_and_loads_it_in_order(tmp_path):
    """`up` against stand-ins: the exact docker / kind / kubectl sequence (kind#3795: a
    single-platform `docker save --platform` archive and `kind load image-archive`, never
    `kind load docker-image`), up to a rollout that fails, then diagnostics and summary."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    stand_ins(bin_dir, log, kubectl='[ "$1 $2 $3" != "-n orion-uat rollout" ] || exit 1\n', docker=docker_engine("1.51"))
    api, worker = f"{REGISTRY}/orion-api@{DIGEST_A}", f"{REGISTRY}/orion-worker@{DIGEST_B}"
    kapi, kworker = f"{REGISTRY}/orion-api:kind-aaaaaaaaaaaa", f"{REGISTRY}/orion-worker:kind-bbbbbbbbbbbb"
    results, out_dir = tmp_path / "results.env", tmp_path / "out"
    env = tool_env(ORION_API_IMAGE=api, ORION_WORKER_IMAGE=worker, ORION_RESULTS=str(results),
                   ORION_OUT_DIR=str(out_dir), RETRY_DELAY="0", KIND_PLATFORM="linux/amd64")
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    res = run(["scripts/deploy-kind.sh", "up", "uat"], env=env)
    assert res.returncode != 0
    script = (ROOT / "scripts" / "deploy-kind.sh").read_text()
    node = re.search(r'KIND_NODE_IMAGE:-(kindest/node:[^}]+)\}', script).group(1)
    archive = out_dir / "kind-images.tar"
    # (Each Deployment's revision is read before the apply: tests/ci/test_rollback.py; the
    # engine's API version before the save: test_kind_saves_*.)
    calls = [c for c in calls_of(log) if not c.startswith(("kubectl kustomize", "docker version",
                                                            "kubectl -n orion-uat get deployment ",
                                                            "kubectl -n monitoring get deployment "))]
    assert calls[:11] == [
        f"docker pull --quiet --platform linux/amd64 {api}",
        f"docker tag {api} {kapi}",
        f"docker pull --quiet --platform linux/amd64 {worker}",
        f"docker tag {worker} {kworker}",
        "kind get clusters",
        f"kind create cluster --name orion --image {node} --wait 120s",
        "kubectl config use-context kind-orion",
        "kubectl version -o json --request-timeout=30s",
        f"docker save --platform linux/amd64 --output {archive} {kapi} {kworker}",
        f"kind load image-archive --name orion {archive}",
        f"kubectl apply -f {out_dir / 'monitoring.yaml'}",
    ]
    assert calls[11] == f"kubectl apply -f {out_dir / 'uat.kind.yaml'}"
    assert calls[12].startswith("kubectl -n orion-uat rollout status deployment/api")
    assert calls[13].startswith("kubectl -n orion-uat get deploy"), "diagnostics after a failed rollout"
    assert not any("load docker-image" in c for c in calls)
    r = kv(results.read_text())
    assert r["status"] == "failed during rollout" and r["kind_load"] == "ok (linux/amd64 archive)"
    assert r["manifest_sha256"] == hashlib.sha256((out_dir / "uat.yaml").read_bytes()).hexdigest()
    assert images_of(out_dir / "uat.kind.yaml")[("orion-uat", "worker")] == kworker
    assert "**Result: failed during rollout**" in res.stdout


def test_up_applies_nothing_when_the_load_fails(tmp_path):
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    stand_ins(bin_dir, log, docker=docker_engine("1.51"),
              kind='[ "$1 $2" != "load image-archive" ] || { echo "ctr: content digest sha256:abc: not found" >&2; exit 1; }\n')
    env = tool_env(ORION_API_IMAGE=f"{REGISTRY}/orion-api@{DIGEST_A}", ORION_RESULTS=str(tmp_path / "r.env"),
                   ORION_WORKER_IMAGE=f"{REGISTRY}/orion-worker@{DIGEST_B}", ORION_OUT_DIR=str(tmp_path / "out"),
                   RETRY_DELAY="0", KIND_PLATFORM="linux/arm64")
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    res = run(["scripts/deploy-kind.sh", "up", "dev"], env=env)
    assert res.returncode != 0
    calls = calls_of(log)
    assert any(c.startswith("docker save --platform linux/arm64 ") for c in calls)
    assert not any(c.startswith("kubectl apply") for c in calls)
    assert kv((tmp_path / "r.env").read_text())["status"] == "failed during load"


def kind_up(tmp_path, docker_body: str, *, api_image=None, worker_image=None):
    """deploy-kind.sh up dev against stand-ins; returns (result, calls, results)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    stand_ins(bin_dir, log, docker=docker_body, kubectl='[ "$3" != rollout ] || exit 1\n')
    extra = {}
    if api_image:
        extra = dict(ORION_API_IMAGE=api_image, ORION_WORKER_IMAGE=worker_image)
    env = tool_env(ORION_RESULTS=str(tmp_path / "r.env"), ORION_OUT_DIR=str(tmp_path / "out"),
                   RETRY_DELAY="0", KIND_PLATFORM="linux/amd64", **extra)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    res = run(["scripts/deploy-kind.sh", "up", "dev"], env=env)
    return res, calls_of(log), kv((tmp_path / "r.env").read_text())


@pytest.mark.parametrize("api,server", [("1.41", "20.10.24"), ("1.43", "24.0.7"), ("1.47", "27.5.1")])
def test_up_on_an_engine_below_api_1_48_saves_its_one_platform_without_the_flag(tmp_path, api, server):
    """Docker 20.10-27 (classic store: one platform per image) get a plain `docker save`, which
    is already the single-platform archive; the CLI would refuse `--platform` there."""
    res, calls, results = kind_up(tmp_path, docker_engine(api, server))
    archive = tmp_path / "out" / "kind-images.tar"
    saves = [c for c in calls if c.startswith("docker save")]
    assert saves == [f"docker save --output {archive} orion-api:local orion-worker:local"], calls
    assert f"kind load image-archive --name orion {archive}" in calls
    assert results["kind_load"] == "ok (linux/amd64 archive)", res.stderr
    assert results["status"] == "failed during rollout"  # the stand-in kubectl's rollout fails
    assert "requires API version" not in res.stderr


def test_up_on_api_1_48_and_newer_saves_one_platform_of_pulled_images(tmp_path):
    api, worker = f"{REGISTRY}/orion-api@{DIGEST_A}", f"{REGISTRY}/orion-worker@{DIGEST_B}"
    res, calls, results = kind_up(tmp_path, docker_engine("1.52", "29.1.0", containerd_store=True),
                                  api_image=api, worker_image=worker)
    saves = [c for c in calls if c.startswith("docker save")]
    assert saves == [f"docker save --platform linux/amd64 --output {tmp_path / 'out' / 'kind-images.tar'} "
                     f"{REGISTRY}/orion-api:kind-aaaaaaaaaaaa {REGISTRY}/orion-worker:kind-bbbbbbbbbbbb"]
    assert results["kind_load"] == "ok (linux/amd64 archive)", res.stderr


def test_up_below_api_1_48_with_the_containerd_store_says_what_may_fail(tmp_path):
    api, worker = f"{REGISTRY}/orion-api@{DIGEST_A}", f"{REGISTRY}/orion-worker@{DIGEST_B}"
    res, calls, _ = kind_up(tmp_path, docker_engine("1.47", "27.5.1", containerd_store=True),
                            api_image=api, worker_image=worker)
    assert not any("--platform linux/amd64 --output" in c for c in calls if c.startswith("docker save"))
    assert "with the containerd image store: a plain docker save of a pulled multi-platform image may not" \
           " import into kind (kind#3795)" in res.stderr


def test_up_when_docker_save_fails_applies_nothing_and_names_the_engine(tmp_path):
    body = docker_engine("1.41", "20.10.24").replace("  save) ", "  save) echo 'Error response from daemon: no space left' >&2; exit 1; ")
    res, calls, results = kind_up(tmp_path, body)
    assert res.returncode != 0
    assert "docker save failed (engine: 20.10.24, API 1.41)" in res.stderr, res.stderr
    assert not any(c.startswith(("kind load", "kubectl apply")) for c in calls)
    assert results["status"] == "failed during load"


def test_up_with_local_images_needs_them_built_first(tmp_path):
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    stand_ins(bin_dir, log, docker='[ "$1 $2" != "image inspect" ] || exit 1\n')
    env = tool_env(ORION_RESULTS=str(tmp_path / "r.env"), ORION_OUT_DIR=str(tmp_path / "out"))
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    res = run(["scripts/deploy-kind.sh", "up", "dev"], env=env)
    assert res.returncode != 0 and "is not in the local docker engine (build it first: make images)" in res.stderr
    assert not any(c.startswith(("docker pull", "kind ", "kubectl apply")) for c in calls_of(log))


def test_up_stops_when_the_render_differs_from_the_validated_one(tmp_path):
    results = tmp_path / "results.env"
    env = tool_env(ORION_API_IMAGE=f"{REGISTRY}/orion-api@{DIGEST_A}",
                   ORION_WORKER_IMAGE=f"{REGISTRY}/orion-worker@{DIGEST_B}",
                   ORION_EXPECT_MANIFEST_SHA256="0" * 64, ORION_RESULTS=str(results),
                   ORION_OUT_DIR=str(tmp_path / "out"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_bin(bin_dir, "kind", "exit 0\n")
    fake_bin(bin_dir, "docker", "exit 0\n")
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    res = run(["scripts/deploy-kind.sh", "up", "dev"], env=env)
    assert res.returncode != 0 and "differs from the validated one" in res.stderr
    assert kv(results.read_text())["status"] == "failed during render"


# ---------------------------------------------------------------- retries ------------------

def test_retry_helper(tmp_path):
    counter = tmp_path / "n"
    script = f'n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); echo $n >{counter}; [ $n -ge 3 ]'
    env = tool_env(RETRY_DELAY="0")
    assert run(["scripts/ci-retry.sh", "3", "bash", "-c", script], env=env).returncode == 0
    assert counter.read_text().strip() == "3"
    counter.unlink()
    res = run(["scripts/ci-retry.sh", "2", "bash", "-c", script + " || exit 7"], env=env)
    assert res.returncode == 7 and counter.read_text().strip() == "2"
    assert run(["scripts/ci-retry.sh", "0", "true"], env=env).returncode == 2


# ---------------------------------------------------------------- smoke checks -------------

def test_http_check_needs_200_and_the_services_own_metrics():
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            status, body = {"/health": (200, "ok"), "/ready": (503, "shutting down"),
                            "/metrics": (200, 'orion_build_info{service="api"} 1\n'),
                            "/other-metrics": (200, "go_goroutines 7\n")}.get(self.path, (404, ""))
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    check = '. scripts/deploy-lib.sh && orion_http_check "$@"'
    try:
        ok = run(["bash", "-c", check, "_", f"{base}/health"])
        assert ok.returncode == 0 and ok.stdout.strip() == "200"
        ready = run(["bash", "-c", check, "_", f"{base}/ready"])
        assert ready.returncode == 1 and ready.stdout.strip() == "503"
        metrics = run(["bash", "-c", check, "_", f"{base}/metrics", "orion_build_info"])
        assert metrics.returncode == 0
        foreign = run(["bash", "-c", check, "_", f"{base}/other-metrics", "orion_build_info"])
        assert foreign.returncode == 1 and foreign.stdout.strip() == "200-without-orion_build_info"
    finally:
        server.shutdown()
    down = run(["bash", "-c", check, "_", f"{base}/health"])
    assert down.returncode == 1 and down.stdout.strip() == "000"


# ---------------------------------------------------------------- EKS preflight ------------

EKS_CREDS = dict(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y", AWS_REGION="eu-west-1", EKS_CLUSTER_NAME="orion-eks")
GRAFANA = dict(GRAFANA_ADMIN_PASSWORD="a real one")


# The VPC CNI as EKS renders it. github.com/aws/amazon-vpc-cni-k8s @ b5218838 (chart
# charts/aws-vpc-cni 1.23.1, appVersion v1.23.1): templates/daemonset.yaml names the DaemonSet
# aws-node (values.yaml fullnameOverride), its containers `aws-node` and, with nodeAgent.enabled
# (the default), `aws-eks-nodeagent` with image
# <account>.dkr.ecr.<region>.amazonaws.com/amazon/aws-network-policy-agent:<tag> (values
# nodeAgent.image; the EKS add-on's tags are vX.Y.Z-eksbuild.N) and these args in this order,
# `--enable-network-policy={{ .Values.enableNetworkPolicy }}` defaulting to "false";
# templates/configmap.yaml renders ConfigMap kube-system/amazon-vpc-cni whose
# enable-network-policy-controller is the same value. The init container aws-vpc-cni-init is
# left out: the preflight never reads initContainers.
VPC_CNI_REGISTRY = "602401143452.dkr.ecr.eu-west-1.amazonaws.com"


def nodeagent_args(enable: str) -> list[str]:
    return [
        "--enable-ipv6=false", f"--enable-network-policy={enable}", "--enable-cloudwatch-logs=false",
        "--enable-policy-event-logs=false", "--log-file=/var/log/aws-routed-eni/network-policy-agent.log",
        "--metrics-bind-addr=:8162", "--health-probe-bind-addr=:8163", "--conntrack-cache-cleanup-period=300",
        "--conntrack-cache-table-size=524288", "--log-level=debug",
    ]


def daemonset(namespace: str, name: str, containers: list[dict]) -> dict:
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": namespace, "labels": {"k8s-app": name}},
            "spec": {"template": {"spec": {"containers": containers}}}}


def aws_node(agent_args: list[str] | None, *, agent_name="aws-eks-nodeagent") -> dict:
    """kube-system's DaemonSets on EKS with the vpc-cni add-on (see above); agent_args None:
    the chart with nodeAgent.enabled=false (no agent container)."""
    containers = [{"name": "aws-node", "image": f"{VPC_CNI_REGISTRY}/amazon-k8s-cni:v1.20.4-eksbuild.2",
                   "ports": [{"containerPort": 61678, "name": "metrics"}]}]
    if agent_args is not None:
        containers.append({"name": agent_name,
                           "image": f"{VPC_CNI_REGISTRY}/amazon/aws-network-policy-agent:v1.2.7-eksbuild.1",
                           "args": agent_args})
    return {"apiVersion": "v1", "kind": "List", "items": [
        daemonset("kube-system", "aws-node", containers),
        daemonset("kube-system", "kube-proxy", [{"name": "kube-proxy",
                                                "image": f"{VPC_CNI_REGISTRY}/eks/kube-proxy:v1.33.0-eksbuild.2"}]),
    ]}


def vpc_cni_configmap(controller: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "amazon-vpc-cni", "namespace": "kube-system"},
            "data": {"enable-windows-ipam": "false", "enable-network-policy-controller": controller,
                     "enable-windows-prefix-delegation": "false", "warm-prefix-target": "0",
                     "warm-ip-target": "1", "minimum-ip-target": "3", "branch-eni-cooldown": "60"}}


EMPTY = {"apiVersion": "v1", "kind": "List", "items": [], "metadata": {"resourceVersion": ""}}
NETPOL_ON = aws_node(nodeagent_args("true"))
NETPOL_OFF = aws_node(nodeagent_args("false"))
CONTROLLER_ON, CONTROLLER_OFF = vpc_cni_configmap("true"), vpc_cni_configmap("false")
# Calico by the Tigera operator (projectcalico/calico hack/test/kind/migration/run_test.sh reads
# `kubectl get daemonset -n calico-system calico-node`), here next to the VPC CNI with its
# policy agent off, as in Calico's policy-only install on EKS.
CALICO_OPERATOR = daemonset("calico-system", "calico-node", [{"name": "calico-node",
                                                              "image": "quay.io/calico/node:v3.30.3"}])


def storage_class(name: str, provisioner: str, *, default: bool) -> dict:
    annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": name, "annotations": annotations},
            "provisioner": provisioner, "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer",
            "parameters": {"type": name}}


# gp2 (in-tree name, served by the EBS CSI driver) and a gp3 class marked default, as an EKS
# cluster with the aws-ebs-csi-driver add-on has them after `kubectl annotate ... default`.
STORAGE = {**EMPTY, "items": [storage_class("gp2", "kubernetes.io/aws-ebs", default=False),
                              storage_class("gp3", "ebs.csi.aws.com", default=True)]}
NO_DEFAULT_STORAGE = {**EMPTY, "items": [storage_class("gp2", "kubernetes.io/aws-ebs", default=False)]}


def eks(tmp_path, *, daemonsets=NETPOL_ON, calico_system=EMPTY, configmap=CONTROLLER_ON, auto_nodes=0,
        storage=STORAGE, metrics="True", public=True, extra=None, rollout_fails=True):
    """deploy-eks.sh prod against stand-in aws / kubectl / curl; returns (result, calls, eks line).

    The stand-in kubectl answers the preflight's reads the way kubectl does: `get daemonsets -o
    json` in a namespace with none (or none at all) prints an empty List and exits 0; `get
    configmap NAME --ignore-not-found -o json` prints nothing and exits 0 when it is absent
    (kubectl get --help: "If the requested object does not exist the command will return exit
    code 0"); `get nodes -l SELECTOR -o name` prints one node/NAME line per match."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    ds, calico, cm = tmp_path / "daemonsets.json", tmp_path / "calico-system.json", tmp_path / "configmap.json"
    sc = tmp_path / "storageclasses.json"
    sc.write_text(json.dumps(storage))
    ds.write_text(json.dumps(daemonsets))
    calico.write_text(json.dumps(calico_system))
    cm.write_text(json.dumps(configmap) if configmap is not None else "")
    nodes = "".join(f"node/i-0{n:016x}\\n" for n in range(auto_nodes))
    kubectl = f'[ "$*" != "-n kube-system get daemonsets -o json" ] || {{ cat {ds}; exit 0; }}\n'
    kubectl += f'[ "$*" != "-n calico-system get daemonsets -o json" ] || {{ cat {calico}; exit 0; }}\n'
    kubectl += (f'[ "$*" != "-n kube-system get configmap amazon-vpc-cni --ignore-not-found -o json" ] || '
                f'{{ cat {cm}; exit 0; }}\n')
    kubectl += (f'[ "$*" != "get nodes -l eks.amazonaws.com/compute-type=auto -o name" ] || '
                f'{{ printf "{nodes}"; exit 0; }}\n')
    kubectl += f'[ "$*" != "get storageclass -o json" ] || {{ cat {sc}; exit 0; }}\n'
    kubectl += (f'[ "$1 $2" != "get apiservice" ] || {{ printf %s "{metrics}"; exit 0; }}\n' if metrics
                else '[ "$1 $2" != "get apiservice" ] || { echo "NotFound" >&2; exit 1; }\n')
    if rollout_fails:
        kubectl += '[ "$3" != rollout ] || exit 1\n'
    curl = ('case "$*" in *ghcr.io/token*) echo \'{"token":"anon"}\' ;; *) exit 0 ;; esac\n' if public
            else 'case "$*" in *ghcr.io/token*) echo \'{"token":"anon"}\' ;; *manifests*) exit 22 ;; esac\n')
    stand_ins(bin_dir, log, kubectl=kubectl, curl=curl)
    results = tmp_path / "results.env"
    env = tool_env(ORION_RESULTS=str(results), ORION_OUT_DIR=str(tmp_path / "out"),
                   ORION_API_IMAGE=f"{REGISTRY}/orion-api@{DIGEST_A}",
                   ORION_WORKER_IMAGE=f"{REGISTRY}/orion-worker@{DIGEST_B}", **EKS_CREDS, **{**GRAFANA, **(extra or {})})
    env = {k: v for k, v in env.items() if v is not None}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    res = run(["scripts/deploy-eks.sh", "prod"], env=env)
    calls = [c for c in calls_of(log) if not c.startswith("kubectl kustomize")]
    return res, calls, kv(results.read_text()).get("eks", "") if results.exists() else ""


def preflight_lines(res) -> list[str]:
    return [l for l in res.stderr.splitlines() if l.startswith("deploy-eks: preflight: ")]


PREFLIGHT_NETPOL_READS = [
    "kubectl -n kube-system get daemonsets -o json",
    "kubectl -n calico-system get daemonsets -o json",
    "kubectl -n kube-system get configmap amazon-vpc-cni --ignore-not-found -o json",
    "kubectl get nodes -l eks.amazonaws.com/compute-type=auto -o name",
]


def test_eks_preflight_passes_then_applies_in_order(tmp_path):
    res, calls, _ = eks(tmp_path)
    out = tmp_path / "out"
    assert calls[0].startswith("aws eks update-kubeconfig --name orion-eks --region eu-west-1 --kubeconfig ")
    assert calls[1] == "kubectl version -o json --request-timeout=30s", "which kubectl suits the cluster"
    calls = calls[:1] + calls[2:]
    n = len(PREFLIGHT_NETPOL_READS) + 1
    assert calls[1:n + 3] == PREFLIGHT_NETPOL_READS + ["kubectl get storageclass -o json"] + [
        "kubectl get apiservice v1beta1.metrics.k8s.io -o jsonpath={.status.conditions[?(@.type==\"Available\")].status}",
        "curl -fsS --max-time 10 https://ghcr.io/token?scope=repository:orionlynn19/orion-api:pull",
    ]
    probes = calls[n + 3:n + 6]
    assert probes[0].startswith("curl -fsS --max-time 10 -o /dev/null --head -H Authorization: Bearer anon")
    assert probes[0].endswith(f"https://ghcr.io/v2/orionlynn19/orion-api/manifests/{DIGEST_A}")
    assert probes[2].endswith(f"https://ghcr.io/v2/orionlynn19/orion-worker/manifests/{DIGEST_B}")
    applies = [c for c in calls if c.startswith("kubectl apply")]
    assert applies == [f"kubectl apply -f {out / 'monitoring.eks.yaml'}", f"kubectl apply -f {out / 'prod.eks.yaml'}"]
    assert "preflight ok" in res.stderr and not preflight_lines(res)
    assert ("deploy-eks: NetworkPolicy enforcer: the VPC CNI enforces NetworkPolicies (aws-eks-nodeagent runs with "
            "--enable-network-policy=true, ConfigMap kube-system/amazon-vpc-cni has "
            "enable-network-policy-controller: \"true\")") in res.stderr.splitlines()


def test_eks_waits_for_every_deployment_of_the_app_and_the_monitoring_stack(tmp_path):
    _, calls, _ = eks(tmp_path, rollout_fails=False)
    rollouts = [c.split(" --timeout")[0] for c in calls if " rollout status " in c]
    assert rollouts == [
        "kubectl -n orion-prod rollout status deployment/api",
        "kubectl -n orion-prod rollout status deployment/worker",
        "kubectl -n monitoring rollout status deployment/prometheus",
        "kubectl -n monitoring rollout status deployment/alertmanager",
        "kubectl -n monitoring rollout status deployment/grafana",
    ]
    rendered = (tmp_path / "out" / "monitoring.eks.yaml").read_text()
    deployments = {d["metadata"]["name"] for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"}
    assert deployments == {"prometheus", "alertmanager", "grafana"}, "rollout list out of date"


ADDON_FIX = ("aws eks update-addon --cluster-name <cluster> --addon-name vpc-cni "
             "--configuration-values '{\"enableNetworkPolicy\":\"true\"}'")


@pytest.mark.parametrize("case,want", [
    (dict(daemonsets=NETPOL_OFF, configmap=CONTROLLER_OFF),
     "NetworkPolicies would not be enforced: the VPC CNI (aws-node) has network policy off (aws-eks-nodeagent runs "
     "with --enable-network-policy=false, ConfigMap kube-system/amazon-vpc-cni has enable-network-policy-controller: "
     f"\"false\"): {ADDON_FIX}"),
    (dict(daemonsets=NETPOL_ON, configmap=CONTROLLER_OFF),
     "NetworkPolicies would not be enforced: the VPC CNI (aws-node) has network policy off (aws-eks-nodeagent runs "
     "with --enable-network-policy=true, ConfigMap kube-system/amazon-vpc-cni has enable-network-policy-controller: "
     "\"false\")"),
    (dict(daemonsets=NETPOL_ON, configmap=None),
     "NetworkPolicies would not be enforced: the VPC CNI (aws-node) has network policy off (aws-eks-nodeagent runs "
     "with --enable-network-policy=true, ConfigMap kube-system/amazon-vpc-cni does not exist)"),
    (dict(daemonsets=aws_node(None)),
     "NetworkPolicies would not be enforced: the VPC CNI (aws-node) has no network policy agent container "
     "(aws-eks-nodeagent, image …/amazon/aws-network-policy-agent): VPC CNI older than 1.14 or nodeAgent.enabled=false"),
    (dict(daemonsets=EMPTY),
     "NetworkPolicies would not be enforced: no NetworkPolicy enforcer found: no aws-node (VPC CNI) or antrea-agent, "
     "calico-node, cilium, kube-router DaemonSet in kube-system or calico-system, and no EKS Auto Mode node"),
    (dict(storage=NO_DEFAULT_STORAGE),
     "no default StorageClass (classes: gp2): the PersistentVolumeClaim monitoring/prometheus-data (8Gi, "
     "Prometheus's 31 days) would stay Pending; mark one default"),
    (dict(storage=EMPTY), "no default StorageClass (classes: none)"),
    (dict(metrics=None), "v1beta1.metrics.k8s.io is missing"),
    (dict(metrics="False"), "v1beta1.metrics.k8s.io is False"),
    (dict(public=False), f"nodes cannot pull images: {REGISTRY}/orion-api@{DIGEST_A} is not pullable anonymously"),
])
def test_eks_preflight_failure_applies_nothing(tmp_path, case, want):
    res, calls, line = eks(tmp_path, **case)
    assert res.returncode == 1
    assert not any(c.startswith(("kubectl apply", "kubectl -n orion-prod rollout")) for c in calls), calls
    lines = preflight_lines(res)
    assert any(l.startswith(f"deploy-eks: preflight: {want}") for l in lines), res.stderr
    expected = 2 if case.get("public") is False else 1  # both images are private
    assert len(lines) == expected, lines
    assert line.startswith("FAILED preflight on orion-eks (nothing applied): ")


def test_eks_preflight_reports_every_problem_at_once(tmp_path):
    res, calls, _ = eks(tmp_path, daemonsets=NETPOL_OFF, storage=EMPTY, metrics=None, public=False)
    assert res.returncode == 1 and len(preflight_lines(res)) == 5
    assert not any(c.startswith("kubectl apply") for c in calls)


@pytest.mark.parametrize("agent", [
    # what the chart renders (the fixture's default) ...
    dict(agent_args=nodeagent_args("true")),
    # ... a bare boolean flag (pflag: true) and the last occurrence winning, as the agent parses them ...
    dict(agent_args=["--enable-network-policy"]),
    dict(agent_args=["--enable-network-policy=false", "--enable-network-policy=True"]),
    # ... and the same agent image under another container name.
    dict(agent_args=nodeagent_args("true"), agent_name="network-policy-agent"),
])
def test_eks_vpc_cni_with_network_policy_on_passes(tmp_path, agent):
    res, calls, _ = eks(tmp_path, daemonsets=aws_node(**agent))
    assert not preflight_lines(res), res.stderr
    assert "preflight ok" in res.stderr and any(c.startswith("kubectl apply") for c in calls)


def test_eks_calico_from_the_tigera_operator_enforces_policies(tmp_path):
    """Calico's operator runs calico-node in calico-system, not kube-system; beside the VPC CNI
    with its own agent off (policy-only Calico) it is what enforces."""
    res, calls, _ = eks(tmp_path, daemonsets=NETPOL_OFF, configmap=CONTROLLER_OFF,
                        calico_system={**EMPTY, "items": [CALICO_OPERATOR]})
    assert "preflight ok" in res.stderr and any(c.startswith("kubectl apply") for c in calls), res.stderr
    assert ("deploy-eks: NetworkPolicy enforcer: Calico (Tigera operator) (DaemonSet calico-system/calico-node) "
            "enforces NetworkPolicies") in res.stderr.splitlines()


@pytest.mark.parametrize("name", ["calico-node", "cilium", "antrea-agent", "kube-router"])
def test_eks_other_cnis_in_kube_system_enforce_policies(tmp_path, name):
    items = {**EMPTY, "items": [daemonset("kube-system", name, [{"name": name, "image": f"example/{name}:v1"}])]}
    res, calls, _ = eks(tmp_path, daemonsets=items, configmap=None)
    assert "preflight ok" in res.stderr and any(c.startswith("kubectl apply") for c in calls), res.stderr


def test_eks_auto_mode_with_the_network_policy_controller_on_passes(tmp_path):
    """EKS Auto Mode: no aws-node; the ConfigMap switches network policy on (EKS user guide,
    "Use Network Policies with EKS Auto Mode", step 1)."""
    res, calls, _ = eks(tmp_path, daemonsets={**EMPTY, "items": []}, configmap=vpc_cni_configmap("true"), auto_nodes=3)
    assert "preflight ok" in res.stderr and any(c.startswith("kubectl apply") for c in calls), res.stderr
    assert ("deploy-eks: NetworkPolicy enforcer: EKS Auto Mode (3 node(s) labelled eks.amazonaws.com/compute-type=auto, "
            "no aws-node DaemonSet): ConfigMap kube-system/amazon-vpc-cni has enable-network-policy-controller: "
            "\"true\", so its nodes enforce NetworkPolicies") in res.stderr.splitlines()


@pytest.mark.parametrize("configmap", [None, CONTROLLER_OFF])
def test_eks_auto_mode_without_the_controller_says_how_to_switch_it_on(tmp_path, configmap):
    res, calls, line = eks(tmp_path, daemonsets=EMPTY, configmap=configmap, auto_nodes=2)
    assert res.returncode == 1 and not any(c.startswith("kubectl apply") for c in calls)
    state = ("ConfigMap kube-system/amazon-vpc-cni does not exist" if configmap is None
             else "ConfigMap kube-system/amazon-vpc-cni has enable-network-policy-controller: \"false\"")
    assert preflight_lines(res) == [
        "deploy-eks: preflight: NetworkPolicies would not be enforced: EKS Auto Mode (2 node(s) labelled "
        f"eks.amazonaws.com/compute-type=auto, no aws-node DaemonSet) has network policy off ({state}): apply "
        "ConfigMap kube-system/amazon-vpc-cni with enable-network-policy-controller: \"true\" "
        "(https://docs.aws.amazon.com/eks/latest/userguide/auto-net-pol.html); a NodeClass's spec.networkPolicy "
        "only sets the default for pods no policy selects"]
    assert line.startswith("FAILED preflight on orion-eks (nothing applied): ")


def test_eks_pull_secret_must_exist_and_be_on_the_service_account(tmp_path):
    # The stand-in kubectl answers `get secret` (exit 0) and prints nothing for the SA's list.
    res, calls, _ = eks(tmp_path, public=False, extra={"ORION_IMAGE_PULL_SECRET": "ghcr-pull"})
    assert res.returncode == 1
    assert "kubectl -n orion-prod get secret ghcr-pull -o name" in calls
    assert any("ServiceAccount orion-prod/orion does not list imagePullSecrets ghcr-pull" in l for l in preflight_lines(res))
    assert not any(c.startswith("curl") for c in calls), "with a pull secret, no anonymous probe"
    assert not any(c.startswith("kubectl apply") for c in calls)


@pytest.mark.parametrize("password", [None, "admin"], ids=["unset", "default"])
def test_eks_refuses_grafana_without_a_real_admin_password(tmp_path, password):
    """Before the kubeconfig, the preflight or any apply: the renderer's one line, and the
    summary says where it stopped."""
    res, calls, line = eks(tmp_path, extra={"GRAFANA_ADMIN_PASSWORD": password})
    assert res.returncode != 0
    assert calls == [], "nothing asked of AWS or the cluster"
    assert any(l.startswith("render-monitoring: GRAFANA_ADMIN_PASSWORD is ") and "prod" in l
               for l in res.stderr.splitlines()), res.stderr
    assert line == "FAILED during render on orion-eks (eu-west-1)"
    assert not (tmp_path / "out" / "monitoring.eks.yaml").exists()


def test_eks_auto_mode_storage_class_provisions_prometheus(tmp_path):
    """EKS Auto Mode creates no StorageClass; the one its guide shows (provisioner
    ebs.csi.eks.amazonaws.com, marked default) is what the claim needs."""
    auto = {**EMPTY, "items": [storage_class("auto-ebs-sc", "ebs.csi.eks.amazonaws.com", default=True)]}
    res, calls, _ = eks(tmp_path, daemonsets=EMPTY, configmap=CONTROLLER_ON, auto_nodes=1, storage=auto)
    assert "preflight ok" in res.stderr and any(c.startswith("kubectl apply") for c in calls), res.stderr
