"""The release binaries in dist/ that the images copy: static, stripped, auditable, and the
arm64 ones are real aarch64 executables (run under qemu-user, for this smoke test only:
they are cross-compiled, never built under emulation)."""

from __future__ import annotations

import os
import re
import shutil
import tomllib

import pytest

from imagetest_util import REPO, SERVICES, elf_facts, embedded_dependencies, free_port, missing, run

VERSION = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["package"]["version"]
ARCHES = {
    # dist dir: (ELF e_machine, what `file` calls it)
    "amd64": (62, "x86-64"),
    "arm64": (183, "ARM aarch64"),
}
BINARIES = [(arch, svc) for arch in ARCHES for svc in SERVICES]


def binary(arch: str, svc: str):
    p = REPO / "dist" / arch / f"orion-{svc}"
    assert p.is_file(), f"{p} missing: run `make build`"
    return p


def dependency_list(arch: str, svc: str) -> dict:
    """The crate list cargo auditable embeds in dist/'s binary."""
    return embedded_dependencies(binary(arch, svc))


@pytest.mark.parametrize("arch,svc", BINARIES)
def test_binary_is_static_stripped_for_its_arch(arch, svc):
    path = binary(arch, svc)
    if shutil.which("file") is None:
        missing("`file` is not installed (Debian package: file)")
    desc = run("file", "-b", str(path)).stdout
    assert ARCHES[arch][1] in desc, desc
    # x86_64 musl links static-pie, aarch64 plain static: both have no interpreter.
    assert "statically linked" in desc or "static-pie linked" in desc, desc
    assert "dynamically linked" not in desc and "interpreter" not in desc, desc
    assert "not stripped" not in desc and "stripped" in desc, desc
    facts = elf_facts(path.read_bytes())
    assert facts["machine"] == ARCHES[arch][0]
    assert not facts["interp"], "PT_INTERP present: the binary needs a dynamic loader"
    assert ".symtab" not in facts["sections"], "symbol table present: not stripped"


@pytest.mark.parametrize("arch,svc", BINARIES)
def test_binary_embeds_its_dependency_list(arch, svc):
    """cargo auditable's .dep-v0 section lists every crate, so scanners can see inside."""
    deps = dependency_list(arch, svc)
    names = {p["name"]: p for p in deps["packages"]}
    root = [p for p in deps["packages"] if p.get("root")]
    assert [p["name"] for p in root] == [f"orion-{svc}"], root
    assert root[0]["version"] == VERSION
    assert "orion-shared" in names and "tiny_http" in names, sorted(names)
    if svc == "worker":
        assert "saffron" in names and "chrono-tz" in names, sorted(names)


@pytest.mark.parametrize("arch", ARCHES)
def test_api_binary_runs_on_mimalloc(arch, request):
    """The API's allocator is mimalloc on both architectures (README, Dependencies: musl's
    malloc cost a third of its CPU under load); the worker keeps musl's. Asked of the running
    binary, not of the crate list: MIMALLOC_VERBOSE makes mimalloc report its start-up."""
    assert "mimalloc" in {p["name"] for p in dependency_list(arch, "api")["packages"]}
    for svc, expect in (("api", True), ("worker", False)):
        args = (str(binary(arch, svc)), "--version")
        env = {"MIMALLOC_VERBOSE": "1", "PATH": "/usr/bin:/bin"}
        r = request.getfixturevalue("arm64")(*args, env=env) if arch == "arm64" else run(
            *args, check=False, timeout=30, env=env)
        assert r.returncode == 0, r.stderr
        assert ("mimalloc:" in r.stderr) is expect, (svc, r.stderr[:500])


@pytest.fixture(scope="module")
def qemu() -> str:
    exe = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
    if exe is None:
        missing("qemu-aarch64 not installed (Debian package: qemu-user): arm64 smoke test not run")
    return exe


# What says the emulation, not the program's logic, failed: qemu-user's own report of a guest
# signal it could not handle ("qemu: uncaught target signal 11 (Segmentation fault) - core
# dumped", qemu linux-user/signal.c dump_core_and_abort, printed when a core was written),
# the process dying by that signal (without the line when no core is written), and the
# kernel refusing to execute the emulator (ENOEXEC, "Exec format error"). qemu's other
# messages (a missing loader, a bad argument) are the binary's fault: plain test failures.
QEMU_OWN_FAILURE = re.compile(r"qemu: uncaught target signal \d+[^\n]*", re.IGNORECASE)


