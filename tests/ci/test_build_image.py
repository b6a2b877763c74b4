"""scripts/ci-build-image.sh (the build job's image build and push) against a stand-in docker.

Split out of test_deploy_script.py so the build's owner can change it with the build script.
"""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from conftest import DIGEST_A, REGISTRY, ROOT, kv, run, tool_env


def fake_bin(dir_: Path, name: str, body: str) -> None:
    p = dir_ / name
    p.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)


def build_sandbox(tmp_path: Path, amd64_machine: int, arm64_machine: int) -> Path:
    """A copy of the build scripts next to fake dist/ binaries (only the ELF header matters)."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    for name in ("ci-build-image.sh", "ci-retry.sh"):
        shutil.copy2(ROOT / "scripts" / name, root / "scripts" / name)
    shutil.copy2(ROOT / "Cargo.toml", root / "Cargo.toml")
    for arch, machine in (("amd64", amd64_machine), ("arm64", arm64_machine)):
        d = root / "dist" / arch
        d.mkdir(parents=True)
        header = b"\x7fELF" + b"\x02\x01\x01" + b"\x00" * 9 + b"\x02\x00" + machine.to_bytes(2, "little")
        for svc in ("api", "worker"):
            (d / f"orion-{svc}").write_bytes(header + b"\x00" * 64)
    return root


def fake_buildx(bin_dir: Path, log: Path, fail_times: int) -> None:
    """docker buildx build that fails `fail_times` times, then writes buildx's metadata file."""
    bin_dir.mkdir(exist_ok=True)
    fake_bin(bin_dir, "docker", f'''
echo "$*" >>{log}
n=$(wc -l <{log})
[ "$n" -gt {fail_times} ] || {{ echo "push: 502 Bad Gateway" >&2; exit 1; }}
while [ $# -gt 0 ]; do
  if [ "$1" = --metadata-file ]; then printf '{{"containerimage.digest": "{DIGEST_A}"}}' >"$2"; fi
  shift
done
''')


def test_build_pushes_with_attestations_and_retries_registry_hiccups(tmp_path):
    root = build_sandbox(tmp_path, 62, 183)
    log, out = tmp_path / "docker.log", tmp_path / "github_output"
    fake_buildx(tmp_path / "bin", log, fail_times=2)
    env = tool_env(PUSH="true", TAGS=f"{REGISTRY}/orion-worker:uat {REGISTRY}/orion-worker:sha-0123456",
                   RETRY_DELAY="0", GITHUB_OUTPUT=str(out), REVISION="r1")
    env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}"
    res = run([str(root / "scripts" / "ci-build-image.sh"), "worker"], env=env, cwd=root)
    assert res.returncode == 0, res.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == 3, "two 502s, then success"
    cmd = calls[-1]
    for part in ("buildx build", "--platform linux/amd64,linux/arm64", "Dockerfile.scratch",
                 "--build-arg SERVICE=worker", "--build-arg EXPOSE_PORT=9091", "--build-arg REVISION=r1",
                 "--sbom=true", "--provenance=mode=max", "--push",
                 f"--tag {REGISTRY}/orion-worker:uat", f"--tag {REGISTRY}/orion-worker:sha-0123456"):
        assert part in cmd, part
    assert kv(out.read_text()) == {"digest": DIGEST_A, "image": f"{REGISTRY}/orion-worker@{DIGEST_A}"}


def test_build_gives_up_after_the_attempts(tmp_path):
    root = build_sandbox(tmp_path, 62, 183)
    log = tmp_path / "docker.log"
    fake_buildx(tmp_path / "bin", log, fail_times=99)
    env = tool_env(PUSH="true", TAGS=f"{REGISTRY}/orion-api:dev", RETRY_DELAY="0", ATTEMPTS="3")
    env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}"
    res = run([str(root / "scripts" / "ci-build-image.sh"), "api"], env=env, cwd=root)
    assert res.returncode != 0 and len(log.read_text().splitlines()) == 3
    assert "failed 3 time(s)" in res.stderr


def test_pull_request_build_pushes_nothing(tmp_path):
    root = build_sandbox(tmp_path, 62, 183)
    log, out = tmp_path / "docker.log", tmp_path / "github_output"
    fake_buildx(tmp_path / "bin", log, fail_times=0)
    env = tool_env(PUSH="false", TAGS=f"{REGISTRY}/orion-api:latest", GITHUB_OUTPUT=str(out))
    env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}"
    res = run([str(root / "scripts" / "ci-build-image.sh"), "api"], env=env, cwd=root)
    assert res.returncode == 0, res.stderr
    cmd = log.read_text()
    assert "--push" not in cmd and "--output type=image,push=false" in cmd
    assert "--platform linux/amd64,linux/arm64" in cmd
    assert not out.exists() or "digest" not in out.read_text()


def test_build_refuses_a_binary_of_the_wrong_architecture(tmp_path):
    root = build_sandbox(tmp_path, 62, 62)  # an x86-64 file where the arm64 binary belongs
    log = tmp_path / "docker.log"
    fake_buildx(tmp_path / "bin", log, fail_times=0)
    env = tool_env(PUSH="false", TAGS=f"{REGISTRY}/orion-api:dev")
    env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}"
    res = run([str(root / "scripts" / "ci-build-image.sh"), "api"], env=env, cwd=root)
    assert res.returncode != 0 and "expected 183 for arm64" in res.stderr
    assert not log.exists(), "docker must not be called"
