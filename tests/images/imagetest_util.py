"""Helpers shared by the image tests and bench_images.py (fixtures live in conftest.py).

The tests drive the real docker engine of this machine with the images `make images`
built (orion-api:$ORION_TAG, orion-worker:$ORION_TAG). Without an engine they are
SKIPPED with a loud reason, except under CI=true, where a missing engine (or qemu) is
a failure: CI must never go green by testing nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
import uuid
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TAG = os.environ.get("ORION_TAG", "local")
IN_CI = os.environ.get("CI") == "true"
# One label value per test session, so cleanup removes exactly what this run created.
RUN_ID = f"orion-imgtest-{os.getpid()}-{uuid.uuid4().hex[:6]}"
RUN_LABEL = f"orion.test.run={RUN_ID}"

SERVICES = {
    # service: (port env var, default port, uncompressed size limit in bytes)
    "api": ("PORT", 8000, 1_500_000),
    "worker": ("METRICS_PORT", 9091, 3_500_000),
}


def missing(what: str) -> None:
    """Skip loudly, or fail under CI=true."""
    msg = f"SKIPPED: {what}"
    if IN_CI:
        pytest.fail(f"{what} (CI=true: a missing tool is a failure)", pytrace=False)
    pytest.skip(msg)


def run(*args: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=timeout, **kw)


def image(service: str) -> str:
    return f"orion-{service}:{TAG}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def inspect(ref: str, fmt: str) -> str:
    return run("docker", "inspect", "-f", fmt, ref).stdout.strip()


def elf_facts(data: bytes) -> dict:
    """Just enough ELF64-LE parsing to answer: machine, PT_INTERP present, section names."""
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not a 64-bit little-endian ELF"
    (machine,) = struct.unpack_from("<H", data, 0x12)
    (phoff, shoff) = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", data, 0x36)
    ptypes = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab_off, strtab_size = headers[shstrndx][4], headers[shstrndx][5]
    strtab = data[strtab_off : strtab_off + strtab_size]
    sections = {}
    for name_off, _type, _flags, _addr, off, size in headers:
        name = strtab[name_off : strtab.index(b"\0", name_off)].decode()
        sections[name] = data[off : off + size]
    return {"machine": machine, "interp": 3 in ptypes, "dynamic": 2 in ptypes, "sections": sections}


def embedded_dependencies(path: Path) -> dict:
    """The crate list cargo auditable embeds in a binary (.dep-v0: zlib-compressed JSON)."""
    sections = elf_facts(path.read_bytes())["sections"]
    assert ".dep-v0" in sections, f"{path}: no .dep-v0 section: built without `cargo auditable`"
    return json.loads(zlib.decompress(sections[".dep-v0"]))


def fresh_clone(dest: Path) -> None:
    """A clone of HEAD plus this working tree's uncommitted changes (so what is on disk is
    what runs), and nothing else: no target/, dist/, .venv or .tmp."""
    run("git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(dest), timeout=300)
    changed = run("git", "-C", str(REPO), "ls-files", "-z", "--modified", "--others", "--exclude-standard").stdout
    for rel in filter(None, changed.split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    deleted = run("git", "-C", str(REPO), "ls-files", "-z", "--deleted").stdout
    for rel in filter(None, deleted.split("\0")):
        (dest / rel).unlink(missing_ok=True)
