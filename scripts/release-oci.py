#!/usr/bin/env python3
"""Release image layouts: assemble, inspect, compare. Standard library only.

  release-oci.py assemble --out DIR --ref NAME LAYOUT:REF:PLATFORM...
      One image index from per-platform images that `buildah push --format docker`
      wrote to OCI layouts. Writes DIR as an OCI image layout whose index.json points
      at an OCI image index (of Docker-format manifests) with the platforms in the order given (never in the
      order the builds finished), and prints the list's digest.
  release-oci.py digest DIR [--ref NAME]
      The digest of the image index DIR's index.json names.
  release-oci.py label DIR KEY [--ref NAME]
      A label of the first platform's image config (all platforms carry the same).
  release-oci.py compare A B [--ref NAME]
      Exit 0 when both layouts hold the same index digest; otherwise exit 1 naming the
      first blob that differs (manifest list, a platform's manifest, config or layer),
      with the differing config keys or layer members when it can tell.
  release-oci.py layer-elf DIR [--ref NAME]
      platform, path and ELF e_machine of every regular file in every platform's layer.

Why the per-platform configs are rewritten: buildah 1.28 writes, into a Docker-format
config (the format that keeps HEALTHCHECK), the id of its temporary build container
("container") and that container's random hostname ("Hostname", twice). Both are random
per build and mean nothing for an image (docker ignores them at run time). assemble blanks
exactly those three values, bytes elsewhere untouched, and recomputes the config digest.
Everything else is buildah's output as it wrote it.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import re
import struct
import sys
import tarfile
from pathlib import Path

# The index is OCI (skopeo's oci: transport, and so `skopeo copy`, only finds OCI types in
# index.json); the per-platform manifests and configs are Docker's, which keep HEALTHCHECK.
LIST_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
ELF_MACHINE = {"amd64": 62, "arm64": 183}
RANDOM_FIELDS = (
    (re.compile(rb'"container":"[0-9a-f]{64}"'), b'"container":""'),
    (re.compile(rb'"Hostname":"[0-9a-f]{12}"'), b'"Hostname":""'),
)


def die(msg: str, code: int = 1) -> None:
    print(f"release-oci: {msg}", file=sys.stderr)
    sys.exit(code)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class Layout:
    def __init__(self, path: Path):
        self.path = Path(path)
        if not (self.path / "oci-layout").is_file():
            die(f"{self.path} is not an OCI image layout (no oci-layout file)")

    def blob(self, digest: str) -> bytes:
        algo, _, hexd = digest.partition(":")
        p = self.path / "blobs" / algo / hexd
        if not p.is_file():
            die(f"{self.path}: blob {digest} is missing")
        data = p.read_bytes()
        if sha256(data) != digest:
            die(f"{self.path}: blob {digest} does not match its digest (corrupt or edited)")
        return data

    def top(self, ref: str | None) -> dict:
        index = json.loads((self.path / "index.json").read_text())
        descs = index.get("manifests", [])
        if ref is not None:
            descs = [d for d in descs if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref]
        if len(descs) != 1:
            die(f"{self.path}: expected one image named {ref!r} in index.json, found {len(descs)}")
        return descs[0]

    def platforms(self, ref: str | None):
        """(top descriptor, manifest list, [(platform, manifest descriptor, manifest, config bytes)])."""
        top = self.top(ref)
        lst = json.loads(self.blob(top["digest"]))
        if lst.get("mediaType") != LIST_TYPE:
            die(f"{self.path}: {top['digest']} is {lst.get('mediaType')}, not an image index")
        out = []
        for d in lst["manifests"]:
            man = json.loads(self.blob(d["digest"]))
            cfg = self.blob(man["config"]["digest"])
            plat = d["platform"]["os"] + "/" + d["platform"]["architecture"]
            out.append((plat, d, man, cfg))
        return top, lst, out


def assemble(out: Path, ref: str, sources: list[str]) -> str:
    out.mkdir(parents=True, exist_ok=True)
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        d = sha256(data)
        p = blobs / d.split(":", 1)[1]
        if not p.exists():
            p.write_bytes(data)
            p.chmod(0o644)
        return d

    entries = []
    for spec in sources:
        src, _, rest = spec.partition(":")
        src_ref, _, platform = rest.partition(":")
        os_, _, arch = platform.partition("/")
        if not (src and src_ref and os_ and arch):
            die(f"source {spec!r} is not LAYOUT:REF:OS/ARCH", 2)
        lay = Layout(Path(src))
        desc = lay.top(src_ref)
        man_bytes = lay.blob(desc["digest"])
        man = json.loads(man_bytes)
        if man.get("mediaType") != MANIFEST_TYPE:
            die(f"{src}: {desc['digest']} is {man.get('mediaType')}, not a Docker image manifest (buildah --format docker)")
        cfg_bytes = lay.blob(man["config"]["digest"])
        for pattern, blank in RANDOM_FIELDS:
            cfg_bytes = pattern.sub(blank, cfg_bytes)
        cfg = json.loads(cfg_bytes)
        if (cfg.get("os"), cfg.get("architecture")) != (os_, arch):
            die(f"{src}: config says {cfg.get('os')}/{cfg.get('architecture')}, expected {platform}")
        for layer in man["layers"]:
            data = lay.blob(layer["digest"])
            for path, machine in elf_machines(data):
                if machine != ELF_MACHINE.get(arch):
                    die(f"{src}: {path} in layer {layer['digest']} is ELF machine {machine}, "
                        f"expected {ELF_MACHINE.get(arch)} for {arch}")
            put(data)
        man["config"]["digest"] = put(cfg_bytes)
        man["config"]["size"] = len(cfg_bytes)
        new_man = dumps(man)
        plat = {"architecture": arch, "os": os_}
        if cfg.get("variant"):
            plat["variant"] = cfg["variant"]
        entries.append({"mediaType": MANIFEST_TYPE, "size": len(new_man), "digest": put(new_man), "platform": plat})

    lst = dumps({"schemaVersion": 2, "mediaType": LIST_TYPE, "manifests": entries})
    digest = put(lst)
    index = {"schemaVersion": 2, "mediaType": LIST_TYPE, "manifests": [
        {"mediaType": LIST_TYPE, "digest": digest, "size": len(lst),
         "annotations": {"org.opencontainers.image.ref.name": ref}}]}
    (out / "index.json").write_bytes(dumps(index))
    (out / "oci-layout").write_bytes(dumps({"imageLayoutVersion": "1.0.0"}))
    # Only what the index reaches stays (a rebuild into the same directory leaves no strays).
    keep = {digest.split(":", 1)[1]} | {e["digest"].split(":", 1)[1] for e in entries}
    for e in entries:
        man = json.loads((blobs / e["digest"].split(":", 1)[1]).read_bytes())
        keep |= {man["config"]["digest"].split(":", 1)[1]} | {l["digest"].split(":", 1)[1] for l in man["layers"]}
    for p in blobs.iterdir():
        if p.name not in keep:
            p.unlink()
    return digest


def layer_members(data: bytes) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    out = []
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        for m in tf.getmembers():
            out.append((m, tf.extractfile(m).read() if m.isfile() else None))
    return out


def elf_machines(layer: bytes) -> list[tuple[str, int | None]]:
    res = []
    for m, content in layer_members(layer):
        if content is None:
            continue
        machine = struct.unpack_from("<H", content, 18)[0] if content[:4] == b"\x7fELF" else None
        res.append((m.name, machine))
    return res


def compare(a: Layout, b: Layout, ref: str | None) -> int:
    ta, la, pa = a.platforms(ref)
    tb, lb, pb = b.platforms(ref)
    if ta["digest"] == tb["digest"]:
        print(f"identical: {ta['digest']}")
        return 0
    print(f"index differs: {ta['digest']} ({a.path}) vs {tb['digest']} ({b.path})")
    plats_a, plats_b = [p[0] for p in pa], [p[0] for p in pb]
    if plats_a != plats_b:
        print(f"  first difference: platforms {plats_a} vs {plats_b}")
        return 1
    for (plat, da, ma, ca), (_, db, mb, cb) in zip(pa, pb):
        if da["digest"] == db["digest"]:
            continue
        # Layers first: a different binary also changes the config (diff_ids, COPY's hash).
        for la_, lb_ in zip(ma["layers"], mb["layers"]):
            if la_["digest"] != lb_["digest"]:
                print(f"  first difference: {plat} layer blob {la_['digest']} vs {lb_['digest']}")
                ma_ = {m.name: (m, c) for m, c in layer_members(a.blob(la_["digest"]))}
                mb_ = {m.name: (m, c) for m, c in layer_members(b.blob(lb_["digest"]))}
                for name in sorted(set(ma_) | set(mb_)):
                    xa, xb = ma_.get(name), mb_.get(name)
                    if xa is None or xb is None:
                        print(f"    {name}: only in {'A' if xb is None else 'B'}")
                        continue
                    (ia, ca_), (ib, cb_) = xa, xb
                    for attr in ("mode", "uid", "gid", "mtime", "type", "size"):
                        if getattr(ia, attr) != getattr(ib, attr):
                            print(f"    {name}: {attr} {getattr(ia, attr)!r} vs {getattr(ib, attr)!r}")
                    if ca_ != cb_:
                        print(f"    {name}: content sha256 {sha256(ca_ or b'')} vs {sha256(cb_ or b'')}")
                return 1
        if ca != cb:
            print(f"  first difference: {plat} config blob {ma['config']['digest']} vs {mb['config']['digest']}")
            ja, jb = json.loads(ca), json.loads(cb)
            for key in sorted(set(flatten(ja)) | set(flatten(jb))):
                va, vb = flatten(ja).get(key), flatten(jb).get(key)
                if va != vb:
                    print(f"    {key}: {va!r} vs {vb!r}")
            return 1
        print(f"  first difference: {plat} manifest {da['digest']} vs {db['digest']}")
        return 1
    print("  first difference: the manifest list itself (same platform manifests)")
    return 1


def flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else k))
        return out
    if isinstance(obj, list) and obj:
        out = {}
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: json.dumps(obj, sort_keys=True)}


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("assemble")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--ref", required=True)
    p.add_argument("sources", nargs="+")
    for name in ("digest", "layer-elf"):
        p = sub.add_parser(name)
        p.add_argument("layout", type=Path)
        p.add_argument("--ref")
    p = sub.add_parser("label")
    p.add_argument("layout", type=Path)
    p.add_argument("key")
    p.add_argument("--ref")
    p = sub.add_parser("compare")
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--ref")
    args = ap.parse_args()

    if args.cmd == "assemble":
        print(assemble(args.out, args.ref, args.sources))
    elif args.cmd == "digest":
        print(Layout(args.layout).top(args.ref)["digest"])
    elif args.cmd == "label":
        _, _, plats = Layout(args.layout).platforms(args.ref)
        labels = {json.dumps(json.loads(c)["config"].get("Labels", {}), sort_keys=True) for _, _, _, c in plats}
        if len(labels) != 1:
            die(f"{args.layout}: the platforms carry different labels")
        value = json.loads(labels.pop()).get(args.key)
        if value is None:
            die(f"{args.layout}: no label {args.key}")
        print(value)
    elif args.cmd == "layer-elf":
        lay = Layout(args.layout)
        _, _, plats = lay.platforms(args.ref)
        for plat, _, man, _ in plats:
            for layer in man["layers"]:
                for path, machine in elf_machines(lay.blob(layer["digest"])):
                    print(f"{plat} {path} {machine}")
    elif args.cmd == "compare":
        return compare(Layout(args.a), Layout(args.b), args.ref)
    return 0


if __name__ == "__main__":
    sys.exit(main())
