"""Stand-in images for prom/prometheus and prom/alertmanager, built from Debian's binaries
(the servers and, at upstream's paths, promtool and amtool).

The upstream images cannot be pulled on this machine, so the compose test runs these instead:
Debian's `prometheus` and `prometheus-alertmanager` executables plus the shared libraries `ldd`
lists, in a FROM scratch image with the upstream layout (tests/images/standins/Dockerfile.*).
Tagged orion-standin/<name>:debian-<version> so nobody mistakes them for upstream; rebuilt
when the Debian binary or this recipe changes (their sha256 is a label).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from imagetest_util import run

HERE = Path(__file__).resolve().parent / "standins"
# name -> (Debian executable, path in the image)
STANDINS = {
    "prometheus": ("prometheus", "bin/prometheus"),
    "alertmanager": ("prometheus-alertmanager", "bin/alertmanager"),
}
# The tools upstream ships beside the server, at the same paths (prom/prometheus: /bin/promtool;
# prom/alertmanager: /bin/amtool): scripts/monitoring-upstream-check.sh runs them.
TOOLS = {
    "prometheus": [("promtool", "bin/promtool")],
    "alertmanager": [("amtool", "bin/amtool")],
}
# Data files Debian's builds read at run time instead of embedding them (upstream embeds them):
# the web UI assets, and Alertmanager's default notification template (without it no
# notification is ever sent: "failed to parse templates").
DATA = {
    "prometheus": [Path("/usr/share/prometheus/web")],
    "alertmanager": [Path("/usr/share/prometheus/alertmanager")],
}
PASSWD = "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


def _executable(name: str) -> Path:
    path = shutil.which(name)
    assert path, f"{name} is not installed: run `make deps` (Debian package {name})"
    return Path(path).resolve()


def _version(exe: Path) -> str:
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    match = re.search(r"version (\d+\.\d+\.\d+)", out.stdout + out.stderr)
    assert match, out.stdout + out.stderr
    return match.group(1)


def _libraries(exe: Path) -> list[Path]:
    out = subprocess.run(["ldd", str(exe)], capture_output=True, text=True).stdout
    if "not a dynamic executable" in out:
        return []
    return [Path(p) for p in re.findall(r"(?:=>\s*)?(/\S+)\s+\(0x", out)]


def tag(name: str) -> str:
    exe, _ = STANDINS[name]
    return f"orion-standin/{name}:debian-{_version(_executable(exe))}"


def build(name: str) -> str:
    """Builds (or reuses) the stand-in image for `name`; returns its tag."""
    exe_name, target = STANDINS[name]
    exe = _executable(exe_name)
    tools = [(_executable(t), dest) for t, dest in TOOLS[name]]
    digest = hashlib.sha256(exe.read_bytes() + b"".join(t.read_bytes() for t, _ in tools) + Path(__file__).read_bytes()
                            + (HERE / f"Dockerfile.{name}").read_bytes()).hexdigest()
    ref = tag(name)
    have = run("docker", "image", "inspect", "-f", '{{index .Config.Labels "orion.standin.sha256"}}', ref, check=False)
    if have.returncode == 0 and have.stdout.strip() == digest:
        return ref
    with tempfile.TemporaryDirectory(prefix=f"standin-{name}-") as tmp:
        ctx = Path(tmp)
        root = ctx / "rootfs"
        (root / target).parent.mkdir(parents=True)
        shutil.copy2(exe, root / target)
        for tool, dest in tools:
            shutil.copy2(tool, root / dest)
        for lib in {lib for e in [exe, *(t for t, _ in tools)] for lib in _libraries(e)}:
            dest = root / lib.relative_to("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lib.resolve(), dest)
        for data in DATA[name]:
            assert data.is_dir(), f"{data} missing (Debian package {exe_name})"
            shutil.copytree(data, root / data.relative_to("/"))
        (root / "etc" / name).mkdir(parents=True)
        (root / "etc" / "passwd").write_text(PASSWD)
        (root / "etc" / "group").write_text(GROUP)
        (root / "etc" / "nsswitch.conf").write_text("hosts: files dns\n")
        (ctx / "data").mkdir()
        shutil.copy(HERE / f"Dockerfile.{name}", ctx / "Dockerfile")
        run("docker", "build", "--quiet", "--label", f"orion.standin.sha256={digest}", "-t", ref, str(ctx),
            env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/bin:/bin:/usr/local/bin"}, timeout=300)
    return ref
