#!/usr/bin/env python3
"""CycloneDX 1.6 SBOM of a release image, from the build itself.

  release-sbom.py generate SERVICE --digest sha256:... --out FILE [--dist DIR]
  release-sbom.py validate FILE...

generate: the crates are the ones `cargo auditable` embedded in dist/<arch>/orion-SERVICE
(.dep-v0: exactly what was compiled in, per architecture), less build-only crates (build
scripts and proc macros run on the build host and are not in the binary). Versions come from
there, licenses from `cargo metadata` (offline, the two musl targets), SHA-256 of each crates.io
archive from Cargo.lock. No clock, no path: the timestamp is SOURCE_DATE_EPOCH and the serial
number is derived from the image digest, so the same commit gives the same file.

validate: the CycloneDX project's own Python library checks the file against the official
CycloneDX 1.6 JSON schema it ships (cyclonedx-python-lib, pinned in tools/requirements.txt).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import struct
import subprocess
import sys
import tomllib
import uuid
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHES = {"amd64": "x86_64-unknown-linux-musl", "arm64": "aarch64-unknown-linux-musl"}
# Crates whose Cargo.toml has no `license` field, only a license file: identified by reading
# that file (pinned by its sha256, so a changed file fails instead of being mislabelled).
LICENSE_FROM_FILE = {
    ("saffron", "0.1.0"): ("BSD-3-Clause", "8cb4ca05e2f9c0e1765e06b8fdb199cbd19d8afde523fa9f2985683c52a84373"),
}


def die(msg: str) -> None:
    print(f"release-sbom: {msg}", file=sys.stderr)
    sys.exit(1)


def dep_v0(path: Path) -> dict:
    """The .dep-v0 section of a 64-bit little-endian ELF (zlib-compressed JSON)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        die(f"{path} is not a 64-bit ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab = data[headers[shstrndx][4]:headers[shstrndx][4] + headers[shstrndx][5]]
    for name_off, _t, _f, _a, off, size in headers:
        if strtab[name_off:strtab.index(b"\0", name_off)] == b".dep-v0":
            return json.loads(zlib.decompress(data[off:off + size]))
    die(f"{path} has no .dep-v0 section (not built with `cargo auditable`)")


def spdx_expression(license_: str) -> str:
    # Old Cargo syntax "MIT/Apache-2.0" means "MIT OR Apache-2.0".
    return " OR ".join(part.strip() for part in license_.split("/")) if "/" in license_ else license_


def generate(service: str, digest: str, dist: Path) -> dict:
    if not digest.startswith("sha256:") or len(digest) != 71:
        die(f"--digest {digest!r} is not sha256:<64 hex>")
    sde = os.environ.get("SOURCE_DATE_EPOCH") or subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%ct", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())
    version = workspace["workspace"]["package"]["version"]
    lock = tomllib.loads((ROOT / "Cargo.lock").read_text())
    checksums = {(p["name"], p["version"]): p["checksum"] for p in lock["package"] if "checksum" in p}
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked", "--offline",
         *[a for t in ARCHES.values() for a in ("--filter-platform", t)]],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    licenses = {}
    for p in meta["packages"]:
        lic = p.get("license")
        if not lic and p.get("license_file"):
            known = LICENSE_FROM_FILE.get((p["name"], p["version"]))
            text = (Path(p["manifest_path"]).parent / p["license_file"]).read_bytes()
            if known is None or hashlib.sha256(text).hexdigest() != known[1]:
                die(f"{p['name']} {p['version']}: no license field and an unreviewed license file; "
                    f"read it and add it to LICENSE_FROM_FILE")
            lic = known[0]
        licenses[(p["name"], p["version"])] = lic

    components: dict[tuple[str, str], dict] = {}
    edges: dict[str, set[str]] = {}
    root_ref = None
    for arch in ARCHES:
        deps = dep_v0(dist / arch / f"orion-{service}")["packages"]
        runtime = [i for i, p in enumerate(deps) if p.get("kind", "runtime") == "runtime"]
        for i in runtime:
            p = deps[i]
            key = (p["name"], p["version"])
            ref = f"pkg:cargo/{p['name']}@{p['version']}"
            if p.get("root"):
                root_ref = ref
            c = components.get(key)
            if c is None:
                lic = licenses.get(key)
                if not lic:
                    die(f"{p['name']} {p['version']}: no license in cargo metadata")
                c = {"type": "application" if p.get("root") else "library", "bom-ref": ref,
                     "name": p["name"], "version": p["version"],
                     "licenses": [{"expression": spdx_expression(lic)}]}
                if p.get("source") == "crates.io":
                    c["purl"] = ref
                    if key not in checksums:
                        die(f"{p['name']} {p['version']}: no checksum in Cargo.lock")
                    c["hashes"] = [{"alg": "SHA-256", "content": checksums[key]}]
                c["properties"] = []
                components[key] = c
            c["properties"].append({"name": "orion:platform", "value": f"linux/{arch}"})
            edges.setdefault(ref, set()).update(
                f"pkg:cargo/{deps[j]['name']}@{deps[j]['version']}"
                for j in p.get("dependencies", []) if deps[j].get("kind", "runtime") == "runtime")
    if root_ref != f"pkg:cargo/orion-{service}@{version}":
        die(f"the binaries' root crate is {root_ref}, expected orion-{service} {version}")

    image_ref = f"pkg:oci/orion-{service}@{digest.replace(':', '%3A')}"
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, image_ref)}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.datetime.fromtimestamp(int(sde), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "release-sbom.py",
                                      "description": "Orion scripts/release-sbom.py (cargo auditable data)"}]},
            "component": {"type": "container", "bom-ref": image_ref, "name": f"orion-{service}",
                          "version": version, "purl": image_ref},
        },
        "components": sorted(components.values(), key=lambda c: (c["name"], c["version"])),
        "dependencies": [{"ref": image_ref, "dependsOn": [root_ref]}] + [
            {"ref": ref, "dependsOn": sorted(to)} for ref, to in sorted(edges.items())],
    }


def validate(path: Path) -> None:
    try:
        from cyclonedx.schema import SchemaVersion
        from cyclonedx.validation.json import JsonStrictValidator
    except ImportError:
        die("cyclonedx-python-lib is not installed (make tools)")
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(path.read_text())
    if errors is not None:
        die(f"{path}: not valid CycloneDX 1.6: {errors}")
    print(f"release-sbom: {path}: valid CycloneDX 1.6 ({len(json.loads(path.read_text())['components'])} components)")


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("service", choices=["api", "worker"])
    g.add_argument("--digest", required=True)
    g.add_argument("--out", required=True, type=Path)
    g.add_argument("--dist", type=Path, default=ROOT / "dist")
    v = sub.add_parser("validate")
    v.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args()
    if args.cmd == "generate":
        bom = generate(args.service, args.digest, args.dist)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(bom, indent=2) + "\n")
        print(f"release-sbom: {args.out} ({len(bom['components'])} crates)")
    else:
        for f in args.files:
            validate(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
