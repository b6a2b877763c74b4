"""Shared helpers for the CI/CD tests (tests/ci)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
FIXTURE_K8S = Path(__file__).resolve().parent / "fixtures" / "k8s"
VENV_BIN = ROOT / ".venv" / "bin"

# The contract every test below checks against: branch -> environment -> tag -> namespace.
MAPPING = {
    "dev": {"env": "dev", "tag": "dev", "namespace": "orion-dev"},
    "uat": {"env": "uat", "tag": "uat", "namespace": "orion-uat"},
    "main": {"env": "prod", "tag": "latest", "namespace": "orion-prod"},
}
REGISTRY = "ghcr.io/orionlynn19"
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
SHA = "0123456789abcdef0123456789abcdef01234567"


def load_yaml(path: Path):
    # PyYAML reads the key `on` as True (YAML 1.1); workflows use it as a string.
    doc = yaml.safe_load(path.read_text())
    if isinstance(doc, dict) and True in doc:
        doc["on"] = doc.pop(True)
    return doc


def tool_env(**extra) -> dict:
    """Environment for running the scripts: the pinned tools first, no GitHub variables
    leaking in from a real CI run (each test sets the ones it means)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "ORION_", "AWS_", "EKS_"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHON"] = sys.executable
    env.update(extra)
    return env


def run(cmd, *, env=None, cwd=ROOT, check=False, timeout=120):
    res = subprocess.run(cmd, cwd=cwd, env=env or tool_env(), capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def kv(text: str) -> dict:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@pytest.fixture(scope="session")
def ci():
    return load_yaml(WORKFLOWS / "ci.yml")


@pytest.fixture(scope="session")
def rerun():
    return load_yaml(WORKFLOWS / "rerun.yml")


@pytest.fixture(scope="session")
def kubectl():
    path = shutil.which("kubectl", path=str(VENV_BIN))
    if path is None:
        pytest.fail("kubectl from tools/requirements.txt is missing: run `make tools`")
    return path


@pytest.fixture()
def fixture_k8s(tmp_path):
    """A private copy of the fixture tree that a test may break."""
    dest = tmp_path / "k8s"
    shutil.copytree(FIXTURE_K8S, dest)
    return dest
