"""Shared fixtures for the Kubernetes tests.

The manifests are rendered exactly the way users deploy them (`make k8s-render`:
`kubectl kustomize k8s/overlays/<env>` and k8s/render-monitoring.sh), by the pinned
kubectl in .venv. `make test-k8s` renders first and passes K8S_RENDER_DIR; running
pytest on its own renders through the same make target.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
# The one reader of the repository's Markdown (section markers, anchors), shared by the suites.
sys.path.insert(0, str(REPO / "tests" / "docs"))
import doctext  # noqa: E402

OVERLAYS = ("dev", "uat", "prod", "kind")
ENVIRONMENTS_FILE = REPO / "k8s" / "environments.yaml"


def _render_dir() -> Path:
    given = os.environ.get("K8S_RENDER_DIR")
    if given:
        return Path(given)
    subprocess.run(["make", "-s", "--no-print-directory", "k8s-render"], cwd=REPO, check=True)
    return REPO / ".tmp" / "k8s"


@pytest.fixture(scope="session")
def render_dir() -> Path:
    return _render_dir()


def load_docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


class Renders:
    """name -> the objects of .tmp/k8s/<name>.yaml, loaded on first use."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.cache: dict[str, list[dict]] = {}

    def __getitem__(self, name: str) -> list[dict]:
        if name not in self.cache:
            path = self.directory / f"{name}.yaml"
            assert path.is_file(), f"{path} missing: run `make k8s-render`"
            docs = load_docs(path.read_text())
            assert docs, f"{path} rendered no objects"
            self.cache[name] = docs
        return self.cache[name]


@pytest.fixture(scope="session")
def renders(render_dir) -> Renders:
    return Renders(render_dir)


@pytest.fixture(scope="session")
def environments() -> dict[str, dict]:
    """The per-environment table (k8s/environments.yaml), the one data source."""
    return yaml.safe_load(ENVIRONMENTS_FILE.read_text())["environments"]


def kubectl() -> str:
    venv = REPO / ".venv" / "bin" / "kubectl"
    path = str(venv) if venv.exists() else shutil.which("kubectl")
    assert path, "kubectl not found: run `make tools`"
    return path


def kustomize(path: Path, *flags: str) -> list[dict]:
    res = subprocess.run([kubectl(), "kustomize", *flags, str(path)], capture_output=True, text=True)
    assert res.returncode == 0, f"kubectl kustomize {path} failed:\n{res.stderr}"
    return load_docs(res.stdout)


# ---- helpers over rendered objects -------------------------------------------------

def objs(docs, kind, name=None):
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs, kind, name):
    found = objs(docs, kind, name)
    assert len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def effective_env(docs: list[dict], container: dict) -> dict[str, str]:
    """What the container's process really sees: envFrom ConfigMaps, then env (which wins)."""
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        ref = src.get("configMapRef")
        assert ref, f"only configMapRef envFrom expected, got {src}"
        cms = objs(docs, "ConfigMap", ref["name"])
        assert len(cms) == 1, f"envFrom references ConfigMap {ref['name']!r} that the render does not contain"
        env.update(cms[0].get("data", {}))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    return env


def container_ports(container: dict) -> dict:
    """name -> number, and number -> number, for resolving probe/targetPort references."""
    ports = {}
    for p in container.get("ports", []):
        ports[p["containerPort"]] = p["containerPort"]
        if "name" in p:
            ports[p["name"]] = p["containerPort"]
    return ports


_DURATION = re.compile(r"^(\d+)(ms|s|m|h)?$")


def duration_seconds(value: str) -> float:
    """The services' duration syntax: 500ms, 10s, 2m, or bare seconds."""
    m = _DURATION.match(value.strip())
    assert m, f"not a duration: {value!r}"
    n, unit = int(m.group(1)), m.group(2) or "s"
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def selector_matches(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, f"only matchLabels selectors expected: {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def doc_section(name: str) -> str:
    """The `<!-- section:NAME -->` block of the docs (README.md or docs/), wherever a page keeps it."""
    return doctext.section_text(name)
