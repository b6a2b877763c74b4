#!/usr/bin/env python3
"""SLSA v1 build provenance predicate for a release image, from the GitHub Actions run.

  release-provenance.py SERVICE DIGEST > provenance.json

cosign attests it (`--type slsaprovenance1`) to the pushed index by digest, signed keylessly
with the workflow's identity, so what it says (commit, workflow, run, build tools) is bound
to that run. The statement's subject is the digest cosign attaches it to. Reads the standard
GITHUB_* variables; a missing one is an error (one line, exit 2).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEEDED = ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_SHA", "GITHUB_REF", "GITHUB_WORKFLOW_REF",
          "GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "GITHUB_EVENT_NAME")


def container_pins() -> dict:
    """The base image and buildah/skopeo packages scripts/release-container.sh pins."""
    text = (ROOT / "scripts" / "release-container.sh").read_text()
    pins = {}
    for key, pattern in (("base_image", r'RELEASE_BASE_IMAGE:-([^}]+)\}'), ("buildah", r'buildah_pkg="buildah=([^"]+)"'),
                         ("skopeo", r'skopeo_pkg="skopeo=([^"]+)"')):
        m = re.search(pattern, text)
        pins[key] = m.group(1) if m else None
    return pins


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in ("api", "worker") or not re.fullmatch(r"sha256:[0-9a-f]{64}", sys.argv[2]):
        print("usage: release-provenance.py api|worker sha256:<64 hex>", file=sys.stderr)
        return 2
    service, digest = sys.argv[1:]
    env = {}
    for name in NEEDED:
        if not os.environ.get(name):
            print(f"release-provenance: {name} is not set (run inside GitHub Actions)", file=sys.stderr)
            return 2
        env[name] = os.environ[name]
    repo_url = f"{env['GITHUB_SERVER_URL']}/{env['GITHUB_REPOSITORY']}"
    sbom = ROOT / "dist" / "sbom" / f"orion-{service}.cdx.json"
    byproducts = []
    if sbom.is_file():
        byproducts.append({"name": f"orion-{service}.cdx.json",
                           "digest": {"sha256": hashlib.sha256(sbom.read_bytes()).hexdigest()}})
    predicate = {
        "buildDefinition": {
            "buildType": f"{repo_url}/blob/{env['GITHUB_SHA']}/scripts/release-images.sh",
            "externalParameters": {
                "workflow": {"ref": env["GITHUB_REF"], "repository": repo_url,
                             "path": env["GITHUB_WORKFLOW_REF"].split("@", 1)[0].split("/", 2)[-1]},
                "service": service,
                "image_index": digest,
            },
            "internalParameters": {
                "github": {"event_name": env["GITHUB_EVENT_NAME"]},
                "release_container": container_pins(),
            },
            "resolvedDependencies": [
                {"uri": f"git+{repo_url}@{env['GITHUB_REF']}", "digest": {"gitCommit": env["GITHUB_SHA"]}},
            ],
        },
        "runDetails": {
            "builder": {"id": f"{env['GITHUB_SERVER_URL']}/{env['GITHUB_WORKFLOW_REF']}"},
            "metadata": {"invocationId": f"{repo_url}/actions/runs/{env['GITHUB_RUN_ID']}/attempts/{env['GITHUB_RUN_ATTEMPT']}"},
            "byproducts": byproducts,
        },
    }
    json.dump(predicate, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
