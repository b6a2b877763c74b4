"""The release images (`make release-images`): the OCI layouts in dist/oci, read blob by
blob here (not through scripts/release-oci.py), their SBOMs, `make verify-release` against
an OCI layout standing in for the registry, and CI's push/attest commands against stand-in
skopeo and cosign executables that record their argv.

What this does not prove: that ghcr.io accepts the pushes (no registry is reachable from
here; the stand-in skopeo copies into local layouts), that cosign's signatures and
attestations verify (the stand-in cosign only records), and that the pinned public Debian
image itself runs the release build (no image can be pulled here: the hand-over runs for real
in a Debian 12 image debootstrapped from Debian's packages; CI's runner uses the pinned one).
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
import tomllib
from pathlib import Path

import pytest
import yaml

from imagetest_util import IN_CI, REPO, SERVICES, embedded_dependencies, run

VERSION = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["package"]["version"]
OCI = REPO / "dist" / "oci"
PLATFORMS = [("linux/amd64", "amd64", 62), ("linux/arm64", "arm64", 183)]
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
REGISTRY = "ghcr.io/orionlynn19"
REAL_SKOPEO = shutil.which("skopeo")
# What the stand-in registry serves: this checkout's release build, as CI would have pushed
# it. (A checkout with uncommitted changes to the sources is not its commit: point this at
# the clean clone's dist/oci then.)
PUBLISHED = Path(os.environ.get("ORION_PUBLISHED_OCI") or OCI)


def git(*args: str) -> str:
    return run("git", "-C", str(REPO), *args).stdout.strip()


HEAD = git("rev-parse", "HEAD")
SDE = int(git("log", "-1", "--format=%ct", "HEAD"))


# ------------------------------------------------------------------ reading a layout ----

def blob(layout: Path, digest: str) -> bytes:
    data = (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest, f"{layout}: {digest} corrupt"
    return data


def read_layout(layout: Path) -> dict:
    """index digest, the index, and per platform: manifest, config, layers (raw bytes)."""
    index_json = json.loads((layout / "index.json").read_text())
    (top,) = [m for m in index_json["manifests"]
              if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "latest"]
    index = json.loads(blob(layout, top["digest"]))
    plats = {}
    for d in index["manifests"]:
        man = json.loads(blob(layout, d["digest"]))
        plats[f"{d['platform']['os']}/{d['platform']['architecture']}"] = {
            "descriptor": d, "manifest": man,
            "config": json.loads(blob(layout, man["config"]["digest"])),
            "layers": [blob(layout, l["digest"]) for l in man["layers"]]}
    return {"digest": top["digest"], "top": top, "index": index, "platforms": plats}


def layer_files(layer: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tf:
        return {m.name: (m, tf.extractfile(m).read() if m.isfile() else None) for m in tf.getmembers()}


@pytest.fixture(scope="module", params=list(SERVICES))
def svc(request) -> str:
    if not (OCI / f"orion-{request.param}" / "index.json").is_file():
        pytest.fail(f"{OCI}/orion-{request.param} missing: run `make release-images`", pytrace=False)
    return request.param


# ------------------------------------------------------------------ the layouts ---------

def test_index_lists_amd64_then_arm64_and_matches_digests_txt(svc):
    lay = read_layout(OCI / f"orion-{svc}")
    assert lay["top"]["mediaType"] == INDEX_TYPE and lay["index"]["mediaType"] == INDEX_TYPE
    assert [f"{d['platform']['os']}/{d['platform']['architecture']}" for d in lay["index"]["manifests"]] \
        == [p for p, _, _ in PLATFORMS], "fixed platform order, whatever order the builds finished in"
    assert all(d["mediaType"] == MANIFEST_TYPE for d in lay["index"]["manifests"])
    lines = dict(line.split() for line in (OCI / "digests.txt").read_text().splitlines())
    assert lines[f"orion-{svc}"] == lay["digest"]


@pytest.mark.parametrize("platform,arch,machine", PLATFORMS)
def test_each_platform_layer_carries_the_binary_of_its_architecture(svc, platform, arch, machine):
    """ELF e_machine read out of the layer tarball itself, not the manifest's platform field."""
    p = read_layout(OCI / f"orion-{svc}")["platforms"][platform]
    assert len(p["layers"]) == 1
    files = layer_files(p["layers"][0])
    assert set(files) == {"orion"}, sorted(files)
    info, content = files["orion"]
    assert content[:4] == b"\x7fELF"
    assert struct.unpack_from("<H", content, 18)[0] == machine
    assert content == (REPO / "dist" / arch / f"orion-{svc}").read_bytes(), "the layer holds dist/'s binary"
    assert (info.uid, info.gid, info.mode & 0o7777) == (0, 0, 0o755)
    assert info.mtime == SDE, "file times come from the commit"
    assert p["config"]["architecture"] == arch and p["config"]["os"] == "linux"


