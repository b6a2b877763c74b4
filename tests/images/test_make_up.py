"""`make up`, the front door, on the Docker people have today.

- The prerequisites it checks are README's list, and each missing one gets its own line.
- `make images` (what `make up` runs to get the images into Docker) reaches the engine only
  through the docker CLI: it passes with a `skopeo` first on PATH that fails on any
  `docker-daemon:` argument the way Docker 29 makes Ubuntu 24.04's skopeo fail, and with a
  `docker` that refuses `save --platform` the way every engine below API 1.48 does.
- Without a registry, `make up` (full stack) stops within seconds naming `make up STACK=app`,
  having built nothing.
- From a fresh clone, `make up STACK=app` brings api and worker up healthy, with that skopeo.
- `make help` lists every target, and every `make X` README, ARCHITECTURE.md and docs/ name.

What the stand-ins fake is quoted from upstream in their docstrings. Not proven here: Docker
25-29 themselves and Docker Desktop (this machine's engine is 20.10; the CLI-side behaviour
of newer engines is what the stand-ins reproduce).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imagetest_util import REPO, RUN_ID, TAG, free_port, fresh_clone, http_get, inspect, run

PREFLIGHT = REPO / "scripts" / "up-preflight.sh"
LOCAL_IMAGE = REPO / "scripts" / "local-image.py"
MAKE = shutil.which("make") or "make"

# skopeo issue 2802 (https://github.com/containers/skopeo/issues/2802, "Skopeo available in GH
# Action ubuntu image is too old for docker-daemon", 2026-02-15): Ubuntu 24.04's skopeo 1.13.3
# speaks Docker API 1.41 and Docker 29 raised its minimum to 1.44, so `skopeo copy ...
# docker-daemon:...` ends with exactly this line (logrus fatal, exit 1). Debian 12's 1.9.3 (API
# 1.22) met the same from Docker 25 on (skopeo#2202, containers/image#2259).
SKOPEO_DOCKER29 = ('time="2026-02-15T12:19:58Z" level=fatal msg="writing blob: starting a load operation in docker '
                   'engine: Error response from daemon: client version 1.41 is too old. Minimum supported API '
                   'version is 1.44, please upgrade your client to a newer version"')
# docker/cli v28, cli/command/image/save.go: the --platform flag is annotated "version": "1.48";
# cmd/docker/docker.go (areFlagsSupported) refuses it below that, before any request, exit 1.
# Seen on this machine with the real client 28.2.2 and engine 20.10 (API 1.41).
SAVE_PLATFORM_REFUSED = '"--platform" requires API version 1.48, but the Docker daemon API version is 1.41'
# What `docker pull` prints when the daemon cannot reach Docker Hub (moby's registry client,
# Go's resolver error; seen on this machine, engine 20.10, no registry reachable).
PULL_NO_REGISTRY = ('Error response from daemon: Get "https://registry-1.docker.io/v2/": dial tcp: lookup '
                    'registry-1.docker.io on 10.255.255.53:53: no such host')


def write_exe(path: Path, body: str) -> None:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def skopeo_docker29(bin_dir: Path, log: Path) -> None:
    """`skopeo` as Ubuntu 24.04's 1.13.3 behaves against Docker 29: any `docker-daemon:`
    reference fails with the message quoted in skopeo issue 2802 (SKOPEO_DOCKER29 above), exit 1.
    Every call is recorded; other references go to the real skopeo when there is one."""
    real = shutil.which("skopeo")
    passthrough = f'exec {real} "$@"' if real else 'echo "skopeo stand-in: no real skopeo" >&2; exit 127'
    write_exe(bin_dir / "skopeo", f"""echo "skopeo $*" >>{log}
for a in "$@"; do
  case "$a" in docker-daemon:*) echo '{SKOPEO_DOCKER29}' >&2; exit 1 ;; esac
