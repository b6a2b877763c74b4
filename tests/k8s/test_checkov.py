"""checkov's Kubernetes policies over every render (dev, uat, prod, kind, monitoring), in one run.

0 failed checks. Each deliberate exception is a `checkov.io/skipN: CKV_K8S_xx=<reason>`
annotation on the resource it concerns (k8s/base, k8s/monitoring), so the reason ships with
the manifest and is printed by checkov; a skip without a reason fails here. checkov runs
from its own venv (.venv/checkov, tools/checkov-requirements.txt; `make test-k8s` installs
it) with --skip-download, so it works offline.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import OVERLAYS, REPO

RENDERS = (*OVERLAYS, "monitoring")
SKIP_KEY = re.compile(r"^checkov\.io/skip\d+$")
SKIP_VALUE = re.compile(r"^(CKV2?_K8S_\d+)=(.+)$")


def checkov_bin() -> str:
    path = os.environ.get("CHECKOV") or str(REPO / ".venv" / "checkov" / "bin" / "checkov")
    if not Path(path).exists():
        pytest.fail(f"checkov not found at {path}: run `make checkov-tool` (tools/checkov-requirements.txt)")
    return path


def run_checkov(files: list[Path], *extra: str) -> list[dict]:
    args = [checkov_bin(), "--framework", "kubernetes", "--skip-download", "--compact", "-o", "json", *extra]
    for f in files:
        args += ["-f", str(f)]
    res = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert res.returncode in (0, 1), f"checkov crashed ({res.returncode}):\n{res.stderr[-2000:]}"
    out = json.loads(res.stdout)
    return out if isinstance(out, list) else [out]


@pytest.fixture(scope="module")
def report(render_dir):
    files = [render_dir / f"{name}.yaml" for name in RENDERS]
    for f in files:
        assert f.is_file(), f"{f} missing: run `make k8s-render`"
    (k8s,) = [r for r in run_checkov(files) if r.get("check_type") == "kubernetes"]
    return k8s


def test_no_failed_checks_and_no_parsing_errors(report):
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
              for c in report["results"]["failed_checks"]]
    assert not failed, "checkov failures (fix, or annotate checkov.io/skipN with a reason):\n" + "\n".join(failed)
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 500, report["summary"]


def test_every_render_was_scanned(report):
    scanned = {Path(c["file_path"]).stem for c in report["results"]["passed_checks"]}
    assert scanned >= set(RENDERS), scanned


def test_every_skip_names_its_reason(report):
    skipped = report["results"]["skipped_checks"]
    assert skipped, "the deliberate exceptions are expected to show up as skips"
    for c in skipped:
        reason = (c.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason.split()) >= 3, f"{c['check_id']} on {c['resource']}: skip without a reason ({reason!r})"


def _skip_annotations():
    for path in sorted((REPO / "k8s").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict):
                for key, value in ((doc.get("metadata") or {}).get("annotations") or {}).items():
                    if key.startswith("checkov.io/"):
                        yield path, doc["metadata"]["name"], key, value


def test_skip_annotations_in_the_sources_are_well_formed():
    found = list(_skip_annotations())
    assert found
    for path, name, key, value in found:
        where = f"{path.relative_to(REPO)} {name} {key}"
        assert SKIP_KEY.match(key), where
        m = SKIP_VALUE.match(str(value))
        assert m, f"{where}: want CKV_K8S_xx=<reason>, got {value!r}"
        assert len(m.group(2).split()) >= 3, f"{where}: the reason is a few words, got {m.group(2)!r}"


def test_without_its_annotation_the_check_fails(render_dir, tmp_path):
    """Guards the guard: remove the api's skips and checkov reports its missing CPU limit."""
    docs = list(yaml.safe_load_all((render_dir / "dev.yaml").read_text()))
    for d in docs:
        if d and d["kind"] == "Deployment" and d["metadata"]["name"] == "api":
            d["metadata"].pop("annotations")
    bare = tmp_path / "dev-unannotated.yaml"
    bare.write_text(yaml.safe_dump_all(docs))
    (k8s,) = [r for r in run_checkov([bare], "--check", "CKV_K8S_11") if r.get("check_type") == "kubernetes"]
    failed = {(c["check_id"], c["resource"]) for c in k8s["results"]["failed_checks"]}
    assert ("CKV_K8S_11", "Deployment.orion-dev.api") in failed, failed