@pytest.mark.parametrize("platform", [p for p, _, _ in PLATFORMS])
def test_config_keeps_what_the_images_have_today(svc, platform):
    cfg_all = read_layout(OCI / f"orion-{svc}")["platforms"][platform]["config"]
    cfg = cfg_all["config"]
    port = SERVICES[svc][1]
    assert cfg["User"] == "65532:65532"
    assert cfg["Entrypoint"] == ["/orion"]
    assert cfg["Healthcheck"]["Test"] == ["CMD", "/orion", "healthcheck"], "Docker format keeps HEALTHCHECK"
    assert (cfg["Healthcheck"]["Interval"], cfg["Healthcheck"]["Timeout"], cfg["Healthcheck"]["Retries"]) \
        == (5_000_000_000, 3_000_000_000, 3)
    assert list(cfg["ExposedPorts"]) == [f"{port}/tcp"]
    labels = cfg["Labels"]
    assert labels["org.opencontainers.image.title"] == f"orion-{svc}"
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.revision"] == HEAD
    assert labels["org.opencontainers.image.source"] == "https://github.com/OrionLynn19/orionPL"
    assert "io.buildah.version" not in labels, "the builder's version label is off (--identity-label=false)"
    created = datetime.datetime.fromtimestamp(SDE, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert cfg_all["created"] == created
    assert {h["created"] for h in cfg_all["history"]} == {created}
    # The random id and hostname buildah gives its build container are blanked.
    assert cfg_all.get("container", "") == "" and cfg["Hostname"] == "" and cfg_all["container_config"]["Hostname"] == ""


def test_rebuild_gives_the_same_digests_and_the_timestamp_is_the_commits(tmp_path):
    """Run to run the digests hold; SOURCE_DATE_EPOCH really is what dates the image."""
    env = {**os.environ, "OUT": str(tmp_path / "same")}
    same = run(str(REPO / "scripts" / "release-images.sh"), env=env, timeout=120)
    assert same.stdout == (OCI / "digests.txt").read_text()
    env = {**os.environ, "OUT": str(tmp_path / "later"), "SOURCE_DATE_EPOCH": str(SDE + 1)}
    later = run(str(REPO / "scripts" / "release-images.sh"), env=env, timeout=120)
    assert set(later.stdout.splitlines()).isdisjoint(same.stdout.splitlines())


def test_release_build_refuses_another_buildah_and_a_bad_epoch(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "buildah").write_text("#!/bin/sh\necho 'buildah version 1.33.7 (image-spec 1.1.0)'\n")
    (fake / "buildah").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "OUT": str(tmp_path / "o"),
           "RELEASE_NO_CONTAINER": "1"}
    r = run(str(REPO / "scripts" / "release-images.sh"), env=env, check=False)
    assert r.returncode == 1 and "buildah 1.33.7, releases are built with 1.28.2" in r.stderr
    env = {**os.environ, "SOURCE_DATE_EPOCH": "yesterday", "OUT": str(tmp_path / "o")}
    r = run(str(REPO / "scripts" / "release-images.sh"), env=env, check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "SOURCE_DATE_EPOCH='yesterday'" in r.stderr


# What GitHub's ubuntu-24.04 runner answers (actions/runner-images, images/ubuntu/Ubuntu2404-Readme.md:
# Buildah 1.33.7), in buildah's own format: cobra's "<name> version <Version>" with buildah's
# Version "%s (image-spec %s, runtime-spec %s)" (containers/buildah v1.33.7, cmd/buildah/main.go;
# image-spec v1.1.0-rc5, runtime-spec v1.1.0 from its go.mod).
RUNNER_BUILDAH = "buildah version 1.33.7 (image-spec 1.1.0-rc.5, runtime-spec 1.1.0)"
PINNED_BASE = re.search(r"RELEASE_BASE_IMAGE:-([^}]+)\}", (REPO / "scripts" / "release-container.sh").read_text()).group(1)


@pytest.fixture(scope="module")
def release_base() -> str:
    """The Debian 12 image release-container.sh runs in. RELEASE_BASE_IMAGE when set; the
    pinned public image where it is present or can be pulled (GitHub's runner); otherwise (no
    registry here) one built from Debian's packages by scripts/release-base-debootstrap.sh,
    cached under a tag keyed on what built it (cold: a few minutes; warm: no work)."""
    if shutil.which("docker") is None or run("docker", "info", check=False, timeout=30).returncode != 0:
        pytest.fail("no docker engine: the release container hand-over needs one", pytrace=False)
    if os.environ.get("RELEASE_BASE_IMAGE"):
        base, how = os.environ["RELEASE_BASE_IMAGE"], "RELEASE_BASE_IMAGE"
    elif run("docker", "image", "inspect", PINNED_BASE, check=False).returncode == 0:
        base, how = PINNED_BASE, "the pinned public image"
    elif os.environ.get("GITHUB_ACTIONS") == "true":
        run("docker", "pull", "--quiet", PINNED_BASE, timeout=600)
        base, how = PINNED_BASE, "the pinned public image (pulled)"
    else:
        r = run(str(REPO / "scripts" / "release-base-debootstrap.sh"), check=False, timeout=1200)
        assert r.returncode == 0, r.stderr
        base, how = r.stdout.strip(), "debootstrapped from Debian's packages"
    print(f"release container base: {base} ({how})")
    return base


def test_another_buildah_hands_the_build_to_the_container_for_real(tmp_path, release_base):
    """A host whose buildah is not the release one (CI's runner) runs release-images.sh; it
    hands itself to release-container.sh, which runs the real `docker run`: apt-get installs
    the pinned buildah and skopeo from Debian's mirror into the Debian 12 image and builds
    there. What a host build would do must hold: OUT and SERVICES are honoured, the digests
    are this host's (release buildah, same bytes across the hand-over), and what lands in
    OUT belongs to the user who ran it, not to the container's root. As root here, that user
    is an unprivileged uid in the docker socket's group, as on the runner."""
    host = dict(line.split() for line in (OCI / "digests.txt").read_text().splitlines())
    before = (OCI / "orion-worker" / "index.json").stat().st_mtime_ns
    if os.getuid() == 0:
        uid = gid = 4242
        base = Path(tempfile.mkdtemp(prefix="orion-handover-"))
        extra = {"user": uid, "group": gid, "extra_groups": [os.stat("/var/run/docker.sock").st_gid]}
    else:
        uid, gid, base, extra = os.getuid(), os.getgid(), tmp_path, {}
    try:
        fake, home, out = base / "bin", base / "home", base / "out" / "oci"
        for d in (fake, home):
            d.mkdir(parents=True)
        (fake / "buildah").write_text(f"#!/bin/sh\necho '{RUNNER_BUILDAH}'\n")
        (fake / "buildah").chmod(0o755)
        if extra:
            for p in (base, fake, fake / "buildah", home):
                os.chown(p, uid, gid)
            base.chmod(0o755)
        env = {"PATH": f"{fake}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home),
               "OUT": str(out), "SERVICES": "worker", "RELEASE_BASE_IMAGE": release_base,
               "SOURCE_DATE_EPOCH": str(SDE), "REVISION": HEAD, "VERSION": VERSION}
        r = subprocess.run([str(REPO / "scripts" / "release-images.sh")], env=env, cwd=base, capture_output=True,
                           text=True, timeout=900, **extra)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "buildah 1.33.7 here, releases are built with 1.28.2: running in the pinned Debian 12 container" \
            in r.stderr
        assert r.stdout == f"orion-worker {host['orion-worker']}\n", "the host build's digest, SERVICES honoured"
        assert sorted(p.name for p in out.iterdir()) == ["digests.txt", "orion-worker"]
        assert read_layout(out / "orion-worker")["digest"] == host["orion-worker"]
        assert (out / "digests.txt").read_text() == r.stdout
        wrong = [f"{p} {st.st_uid}:{st.st_gid}" for p in [out.parent, *out.rglob("*")]
                 if ((st := p.lstat()).st_uid, st.st_gid) != (uid, gid)]
        assert not wrong, f"not owned by {uid}:{gid}: {wrong[:5]}"
        assert (OCI / "orion-worker" / "index.json").stat().st_mtime_ns == before, "the checkout's dist/ untouched"
    finally:
        if extra:
            shutil.rmtree(base)


def test_ci_container_installs_the_buildah_this_machine_builds_with():
    """CI builds in a pinned Debian 12 container; its package pins are this machine's."""
    r = run(str(REPO / "scripts" / "release-container.sh"), env={**os.environ, "DRY_RUN": "1"})
    cmd = r.stdout
    assert re.search(r"debian:bookworm-\S+@sha256:[0-9a-f]{64}", cmd), "base image pinned by digest"
    assert "scripts/release-images.sh" in cmd and f"-e REVISION={HEAD}" in cmd and f"-e SOURCE_DATE_EPOCH={SDE}" in cmd
    assert f"-v {REPO}:{REPO}:ro -v {OCI}:{OCI} -w {REPO}" in cmd, "checkout read-only and OUT, each at its own path"
    assert "-e SERVICES=api\\ worker" in cmd and f"-e OUT={OCI}" in cmd
    assert f"-e RELEASE_OWNER={os.getuid()}:{os.getgid()}" in cmd and "--privileged" not in cmd
    pinned = re.search(r"buildah=(\S+)", cmd.replace("\\", "")).group(1)
    assert f'RELEASE_BUILDAH_VERSION:-{pinned.split("+")[0]}' in (REPO / "scripts" / "release-images.sh").read_text()
    have = run("buildah", "--version", check=False).stdout.split()
    if have[2:3] != [pinned.split("+")[0]]:
        # Not this project's Debian machine (GitHub's Ubuntu runner): the build runs in the
        # container, so there is no local package to compare with (the hand-over is tested).
        return
    for pkg in ("buildah", "skopeo"):
        version = run("dpkg-query", "-W", "-f", "${Version}", pkg).stdout
        assert f"{pkg}={version}" in cmd.replace("\\", ""), (pkg, version)


# ------------------------------------------------------------------ SBOM -----------------



def validator():
    try:
        from cyclonedx.schema import SchemaVersion
        from cyclonedx.validation.json import JsonStrictValidator
    except ImportError:
        pytest.fail("cyclonedx-python-lib missing: make tools", pytrace=False)
    return JsonStrictValidator(SchemaVersion.V1_6)


def test_sbom_lists_every_crate_compiled_in_with_version_and_license(svc):
    path = REPO / "dist" / "sbom" / f"orion-{svc}.cdx.json"
    text = path.read_text()
    assert validator().validate_str(text) is None
    bom = json.loads(text)
    digest = dict(l.split() for l in (OCI / "digests.txt").read_text().splitlines())[f"orion-{svc}"]
    assert bom["metadata"]["component"]["purl"] == f"pkg:oci/orion-{svc}@{digest.replace(':', '%3A')}"
    got = {(c["name"], c["version"]) for c in bom["components"]}
    for _, arch, _ in PLATFORMS:
        pkgs = embedded_dependencies(REPO / "dist" / arch / f"orion-{svc}")["packages"]
        compiled_in = {(p["name"], p["version"]) for p in pkgs if p.get("kind", "runtime") == "runtime"}
        build_only = {(p["name"], p["version"]) for p in pkgs if p.get("kind") == "build"}
        assert compiled_in <= got, sorted(compiled_in - got)
        assert not (got & (build_only - compiled_in)), "build scripts and proc macros are not in the binary"
    assert (f"orion-{svc}", VERSION) in got and ("tiny_http", next(v for n, v in got if n == "tiny_http")) in got
    for c in bom["components"]:
        (lic,) = c["licenses"]
        assert lic["expression"] and "/" not in lic["expression"], c
        if c["name"].startswith("orion-"):
            assert lic["expression"] == "MIT"
        else:
            assert c["purl"] == f"pkg:cargo/{c['name']}@{c['version']}" and len(c["hashes"][0]["content"]) == 64


def test_the_validator_rejects_a_broken_sbom(tmp_path):
    """The validation can fail: a component without a name, an unknown hash algorithm."""
    bom = json.loads((REPO / "dist" / "sbom" / "orion-api.cdx.json").read_text())
    del bom["components"][0]["name"]
    assert validator().validate_str(json.dumps(bom)) is not None
    bom = json.loads((REPO / "dist" / "sbom" / "orion-api.cdx.json").read_text())
    bom["components"][1]["hashes"][0]["alg"] = "SHA-257"
    bad = tmp_path / "bad.cdx.json"
    bad.write_text(json.dumps(bom))
    r = run(str(REPO / ".venv" / "bin" / "python"), str(REPO / "scripts" / "release-sbom.py"), "validate", str(bad),
            check=False)
    assert r.returncode == 1 and "not valid CycloneDX 1.6" in r.stderr


# ------------------------------------------------------------------ verify-release -------

def fake_skopeo(bin_dir: Path, log: Path, registry: Path, fail_first: int = 0) -> None:
    """skopeo whose docker://ghcr.io/... references are OCI layouts under `registry`
    (docker://R/N:tag -> oci:registry/N/tag-<tag>:latest, @sha256:D -> by-digest-D): the exact
    command line is recorded, then the real skopeo runs on the translated references."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "skopeo"
    script.write_text(f'''#!/usr/bin/env python3
import os, re, sys
with open({str(log)!r}, "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
n = sum(1 for _ in open({str(log)!r}))
if n <= {fail_first}:
    print("copy: 502 Bad Gateway", file=sys.stderr); sys.exit(1)
def tr(a):
    m = re.fullmatch(r"docker://{re.escape(REGISTRY)}/([\\w-]+)(?::([\\w.-]+)|@sha256:([0-9a-f]{{64}}))", a)
    if not m:
        return a
    name, tag, dig = m.groups()
    path = os.path.join({str(registry)!r}, name, "tag-" + tag if tag else "by-digest-" + dig)
    os.makedirs(os.path.dirname(path), exist_ok=True)  # a registry has every repository
    return "oci:" + path + ":latest"
os.execv({REAL_SKOPEO!r}, ["skopeo"] + [tr(a) for a in sys.argv[1:]])
''')
    script.chmod(0o755)


def publish(registry: Path, name: str, layout: Path) -> str:
    """Put a layout into the stand-in registry by digest; return the digest."""
    digest = read_layout(layout)["digest"]
    dest = registry / name / f"by-digest-{digest.split(':', 1)[1]}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(layout, dest)
    return digest


@pytest.fixture(scope="module")
def rebuild_clone() -> str | None:
    """make test runs verify-reproducible first: its clone B is a clean clone of HEAD whose
    target/ makes the verify-release rebuild incremental. Without it, a fresh clone is built."""
    clone = os.environ.get("ORION_REPRO_CLONE", "")
    revision = read_layout(PUBLISHED / "orion-api")["platforms"]["linux/amd64"]["config"]["config"]["Labels"][
        "org.opencontainers.image.revision"]
    if clone and Path(clone, ".git").exists() and run("git", "-C", clone, "rev-parse", "HEAD").stdout.strip() == revision:
        return clone
    if IN_CI:
        pytest.fail(f"ORION_REPRO_CLONE={clone!r} is not a clone at {revision}: run make verify-reproducible first",
                    pytrace=False)
    return None


def verify_release(image: str, tmp_path: Path, clone: str | None, path_prefix: Path | None = None):
    env = {**os.environ, "VERIFY_DIR": str(tmp_path / "verify")}
    if clone:
        env["VERIFY_CLONE"] = clone
    if path_prefix:
        env["PATH"] = f"{path_prefix}:{env['PATH']}"
    return run("make", "-s", "--no-print-directory", "-C", str(REPO), "verify-release", f"IMAGE={image}",
               env=env, check=False, timeout=900)


def test_verify_release_accepts_the_registrys_image_by_digest(tmp_path, rebuild_clone):
    """IMAGE=ghcr.io/...@sha256:... as a user types it; the registry is a stand-in layout."""
    registry, log = tmp_path / "registry", tmp_path / "skopeo.log"
    fake_skopeo(tmp_path / "bin", log, registry)
    digest = publish(registry, "orion-api", PUBLISHED / "orion-api")
    r = verify_release(f"{REGISTRY}/orion-api@{digest}", tmp_path, rebuild_clone, tmp_path / "bin")
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(rf"OK: orion-api rebuilt from [0-9a-f]{{40}} is {digest}", r.stdout), r.stdout
    assert log.read_text().splitlines()[0].split()[:4] == ["copy", "--quiet", "--all", "--preserve-digests"]
    assert f"docker://{REGISTRY}/orion-api@{digest}" in log.read_text()


def test_verify_release_refuses_a_registry_answer_for_another_digest(tmp_path):
    registry = tmp_path / "registry"
    fake_skopeo(tmp_path / "bin", tmp_path / "skopeo.log", registry)
    worker = publish(registry, "orion-worker", OCI / "orion-worker")
    api = read_layout(OCI / "orion-api")["digest"]
    # The registry serves the worker's index where the api's digest was asked for.
    (registry / "orion-worker" / f"by-digest-{worker.split(':')[1]}").rename(
        registry / "orion-worker" / f"by-digest-{api.split(':')[1]}")
    r = verify_release(f"{REGISTRY}/orion-worker@{api}", tmp_path, None, tmp_path / "bin")
    assert r.returncode != 0
    assert f"asked for {api}" in r.stderr or "manifest digest" in r.stderr.lower(), r.stderr


def tamper_config(src: Path, dst: Path, platform: str) -> None:
    """A self-consistent layout (every digest right) whose one platform config says user 0."""
    shutil.copytree(src, dst)
    lay = read_layout(dst)

    def put(data: bytes) -> str:
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        (dst / "blobs" / "sha256" / d.split(":")[1]).write_bytes(data)
        return d

    p = lay["platforms"][platform]
    cfg = dict(p["config"])
    cfg["config"] = {**cfg["config"], "User": "0:0"}
    cfg_bytes = json.dumps(cfg, separators=(",", ":")).encode()
    man = {**p["manifest"], "config": {**p["manifest"]["config"], "digest": put(cfg_bytes), "size": len(cfg_bytes)}}
    man_bytes = json.dumps(man, separators=(",", ":")).encode()
    index = lay["index"]
    for d in index["manifests"]:
        if d is p["descriptor"] or d["digest"] == p["descriptor"]["digest"]:
            d["digest"], d["size"] = put(man_bytes), len(man_bytes)
    index_bytes = json.dumps(index, separators=(",", ":")).encode()
    top = {**lay["top"], "digest": put(index_bytes), "size": len(index_bytes)}
    (dst / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))


def test_verify_release_fails_on_a_tampered_image_naming_the_blob(tmp_path, rebuild_clone):
    """IMAGE=oci:DIR form: an image whose arm64 config was changed (user 0) after the build."""
    tampered = tmp_path / "tampered"
    tamper_config(PUBLISHED / "orion-api", tampered, "linux/arm64")
    r = verify_release(f"oci:{tampered}:latest", tmp_path, rebuild_clone)
    assert r.returncode != 0, r.stdout
    assert "FAILED: orion-api rebuilt from" in r.stderr
    assert "first difference: linux/arm64 config blob" in r.stderr, r.stderr
    assert "config.User: '\"0:0\"' vs '\"65532:65532\"'" in r.stderr, r.stderr


def test_verify_release_refuses_an_edited_blob(tmp_path):
    """Bytes changed under an unchanged digest never reach the comparison."""
    edited = tmp_path / "edited"
    shutil.copytree(OCI / "orion-worker", edited)
    layer = read_layout(edited)["platforms"]["linux/amd64"]["manifest"]["layers"][0]["digest"]
    p = edited / "blobs" / "sha256" / layer.split(":")[1]
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    r = verify_release(f"oci:{edited}:latest", tmp_path, None)
    assert r.returncode != 0 and r.stdout.count("rebuilding") == 0, r.stdout
    assert "digest" in r.stderr.lower(), r.stderr


# ------------------------------------------------------------------ CI's commands --------

def ci_build_job() -> dict:
    return yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())["jobs"]["build"]


def step(job: dict, name: str) -> dict:
    (found,) = [s for s in job["steps"] if s.get("name") == name]
    return found


def test_ci_build_job_runs_the_release_build():
    runs = [s["run"].strip() for s in ci_build_job()["steps"] if "run" in s]
    assert runs[1:3] == ["make build", "make release-images"]
    assert not any("buildx" in s.get("uses", "") + s.get("run", "") for s in ci_build_job()["steps"])
    # make release-images is the same two scripts: the release build and the SBOMs.
    recipe = (REPO / "mk" / "release.mk").read_text().split("release-images: ", 1)[1].split("\n\n", 1)[0]
    assert "scripts/release-images.sh" in recipe and "$(release_sbom_recipe)" in recipe
    outputs = ci_build_job()["outputs"]
    assert outputs["api_image"] == "${{ steps.api.outputs.image }}"
    assert outputs["worker_image"] == "${{ steps.worker.outputs.image }}"


def push_env(tmp_path: Path, svc: str, push: str = "true") -> dict:
    return {**os.environ, "PUSH": push, "RETRY_DELAY": "0", "GITHUB_OUTPUT": str(tmp_path / "github_output"),
            "TAGS": f"{REGISTRY}/orion-{svc}:uat {REGISTRY}/orion-{svc}:sha-0123456",
            "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}


def test_ci_pushes_the_built_index_by_digest_then_tags_and_retries(tmp_path):
    registry, log = tmp_path / "registry", tmp_path / "skopeo.log"
    fake_skopeo(tmp_path / "bin", log, registry, fail_first=2)
    r = run(str(REPO / "scripts" / "ci-build-image.sh"), "worker", env=push_env(tmp_path, "worker"), check=False,
            timeout=120)
    assert r.returncode == 0, r.stderr
    digest = read_layout(OCI / "orion-worker")["digest"]
    calls = log.read_text().splitlines()
    assert len(calls) == 2 + 3, "two 502s, then by digest and two tags"
    dests = [c.split()[-1] for c in calls[2:]]
    assert dests == [f"docker://{REGISTRY}/orion-worker@{digest}",
                     f"docker://{REGISTRY}/orion-worker:uat", f"docker://{REGISTRY}/orion-worker:sha-0123456"]
    for c in calls:
        assert c.startswith("copy --quiet --all --preserve-digests --digestfile ")
        assert f"oci:{OCI}/orion-worker:latest" in c
    for d in ("by-digest-" + digest.split(":")[1], "tag-uat", "tag-sha-0123456"):
        assert read_layout(registry / "orion-worker" / d)["digest"] == digest, d
    out = dict(l.split("=", 1) for l in (tmp_path / "github_output").read_text().splitlines())
    assert out == {"digest": digest, "image": f"{REGISTRY}/orion-worker@{digest}"}


def test_ci_pull_request_pushes_nothing(tmp_path):
    log = tmp_path / "skopeo.log"
    fake_skopeo(tmp_path / "bin", log, tmp_path / "registry")
    r = run(str(REPO / "scripts" / "ci-build-image.sh"), "api", env=push_env(tmp_path, "api", "false"))
    assert read_layout(OCI / "orion-api")["digest"] in r.stdout
    assert not log.exists() and not (tmp_path / "github_output").exists()


def test_ci_push_fails_when_the_registry_digest_differs(tmp_path):
    """A skopeo that rewrote the index (no --preserve-digests) would report another digest."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "skopeo").write_text('#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = --digestfile ] && '
                                    'printf sha256:%064d 0 >"$2"; shift; done\n')
    (bin_dir / "skopeo").chmod(0o755)
    r = run(str(REPO / "scripts" / "ci-build-image.sh"), "api", env=push_env(tmp_path, "api"), check=False)
    assert r.returncode == 1 and "not the built sha256:" in r.stderr