def emulation_error(qemu: str, args: tuple[str, ...], returncode: int | None, stderr: str) -> str | None:
    """The GitHub workflow command that states an emulator failure, or None. scripts/ci-rerun.py
    re-runs a job only on what the runner and its tools state as `::error::` (never on a test's
    output), so the smoke test states it; it still fails the test."""
    m = QEMU_OWN_FAILURE.search(stderr)
    if m:
        why = m.group(0).strip()
    elif returncode is not None and returncode < 0:
        why = f"killed by signal {-returncode}"
    elif "exec format error" in stderr.lower():
        why = "Exec format error"
    else:
        return None
    shown = " ".join(os.path.relpath(a, REPO) if a.startswith("/") else a for a in args)
    what = f"emulation error: {os.path.basename(qemu)} failed running {shown}: {why}"
    # Workflow-command escaping of the message (actions/toolkit: %, CR, LF).
    what = what.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return f"::error title=emulation error::{what}"


@pytest.fixture()
def arm64(qemu, capsys):
    """Runs an arm64 binary under qemu; when the emulation fails, says so to GitHub Actions (an
    annotation titled "emulation error") past pytest's capture, then lets the test fail as
    before."""
    def state(command: str | None) -> None:
        if command and os.environ.get("GITHUB_ACTIONS") == "true":
            with capsys.disabled():
                # On a line of its own: the runner takes a workflow command only where a line
                # starts with "::" (actions/runner src/Runner.Common/ActionCommand.cs,
                # TryParseV2), and pytest's progress dots may be mid-line.
                print(f"\n{command}", flush=True)

    def go(*args: str, env: dict | None = None):
        try:
            r = run(qemu, *args, check=False, timeout=30, env=env)
        except OSError as err:
            state(emulation_error(qemu, args, None, str(err)))
            raise
        state(emulation_error(qemu, args, r.returncode, r.stderr))
        return r
    return go


@pytest.mark.parametrize("returncode,stderr,stated", [
    (-11, "qemu: uncaught target signal 11 (Segmentation fault) - core dumped\n",
     "qemu: uncaught target signal 11 (Segmentation fault) - core dumped"),
    (-11, "", "killed by signal 11"),
    (None, "[Errno 8] Exec format error: '/usr/bin/qemu-aarch64'", "Exec format error"),
    (1, "orion-api: cannot connect to 127.0.0.1:8000: Connection refused\n", None),
    (255, "qemu-aarch64: Could not open '/lib/ld-linux-aarch64.so.1': No such file or directory\n", None),
    (0, "mimalloc: process init\n", None),
])
def test_only_the_emulators_own_failures_are_stated(returncode, stderr, stated):
    """What the arm64 fixture tells GitHub Actions (and so what ci-rerun.py may re-run)."""
    args = (str(REPO / "dist" / "arm64" / "orion-api"), "--version")
    command = emulation_error("/usr/bin/qemu-aarch64", args, returncode, stderr)
    if stated is None:
        assert command is None
    else:
        assert command == (
            f"::error title=emulation error::emulation error: qemu-aarch64 failed running dist/arm64/orion-api --version: {stated}")


@pytest.mark.parametrize("svc", SERVICES)
def test_arm64_binary_runs_under_qemu(arm64, svc):
    r = arm64(str(binary("arm64", svc)), "--version")
    assert r.returncode == 0, r.stderr
    assert f"orion-{svc}" in r.stdout and VERSION in r.stdout, r.stdout


@pytest.mark.parametrize("svc", SERVICES)
def test_arm64_healthcheck_fails_fast_when_nothing_listens(arm64, svc):
    """The arm64 build of the probe the images' HEALTHCHECK runs: exit 1, within its 2 s."""
    port_var = SERVICES[svc][0]
    r = arm64(str(binary("arm64", svc)), "healthcheck", env={port_var: str(free_port()), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
