#!/usr/bin/env python3
"""The local images of `make images` / `make up`: a docker-archive that `docker load` reads.

  local-image.py --arch ARCH --created EPOCH --out FILE \\
      --image SERVICE:PORT=TAG [--image ...] [--build-arg KEY=VALUE ...] [--dockerfile Dockerfile.scratch]

(PORT is the image's EXPOSE_PORT build arg: 8000 for api, 9091 for worker.)

Writes one tar in Docker's `docker save` format (manifest.json, one config JSON and one
layer tar per image). The engine gets it through the docker CLI (`docker load`), which
negotiates the API version itself; nothing here talks to the engine, and nothing needs
BuildKit, buildx, the legacy builder, skopeo or buildah. `docker load` of this format is in
every engine from 1.10 to 29, classic and containerd image store alike (moby
image/tarexport/load.go; containerd core/images/archive/importer.go, "implements Docker
v1.1, v1.2 and OCI v1").

What goes into the image is read from Dockerfile.scratch, the file the release build gives
buildah, so the two cannot drift: this is a small interpreter for the instructions that file
uses (FROM scratch, ARG, LABEL, COPY of one file, USER, EXPOSE, HEALTHCHECK and ENTRYPOINT
or CMD in exec form). Anything else stops it with the line number; such a Dockerfile needs
buildah (`make release-images`) or this script taught the new instruction.

The bytes depend only on the inputs: the layer holds the binary at /orion, mode 0755,
owner 0:0, mtime EPOCH (the commit time, as in the release build), so a re-run with
unchanged binaries loads the identical image and compose keeps the running containers.
Standard library only; Python 3.9 or newer.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import shlex
import sys
import tarfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUPPORTED = ("FROM", "ARG", "LABEL", "COPY", "USER", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD")
DURATION_UNITS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}


class DockerfileError(Exception):
    pass


def instructions(text: str):
    """(line number, INSTRUCTION, rest) for each instruction: comments and blank lines
    dropped, backslash continuations joined (comment lines inside a continuation too, as
    Docker does)."""
    out, buf, start = [], "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((start, word.upper(), rest.strip()))
        buf = ""
    if buf:
        raise DockerfileError(f"line {start}: continuation at the end of the file")
    return out


def substitute(value: str, args: dict[str, str], line: int) -> str:
    """${VAR} and $VAR from the ARGs in scope (Docker's substitution, without the
    ${VAR:-default} forms, which Dockerfile.scratch does not use)."""
    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in args:
            raise DockerfileError(f"line {line}: ${name} is not an ARG declared above")
        return args[name]

    if re.search(r"\$\{[^}]*[:?+-]", value):
        raise DockerfileError(f"line {line}: only plain ${{VAR}} substitution is supported")
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", repl, value)


def go_duration(text: str, line: int) -> int:
    """Nanoseconds of a Go duration such as 5s, 500ms or 1m30s."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise DockerfileError(f"line {line}: {text!r} is not a duration")
    return int(sum(float(n) * DURATION_UNITS[u] for n, u in parts))


def exec_form(rest: str, line: int) -> list[str]:
    try:
        argv = json.loads(rest)
    except json.JSONDecodeError:
        argv = None
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise DockerfileError(f"line {line}: only the exec form [\"...\"] is supported (no shell in a scratch image)")
    return argv


def interpret(dockerfile: Path, build_args: dict[str, str]) -> dict:
    """What the Dockerfile asks for: {"config": image config, "copy": (src, dest),
    "history": [created_by...]}."""
    args: dict[str, str] = {}
    declared: set[str] = set()
    # The PATH buildah and BuildKit both write into a FROM scratch image's config (Docker would
    # add the same one at run time): kept, so `docker inspect` matches the release image.
    config: dict = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
    copy = None
    history: list[tuple[str, bool]] = []  # (created_by, empty_layer)
    seen_from = False
    for line, word, rest in instructions(dockerfile.read_text()):
        if word not in SUPPORTED:
            raise DockerfileError(f"line {line}: {word} is not supported by {Path(__file__).name}")
        if word == "FROM":
            if seen_from or rest != "scratch":
                raise DockerfileError(f"line {line}: only one stage, FROM scratch, is supported")
            seen_from = True
            continue
        if not seen_from:
            raise DockerfileError(f"line {line}: {word} before FROM")
        if word == "ARG":
            name, eq, default = rest.partition("=")
            declared.add(name)
            args[name] = build_args.get(name, shlex.split(default)[0] if eq and default else "")
            continue
        if word == "LABEL":
            if "'" in rest:
                raise DockerfileError(f"line {line}: single-quoted LABEL values are not supported")
            labels = config.setdefault("Labels", {})
            for token in shlex.split(rest):
                key, eq, value = token.partition("=")
                if not eq:
                    raise DockerfileError(f"line {line}: LABEL {token!r} is not key=value")
                labels[substitute(key, args, line)] = substitute(value, args, line)
            history.append((f"LABEL {rest}", True))
        elif word == "COPY":
            parts = rest.split()
            if len(parts) != 2 or parts[0].startswith("--"):
                raise DockerfileError(f"line {line}: only COPY <one file> <absolute path> is supported")
            src, dest = (substitute(p, args, line) for p in parts)
            if copy is not None or not dest.startswith("/") or dest.endswith("/"):
                raise DockerfileError(f"line {line}: one COPY of one file to an absolute path is supported")
            copy = (src, dest)
            history.append((f"COPY {src} {dest}", False))
        elif word == "USER":
            config["User"] = substitute(rest, args, line)
            history.append((f"USER {config['User']}", True))
        elif word == "EXPOSE":
            for port in substitute(rest, args, line).split():
                if "/" not in port:
                    port += "/tcp"
                if not re.fullmatch(r"\d+/(tcp|udp|sctp)", port):
                    raise DockerfileError(f"line {line}: EXPOSE {port!r} is not a port (an empty build arg?)")
                config.setdefault("ExposedPorts", {})[port] = {}
            history.append((f"EXPOSE {rest}", True))
        elif word == "HEALTHCHECK":
            tokens = rest.split(" ")
            check: dict = {}
            keys = {"--interval": "Interval", "--timeout": "Timeout", "--start-period": "StartPeriod",
                    "--start-interval": "StartInterval", "--retries": "Retries"}
            while tokens and tokens[0].startswith("--"):
                flag, _, value = tokens.pop(0).partition("=")
                if flag not in keys:
                    raise DockerfileError(f"line {line}: HEALTHCHECK {flag} is not supported")
                check[keys[flag]] = int(value) if flag == "--retries" else go_duration(value, line)
            if not tokens or tokens[0] != "CMD":
                raise DockerfileError(f"line {line}: HEALTHCHECK [options] CMD [...] expected")
            config["Healthcheck"] = {"Test": ["CMD", *exec_form(" ".join(tokens[1:]), line)], **check}
            history.append((f"HEALTHCHECK {rest}", True))
        elif word in ("ENTRYPOINT", "CMD"):
            key = "Entrypoint" if word == "ENTRYPOINT" else "Cmd"
            config[key] = exec_form(rest, line)
            history.append((f"{word} {rest}", True))
    # TARGETARCH is always given, as BuildKit predefines it (a Dockerfile need not use it).
    unknown = set(build_args) - declared - {"TARGETARCH"}
    if unknown:
        raise DockerfileError(f"build args {sorted(unknown)} are not ARGs of {dockerfile.name}")
    if copy is None:
        raise DockerfileError("no COPY: nothing to put in the image")
    return {"config": config, "copy": copy, "history": history}