def test_ci_refuses_a_layout_whose_layers_are_of_the_wrong_architecture(tmp_path):
    """An index whose arm64 entry points at the amd64 image: the manifest says arm64, the ELF does not."""
    bad = tmp_path / "oci" / "orion-api"
    shutil.copytree(OCI / "orion-api", bad)
    lay = read_layout(bad)
    index = lay["index"]
    index["manifests"][1] = {**index["manifests"][0], "platform": index["manifests"][1]["platform"]}
    data = json.dumps(index, separators=(",", ":")).encode()
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    (bad / "blobs" / "sha256" / d.split(":")[1]).write_bytes(data)
    (bad / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{**lay["top"], "digest": d,
                                                                                   "size": len(data)}]}))
    log = tmp_path / "skopeo.log"
    fake_skopeo(tmp_path / "bin", log, tmp_path / "registry")
    r = run(str(REPO / "scripts" / "ci-build-image.sh"), "api",
            env={**push_env(tmp_path, "api"), "OCI_DIR": str(tmp_path / "oci")}, check=False)
    assert r.returncode == 1 and "does not hold one amd64 and one arm64 binary" in r.stderr
    assert not log.exists(), "nothing pushed"


def fake_cosign(bin_dir: Path, log: Path) -> None:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "cosign").write_text(f'''#!/usr/bin/env python3
import json, sys
args = sys.argv[1:]
rec = {{"argv": args}}
if "--predicate" in args:
    rec["predicate"] = json.load(open(args[args.index("--predicate") + 1]))
open({str(log)!r}, "a").write(json.dumps(rec) + "\\n")
''')
    (bin_dir / "cosign").chmod(0o755)


