#!/usr/bin/env python3
"""deploy-kubectl.py: a kubectl within one minor of the cluster the current context talks to.

  deploy-kubectl.py ensure [--kubectl K] [--versions F] [--cache DIR]   -> path of the kubectl to use
  deploy-kubectl.py choose --client-minor N --server-minor M [--versions F]   (the decision alone)

kubectl is supported within one minor version, older or newer, of kube-apiserver
(kubernetes.io/releases/version-skew-policy). `ensure` runs `K version -o json` (K: .venv's
kubectl), reads clientVersion and serverVersion from it, and prints K when the two minors are at
most one apart; otherwise it prints the kubectl of the server's minor from tools/kubectl-versions.yaml,
downloaded once into DIR and checked against the pinned sha512 first. No pin for that minor:
exit 1 with one line naming the versions. Decisions are plain functions (`choose`), the shell
(running kubectl, the download) is at the edge.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = ROOT / "tools" / "kubectl-versions.yaml"
# Inside a kubernetes-client-<os>-<arch>.tar.gz (kubernetes/kubernetes build/release-tars).
MEMBER = "kubernetes/client/bin/kubectl"


class NoKubectl(Exception):
    """No kubectl within one minor of the server can be had."""


def minor_of(info: dict) -> tuple[int, int]:
    """(major, minor) of a version.Info (k8s.io/apimachinery/pkg/version, as `kubectl version -o
    json` prints it). Managed clusters suffix the minor: EKS answers minor "33+" with
    gitVersion "v1.33.5-eks-…"; the digits are what counts."""
    try:
        return int(re.match(r"\d+", info["major"]).group()), int(re.match(r"\d+", info["minor"]).group())
    except (KeyError, TypeError, AttributeError):
        m = re.match(r"v(\d+)\.(\d+)", str((info or {}).get("gitVersion", "")))
        if not m:
            raise NoKubectl(f"cannot read a Kubernetes version from {info!r}") from None
        return int(m.group(1)), int(m.group(2))


def choose(client: tuple[int, int], server: tuple[int, int], pins: dict) -> str | None:
    """None: the client will do. Else the pinned minor ("1.34") to use. NoKubectl otherwise."""
    if client[0] == server[0] and abs(client[1] - server[1]) <= 1:
        return None
    key = f"{server[0]}.{server[1]}"
    if key in pins:
        return key
    raise NoKubectl(f"the server is v{key}, this kubectl v{client[0]}.{client[1]}: more than one minor apart, and "
                    f"{VERSIONS.relative_to(ROOT)} pins no kubectl for {key} (pinned: {', '.join(sorted(pins)) or 'none'})")


def host_platform() -> str:
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
    return f"{platform.system().lower()}/{arch}"


def fetch(pin: dict, key: str, plat: str, cache: Path) -> Path:
    """The pinned kubectl of `key` for `plat`, from the cache or downloaded and verified."""
    entry = pin.get(plat)
    if not entry:
        raise NoKubectl(f"kubectl {pin['version']} is pinned for {', '.join(k for k in pin if '/' in k)}, not {plat}")
    dest = cache / pin["version"] / plat.replace("/", "-") / "kubectl"
    stamp = dest.with_name("kubectl.sha512-of-tarball")
    if dest.is_file() and stamp.is_file() and stamp.read_text().strip() == entry["sha512"]:
        return dest
    with urllib.request.urlopen(entry["url"], timeout=120) as r:  # noqa: S310 (https or a test's file://)
        data = r.read()
    got = hashlib.sha512(data).hexdigest()
    if got != entry["sha512"]:
        raise NoKubectl(f"{entry['url']}: sha512 {got[:16]}…, pinned {entry['sha512'][:16]}… (refusing it)")
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        try:
            binary = tf.extractfile(MEMBER).read()
        except (KeyError, AttributeError):
            raise NoKubectl(f"{entry['url']} has no {MEMBER}") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as f:
        f.write(binary)
    os.chmod(f.name, 0o755)
    os.replace(f.name, dest)
    stamp.write_text(entry["sha512"] + "\n")
    return dest


def versions_of(kubectl: str) -> tuple[tuple[int, int], tuple[int, int]]:
    r = subprocess.run([kubectl, "version", "-o", "json", "--request-timeout=30s"], capture_output=True, text=True,
                       timeout=60)
    try:
        doc = json.loads(r.stdout or "{}")
    except json.JSONDecodeError:
        doc = {}
    if "serverVersion" not in doc:
        why = (r.stderr.strip().splitlines() or ["no serverVersion in its answer"])[-1]
        raise NoKubectl(f"cannot read the cluster's version with `{kubectl} version -o json`: {why}")
    return minor_of(doc.get("clientVersion") or {}), minor_of(doc["serverVersion"])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("ensure")
    e.add_argument("--kubectl", default=os.environ.get("KUBECTL", "kubectl"))
    e.add_argument("--versions", type=Path, default=VERSIONS)
    e.add_argument("--cache", type=Path, default=ROOT / ".tmp" / "kubectl")
    e.add_argument("--platform", default=host_platform())
    c = sub.add_parser("choose")
    c.add_argument("--client-minor", required=True)
    c.add_argument("--server-minor", required=True)
    c.add_argument("--versions", type=Path, default=VERSIONS)
    args = ap.parse_args(argv)
    pins = yaml.safe_load(args.versions.read_text())["kubectl"]
    try:
        if args.cmd == "choose":
            split = lambda v: tuple(int(x) for x in v.split(".")[:2])  # noqa: E731
            key = choose(split(args.client_minor), split(args.server_minor), pins)
            print("client" if key is None else f"{key} {pins[key]['version']}")
            return 0
        client, server = versions_of(args.kubectl)
        key = choose(client, server, pins)
        if key is None:
            print(args.kubectl)
            return 0
        path = fetch(pins[key], key, args.platform, args.cache)
        print(f"deploy-kubectl: the server is v{server[0]}.{server[1]}, this kubectl v{client[0]}.{client[1]}: "
              f"using kubectl {pins[key]['version']} ({path})", file=sys.stderr)
        print(path)
        return 0
    except (NoKubectl, OSError) as err:
        print(f"deploy-kubectl: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