def layer_tar(binary: Path, dest: str, mtime: int) -> bytes:
    """One file at dest: root-owned, 0755, fixed mtime, no user or group names."""
    data = binary.read_bytes()
    info = tarfile.TarInfo(dest.lstrip("/"))
    info.size, info.mode, info.mtime = len(data), 0o755, mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def image(dockerfile: Path, context: Path, arch: str, created: int, build_args: dict[str, str]):
    """(config bytes, layer bytes) of one image."""
    spec = interpret(dockerfile, {**build_args, "TARGETARCH": arch})
    src, dest = spec["copy"]
    binary = context / src
    if not binary.is_file():
        raise DockerfileError(f"COPY {src}: {binary} does not exist (make build-host builds it)")
    layer = layer_tar(binary, dest, created)
    stamp = datetime.fromtimestamp(created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    history = [{"created": stamp, "created_by": by, **({"empty_layer": True} if empty else {})}
               for by, empty in spec["history"]]
    config = {
        "architecture": arch,
        "os": "linux",
        "created": stamp,
        "config": spec["config"],
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
        "history": history,
    }
    return json.dumps(config, separators=(",", ":"), sort_keys=True).encode(), layer


def archive(images: list[tuple[str, bytes, bytes]]) -> bytes:
    """docker-archive bytes: per image <config digest>.json and <layer digest>/layer.tar,
    plus manifest.json naming them and the tag (the layout `docker save` writes)."""
    buf = io.BytesIO()
    manifest = []
    members: dict[str, bytes] = {}
    for tag, config, layer in images:
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        layer_name = hashlib.sha256(layer).hexdigest() + "/layer.tar"
        members[config_name] = config
        members[layer_name] = layer
        manifest.append({"Config": config_name, "RepoTags": [tag], "Layers": [layer_name]})
    members["manifest.json"] = json.dumps(manifest, separators=(",", ":")).encode()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(members, key=lambda n: (n == "manifest.json", n)):
            if "/" in name:
                d = tarfile.TarInfo(name.split("/")[0])
                d.type, d.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(d)
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(members[name]), 0o644
            tar.addfile(info, io.BytesIO(members[name]))
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", required=True, choices=["amd64", "arm64"])
    p.add_argument("--created", required=True, type=int, help="seconds since the epoch (the commit time)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--image", action="append", required=True, metavar="SERVICE:PORT=TAG")
    p.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--dockerfile", type=Path, default=ROOT / "Dockerfile.scratch")
    p.add_argument("--context", type=Path, default=ROOT)
    a = p.parse_args(argv)
    args = dict(kv.split("=", 1) for kv in a.build_arg)
    built = []
    try:
        for spec in a.image:
            service_port, _, tag = spec.partition("=")
            service, _, port = service_port.partition(":")
            if not (service and port and tag):
                raise DockerfileError(f"--image {spec!r} is not SERVICE:PORT=TAG")
            config, layer = image(a.dockerfile, a.context, a.arch, a.created,
                                  {**args, "SERVICE": service, "EXPOSE_PORT": port})
            built.append((tag, config, layer))
    except DockerfileError as e:
        print(f"local-image: {a.dockerfile.name}: {e}", file=sys.stderr)
        return 1
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(a.out.name + ".tmp")
    tmp.write_bytes(archive(built))
    tmp.replace(a.out)
    for tag, config, _ in built:
        print(f"{tag} sha256:{hashlib.sha256(config).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