def test_ci_signs_and_attests_sbom_and_provenance_on_the_pushed_digests(tmp_path):
    """The workflow's own run: blocks, run with its env, against a recording cosign."""
    job = ci_build_job()
    log = tmp_path / "cosign.log"
    fake_cosign(tmp_path / "bin", log)
    digests = dict(l.split() for l in (OCI / "digests.txt").read_text().splitlines())
    images = {"API_IMAGE": f"{REGISTRY}/orion-api@{digests['orion-api']}",
              "WORKER_IMAGE": f"{REGISTRY}/orion-worker@{digests['orion-worker']}"}
    gh = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "OrionLynn19/orionPL", "GITHUB_SHA": HEAD,
          "GITHUB_REF": "refs/heads/main", "GITHUB_RUN_ID": "42", "GITHUB_RUN_ATTEMPT": "1",
          "GITHUB_EVENT_NAME": "push",
          "GITHUB_WORKFLOW_REF": "OrionLynn19/orionPL/.github/workflows/ci.yml@refs/heads/main"}
    for name in ("Sign images by digest", "Attest SBOMs + build provenance"):
        s = step(job, name)
        assert s["if"] == "steps.ci.outputs.push == 'true'"
        assert s["env"] == {"API_IMAGE": "${{ steps.api.outputs.image }}",
                            "WORKER_IMAGE": "${{ steps.worker.outputs.image }}"}
        env = {**os.environ, **images, **gh, "RETRY_DELAY": "0", "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", s["run"]], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    calls = [json.loads(l) for l in log.read_text().splitlines()]
    assert [c["argv"] for c in calls[:2]] == [["sign", "--yes", images["API_IMAGE"]],
                                              ["sign", "--yes", images["WORKER_IMAGE"]]]
    attests = calls[2:]
    assert len(attests) == 4
    for svc, ref in (("api", images["API_IMAGE"]), ("worker", images["WORKER_IMAGE"])):
        mine = [c for c in attests if c["argv"][-1] == ref]
        types = [c["argv"][c["argv"].index("--type") + 1] for c in mine]
        assert types == ["cyclonedx", "slsaprovenance1"], types
        sbom, prov = (c["predicate"] for c in mine)
        assert sbom == json.loads((REPO / "dist" / "sbom" / f"orion-{svc}.cdx.json").read_text())
        assert prov["buildDefinition"]["resolvedDependencies"][0]["digest"] == {"gitCommit": HEAD}
        assert prov["buildDefinition"]["externalParameters"]["image_index"] == digests[f"orion-{svc}"]
        assert prov["runDetails"]["builder"]["id"] == \
            "https://github.com/OrionLynn19/orionPL/.github/workflows/ci.yml@refs/heads/main"
        assert "--key" not in mine[0]["argv"] and mine[0]["argv"][:2] == ["attest", "--yes"]


