"""The release binaries in dist/ that the images copy: static, stripped, auditable, and the
arm64 ones are real aarch64 executables (run under qemu-user, for this smoke test only:
they are cross-compiled, never built under emulation)."""

from __future__ import annotations

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
    cmd = [request.getfixturevalue("qemu")] if arch == "arm64" else []
    for svc, expect in (("api", True), ("worker", False)):
        r = run(*cmd, str(binary(arch, svc)), "--version", check=False, timeout=30,
                env={"MIMALLOC_VERBOSE": "1", "PATH": "/usr/bin:/bin"})
        assert r.returncode == 0, r.stderr
        assert ("mimalloc:" in r.stderr) is expect, (svc, r.stderr[:500])


@pytest.fixture(scope="module")
def qemu() -> str:
    exe = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
    if exe is None:
        missing("qemu-aarch64 not installed (Debian package: qemu-user): arm64 smoke test not run")
    return exe


@pytest.mark.parametrize("svc", SERVICES)
def test_arm64_binary_runs_under_qemu(qemu, svc):
    r = run(qemu, str(binary("arm64", svc)), "--version", check=False, timeout=30)
    assert r.returncode == 0, r.stderr
    assert f"orion-{svc}" in r.stdout and VERSION in r.stdout, r.stdout


@pytest.mark.parametrize("svc", SERVICES)
def test_arm64_healthcheck_fails_fast_when_nothing_listens(qemu, svc):
    """The arm64 build of the probe the images' HEALTHCHECK runs: exit 1, within its 2 s."""
    port_var = SERVICES[svc][0]
    r = run(qemu, str(binary("arm64", svc)), "healthcheck", check=False, timeout=30,
            env={port_var: str(free_port()), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