done
{passthrough}
""")


def docker_below_api_1_48(bin_dir: Path, log: Path, extra: str = "") -> None:
    """`docker` as the CLI behaves against an engine below API 1.48 (Docker 20.10-27):
    `docker save`/`docker image save` with --platform is refused with the CLI's own message
    (SAVE_PLATFORM_REFUSED above: docker/cli cli/command/image/save.go's annotation, checked in
    cmd/docker/docker.go), exit 1. Every call is recorded; `extra` is bash run first (a
    stand-in's answer for some commands); everything else goes to the real docker CLI."""
    real = shutil.which("docker")
    assert real, "docker CLI not found"
    write_exe(bin_dir / "docker", f"""echo "docker $*" >>{log}
{extra}
if [ "$1" = save ] || [ "$1 $2" = "image save" ]; then
  for a in "$@"; do
    case "$a" in --platform|--platform=*) echo '{SAVE_PLATFORM_REFUSED}' >&2; exit 1 ;; esac
  done
fi
exec {real} "$@"
""")


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def make_env(bin_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MAKE", "MFLAGS", "ORION_", "UP_")) and k not in ("STACK", "TAG", "LOG_LEVEL")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env.update(extra)
    return env


# ---------------------------------------------------------------- prerequisites -----------

def readme_prerequisites() -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(r"<!-- prerequisites:start -->\n(.*?)<!-- prerequisites:end -->", text, flags=re.S)
    listed = run("bash", str(PREFLIGHT), "list").stdout
    assert m, ("README.md has no <!-- prerequisites:start --> ... <!-- prerequisites:end --> block; it must hold "
               f"exactly what `make up` checks (scripts/up-preflight.sh list):\n{listed}")
    return m.group(1)


def test_readme_prerequisites_are_what_make_up_checks():
    listed = run("bash", str(PREFLIGHT), "list").stdout
    assert [line.strip() for line in readme_prerequisites().strip().splitlines()] == listed.strip().splitlines()


# The host tools the check looks for, and one executable that stands for each.
PREREQ_EXES = {"docker": ["docker"], "compose": ["docker-compose"], "rustup": ["rustup"], "cc": ["cc"],
               "python3": ["python3"]}
BASICS = ["bash", "sed", "grep", "mktemp", "rm", "cat", "sleep", "tail", "dirname", "env"]


def preflight_tools(tmp_path: Path, leave_out: str | None, make_version: str = "4.3"):
    """up-preflight.sh tools with a PATH of only the basics and the prerequisites (without
    `leave_out`); the docker stand-in has no compose plugin, so compose is docker-compose."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in BASICS:
        os.symlink(shutil.which(name), bin_dir / name)
    for prereq, exes in PREREQ_EXES.items():
        if prereq == leave_out:
            continue
        for exe in exes:
            if exe == "docker":
                write_exe(bin_dir / "docker", 'case "$1" in compose) exit 1 ;; *) exit 0 ;; esac\n')
            elif exe == "python3":  # the interpreter itself, not a pyenv shim (a bash script)
                os.symlink(Path(sys.executable).resolve(), bin_dir / "python3")
            else:
                write_exe(bin_dir / exe, "exit 0\n")
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "CARGO_HOME": str(tmp_path / "cargo"),
           "MAKE_VERSION": make_version}
    return subprocess.run([str(bin_dir / "bash"), str(PREFLIGHT), "tools"], env=env, capture_output=True,
                          text=True, timeout=30)


def test_preflight_passes_when_everything_is_there(tmp_path):
    r = preflight_tools(tmp_path, None)
    assert r.returncode == 0 and r.stderr == "", r.stderr


@pytest.mark.parametrize("missing", [*PREREQ_EXES, "make"])
def test_preflight_names_each_missing_prerequisite_with_how_to_get_it(tmp_path, missing):
    r = preflight_tools(tmp_path, missing, make_version="3.81" if missing == "make" else "4.3")
    assert r.returncode == 1, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("up: missing: ")]
    assert len(lines) == 1, r.stderr
    # the prerequisite's line of the list (README's), then how to get it
    entry = {"docker": "- Docker: ", "compose": "- Docker Compose: ", "make": "- GNU make ", "rustup": "- rustup: ",
             "cc": "- a C compiler", "python3": "- Python 3"}[missing]
    listed = run("bash", str(PREFLIGHT), "list").stdout.splitlines()
    (item,) = [line for line in listed if line.startswith(entry)]
    assert lines[0].startswith("up: missing: " + item[2:] + ". Get it: ") and len(lines[0]) > len(item) + 30, lines[0]


def test_scripts_on_the_make_up_path_parse_as_python_3_9():
    """README promises Python 3.9: the grammar of what `make up` runs with the system python."""
    for path in (LOCAL_IMAGE, REPO / "monitoring" / "verify_stack.py"):
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))


# ---------------------------------------------------------------- local-image.py ----------

def local_image(tmp_path: Path, dockerfile: str, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "dist" / "amd64").mkdir(parents=True, exist_ok=True)
    (tmp_path / "dist" / "amd64" / "orion-api").write_bytes(b"\x7fELF fake")
    (tmp_path / "Dockerfile").write_text(dockerfile)
    return run("python3", str(LOCAL_IMAGE), "--arch", "amd64", "--created", "0", "--out", str(tmp_path / "o.tar"),
               "--dockerfile", str(tmp_path / "Dockerfile"), "--context", str(tmp_path),
               "--image", "api:8000=orion-api:t", *args, check=False)


HEAD = "FROM scratch\nARG SERVICE\nARG EXPOSE_PORT\n"


@pytest.mark.parametrize("dockerfile,message", [
    (HEAD + "RUN true\nCOPY dist/amd64/orion-${SERVICE} /orion\n", "line 4: RUN is not supported"),
    ("FROM debian\nCOPY x /orion\n", "line 1: only one stage, FROM scratch"),
    (HEAD + "COPY dist/arm64/orion-${SERVICE} /orion\n", "does not exist"),
    (HEAD + "COPY dist/amd64/orion-${SERVICE} /orion\nENTRYPOINT /orion\n", "exec form"),
    (HEAD + "COPY dist/amd64/orion-${SERVICE} /orion\nEXPOSE ${NOPE}\n", "$NOPE is not an ARG"),
])
def test_local_image_refuses_what_it_does_not_understand(tmp_path, dockerfile, message):
    r = local_image(tmp_path, dockerfile)
    assert r.returncode == 1 and message in r.stderr, r.stderr
    assert not (tmp_path / "o.tar").exists()


def test_local_image_refuses_unknown_build_args(tmp_path):
    r = local_image(tmp_path, HEAD + "COPY dist/amd64/orion-${SERVICE} /orion\n", "--build-arg", "VERSON=1")
    assert r.returncode == 1 and "['VERSON'] are not ARGs" in r.stderr, r.stderr


def test_local_image_archive_is_byte_for_byte_repeatable(tmp_path):
    """Same inputs, same bytes: a re-run loads the same image, so compose keeps its containers."""
    dockerfile = (REPO / "Dockerfile.scratch").read_text()
    first = local_image(tmp_path, dockerfile)
    assert first.returncode == 0, first.stderr
    one = (tmp_path / "o.tar").read_bytes()
    second = local_image(tmp_path, dockerfile)
    assert second.returncode == 0 and (tmp_path / "o.tar").read_bytes() == one
    assert first.stdout == second.stdout and first.stdout.startswith("orion-api:t sha256:")


# ---------------------------------------------------------------- make help ---------------

def help_targets() -> set[str]:
    out = run(MAKE, "--no-print-directory", "-C", str(REPO), "help", env=make_env(Path("/nonexistent"))).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def phony_targets() -> set[str]:
    """Every .PHONY target of the Makefile and mk/*.mk, from make's own database."""
    db = run(MAKE, "--no-print-directory", "-C", str(REPO), "-pRrq", "-f", "Makefile", ":", check=False,
             env=make_env(Path("/nonexistent"))).stdout
    names: set[str] = set()
    for line in db.splitlines():
        if line.startswith(".PHONY:"):
            names.update(line.split(":", 1)[1].split())
    assert {"up", "images", "test"} <= names, "could not read .PHONY from make's database"
    return names


def test_make_help_lists_every_target():
    missing = phony_targets() - help_targets()
    assert not missing, f"targets without a `## ` help line (make help hides them): {sorted(missing)}"


def doc_commands(text: str):
    """Command lines in Markdown: every line of a fenced block and every inline code span."""
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S):
        yield from block.splitlines()
    yield from re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))


def make_targets_named(text: str) -> set[str]:
    """The X of every `make X ...` (and `VAR=v make X`, `a && make X`) in the text's code.
    Tables in code blocks (`make build   what it does`) count their first column only."""
    out: set[str] = set()
    for cmd in doc_commands(text):
        cmd = re.split(r"\s{2,}|\s#", cmd.strip())[0]
        for seg in re.split(r"&&|\|\||[;|]", cmd):
            words = seg.split()
            while words and (words[0] == "$" or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", words[0])):
                words.pop(0)
            if words[:1] != ["make"]:
                continue
            for w in words[1:]:
                if w.startswith("-") or "=" in w:
                    continue
                if not re.fullmatch(r"[a-z][a-z0-9_.-]*", w):
                    break
                out.add(w)
    return out


def test_make_help_lists_every_target_the_docs_name():
    docs = [REPO / "README.md", REPO / "ARCHITECTURE.md", *sorted((REPO / "docs").rglob("*.md"))]
    named = {t: str(p.relative_to(REPO)) for p in docs if p.is_file() for t in make_targets_named(p.read_text())}
    assert "up" in named and "test" in named, "no `make up` / `make test` found: the parser is broken"
    missing = {t: where for t, where in named.items() if t not in help_targets()}
    assert not missing, f"`make X` in the docs that make help does not list: {missing}"


def test_doc_command_parser():
    text = "Run `make up STACK=app` or `LOG_LEVEL=debug make up`.\n```bash\nmake build release-images\n" \
           "make images && make deploy-kind ORION_ENV=dev   # comment make nothing\nmake test-k8s  renders\n```\n" \
           "make sure prose is not a command; `make <target>` neither.\n"
    assert make_targets_named(text) == {"up", "build", "release-images", "images", "deploy-kind", "test-k8s"}


# ---------------------------------------------------------------- make images: docker CLI only

@pytest.fixture
def no_daemon_transport(tmp_path):
    """PATH with the Docker 29 skopeo and the API < 1.48 docker CLI first; their call log."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    skopeo_docker29(bin_dir, log)
    docker_below_api_1_48(bin_dir, log)
    return bin_dir, log


def test_standins_refuse_what_docker_29_and_old_engines_refuse(no_daemon_transport):
    bin_dir, log = no_daemon_transport
    r = run(str(bin_dir / "skopeo"), "copy", "oci:x:latest", "docker-daemon:orion-api:local", check=False)
    assert r.returncode == 1 and "Minimum supported API version is 1.44" in r.stderr
    r = run(str(bin_dir / "docker"), "save", "--platform", "linux/amd64", "-o", "/dev/null", "x", check=False)
    assert r.returncode == 1 and r.stderr.strip() == SAVE_PLATFORM_REFUSED


def test_make_images_reaches_docker_through_the_docker_cli_only(docker, no_daemon_transport):
    """The path `make up` takes to get its images into Docker (`make images`), exactly, under
    a private tag: it must work where skopeo's docker-daemon: and `save --platform` do not."""
    bin_dir, log = no_daemon_transport
    tag = f"{TAG}-cli-{RUN_ID[-6:]}"
    try:
        r = subprocess.run([MAKE, "--no-print-directory", "-C", str(REPO), "images", f"TAG={tag}"],
                           env=make_env(bin_dir), capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        made = calls(log)
        assert not [c for c in made if c.startswith("skopeo")], made
        assert any(c.startswith("docker load") for c in made), made
        for svc in ("api", "worker"):
            # the same bytes as the images test-images loaded: one deterministic path
            assert inspect(f"orion-{svc}:{tag}", "{{.Id}}") == inspect(f"orion-{svc}:{TAG}", "{{.Id}}")
    finally:
        run("docker", "rmi", f"orion-api:{tag}", f"orion-worker:{tag}", check=False)


# ---------------------------------------------------------------- make up without a registry

@pytest.mark.parametrize("registry", ["refused", "silent"])
def test_make_up_without_a_registry_stops_within_seconds_naming_stack_app(docker, tmp_path, registry):
    """Full-stack `make up` where no registry can be reached: before building anything it
    stops, in well under 30 s, and says `make up STACK=app`. `refused`: the daemon fails the
    pull at once (PULL_NO_REGISTRY, what this machine's engine answers); `silent`: the pull
    never answers (a firewall that drops packets), which the preflight's bound must cut."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    answer = (f"echo '{PULL_NO_REGISTRY}' >&2; exit 1" if registry == "refused" else "exec sleep 300")
    upstream = 'case "$*" in *prom/*|*grafana/*) exit 1 ;; esac'
    docker_below_api_1_48(bin_dir, log, extra=f"""
if [ "$1" = pull ]; then {answer}; fi
if [ "$1 $2" = "image inspect" ]; then {upstream}; fi
""")
    write_exe(bin_dir / "docker-compose", f'echo "docker-compose $*" >>{log}\nexit 1\n')
    skopeo_docker29(bin_dir, log)
    t0 = time.monotonic()
    r = subprocess.run([MAKE, "--no-print-directory", "-C", str(REPO), "up", f"TAG={TAG}-noreg"],
                       env=make_env(bin_dir), capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - t0
    assert r.returncode != 0, r.stdout + r.stderr
    assert elapsed < 30, f"make up took {elapsed:.1f}s to give up"
    assert "make up STACK=app" in r.stderr, r.stderr
    assert "cannot pull prom/prometheus" in r.stderr, r.stderr
    started = [c for c in calls(log)
               if re.match(r"docker (load|run|create|compose (up|ps))|docker-compose (up|ps)|skopeo", c)]
    assert not started, started
    assert "cargo" not in r.stdout + r.stderr, "it built something before giving up"


# ---------------------------------------------------------------- fresh clone -> healthy ---

def test_fresh_clone_make_up_stack_app_comes_up_healthy(docker, no_daemon_transport, tmp_path):
    bin_dir, log = no_daemon_transport
    clone = tmp_path / "orion"
    fresh_clone(clone)
    ports = {"API_PORT": str(free_port()), "WORKER_PORT": str(free_port())}
    tag = f"fresh-{RUN_ID[-6:]}"
    env = make_env(bin_dir, COMPOSE_PROJECT_NAME=f"{RUN_ID}-fresh", BIND_ADDR="127.0.0.1", **ports)
    env.pop("CARGO_TARGET_DIR", None)
    try:
        r = subprocess.run([MAKE, "--no-print-directory", "up", "STACK=app", f"TAG={tag}"], cwd=clone, env=env,
                           capture_output=True, text=True, timeout=1800)
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
        assert "Orion is up (api and worker healthy)" in r.stdout, r.stdout[-2000:]
        assert not [c for c in calls(log) if c.startswith("skopeo")]
        for svc, port_var in (("api", "API_PORT"), ("worker", "WORKER_PORT")):
            ids = run("docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={env['COMPOSE_PROJECT_NAME']}",
                      "--filter", f"label=com.docker.compose.service={svc}").stdout.split()
            assert len(ids) == 1, ids
            assert inspect(ids[0], "{{.State.Health.Status}}") == "healthy"
            assert inspect(ids[0], "{{.Config.Image}}") == f"orion-{svc}:{tag}"
            status, _ = http_get(f"http://127.0.0.1:{ports[port_var]}/health")
            assert status == 200
    finally:
        subprocess.run([MAKE, "--no-print-directory", "down", f"TAG={tag}"], cwd=clone, env=env,
                       capture_output=True, text=True, timeout=120)
        left = run("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={env['COMPOSE_PROJECT_NAME']}",
                   check=False).stdout.split()
        if left:
            run("docker", "rm", "-f", *left, check=False)
        run("docker", "rmi", f"orion-api:{tag}", f"orion-worker:{tag}", check=False)