def test_attest_refuses_an_sbom_of_another_digest(tmp_path):
    fake_cosign(tmp_path / "bin", tmp_path / "cosign.log")
    worker = dict(l.split() for l in (OCI / "digests.txt").read_text().splitlines())["orion-worker"]
    r = run(str(REPO / "scripts" / "release-attest.sh"), "api", f"{REGISTRY}/orion-api@{worker}", check=False,
            env={**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"})
    assert r.returncode == 1 and "describes pkg:oci/orion-api@" in r.stderr
    assert not (tmp_path / "cosign.log").exists()


# ------------------------------------------------------------------ verify-reproducible --

def fake_make(bin_dir: Path, flip: str | None) -> None:
    """A `make` for the clone that, instead of building, copies this checkout's release output
    (optionally with one byte of one file flipped): the comparison is what is tested here; the
    real two-build run is `make verify-reproducible` itself, in `make test`."""
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "make").write_text(f'''#!/usr/bin/env python3
import os, shutil, sys
assert "build" in sys.argv and "release-images" in sys.argv, sys.argv
assert os.path.realpath(os.getcwd()) != {str(REPO)!r}, "builds in the clone"
assert (os.umask(0o22) == 0o077), "the clone builds with umask 077"
shutil.copytree({str(REPO / "dist")!r}, "dist", ignore=shutil.ignore_patterns("reproducible"))
flip = {flip!r}
if flip:
    p = os.path.join("dist", flip) if not flip.startswith("blob:") else None
    if p is None:
        import glob, json
        idx = json.load(open("dist/oci/orion-api/index.json"))
        p = "dist/oci/orion-api/blobs/sha256/" + idx["manifests"][0]["digest"].split(":")[1]
        data = json.load(open(p))
        data["manifests"].reverse()
        open(p, "w").write(json.dumps(data, separators=(",", ":")))
        import hashlib
        d = hashlib.sha256(open(p, "rb").read()).hexdigest()
        os.rename(p, os.path.dirname(p) + "/" + d)
        idx["manifests"][0]["digest"] = "sha256:" + d
        json.dump(idx, open("dist/oci/orion-api/index.json", "w"))
    else:
        b = bytearray(open(p, "rb").read()); b[len(b) // 2] ^= 1; open(p, "wb").write(bytes(b))
''')
    (bin_dir / "make").chmod(0o755)


@pytest.mark.parametrize("flip,expect", [
    (None, "OK: "),
    ("arm64/orion-worker", "first differing file: dist/arm64/orion-worker"),
    ("blob:", "first difference: platforms ['linux/amd64', 'linux/arm64'] vs ['linux/arm64', 'linux/amd64']"),
    ("sbom/orion-worker.cdx.json", "first differing file: dist/sbom/orion-worker.cdx.json"),
])
def test_verify_reproducible_names_the_first_difference(tmp_path, flip, expect):
    if not (OCI / "orion-api").is_dir():
        pytest.fail("run make release-images first", pytrace=False)
    fake_make(tmp_path / "bin", flip)
    env = {**os.environ, "REPRO_DIR": str(tmp_path / "repro"), "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", "-c", f"umask 022 && exec {REPO / 'scripts' / 'release-verify-reproducible.sh'}"],
                       env=env, capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert (r.returncode == 0) is (flip is None), out
    assert expect in out, out
