"""README's quick start shows `curl .../health` and its answer: that answer is the real binary's.

The shipped API (`make build`'s dist/<arch>/orion-api, ORION_BIN_DIR) runs on a free port with the
local stack's environment name, and its /health body must equal the one README prints, field for
field, except the timestamp, which must have the same shape.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from doctext import REPO, code_blocks

BIN_DIR = Path(os.environ.get("ORION_BIN_DIR", REPO / "dist" / "amd64"))
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def readme_health_answer() -> tuple[str, dict]:
    """The curl command of /health in README and the JSON line printed after it."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    for _info, body in code_blocks(text):
        lines = body.splitlines()
        for i, line in enumerate(lines):
            if re.search(r"\bcurl\b.*localhost:8000/health\b", line):
                rest = [ln for ln in lines[i + 1 :] if ln.strip()]
                assert rest and rest[0].lstrip().startswith("{"), (
                    f"README: the line after `{line.strip()}` should be its answer, not {rest[:1]}"
                )
                return line, json.loads(rest[0])
    pytest.fail("README has no code block with `curl ... localhost:8000/health` and its answer")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def api():
    binary = BIN_DIR / "orion-api"
    assert binary.exists(), f"{binary} is missing: run `make build` (make test-docs does)"
    port = free_port()
    # The local stack's settings (docker-compose.yml: NODE_ENV=development).
    env = {"PATH": "/usr/bin:/bin", "PORT": str(port), "NODE_ENV": "development", "LOG_LEVEL": "warn"}
    proc = subprocess.Popen([str(binary)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert proc.poll() is None, f"orion-api exited {proc.returncode}: {proc.stderr.read().decode()}"
                assert time.monotonic() < deadline, "orion-api did not listen within 10 s"
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_readme_health_answer_is_the_real_one(api):
    command, shown = readme_health_answer()
    with urllib.request.urlopen(f"http://127.0.0.1:{api}/health", timeout=5) as r:
        assert r.status == 200
        real = json.loads(r.read())
    assert sorted(shown) == sorted(real), f"README shows fields {sorted(shown)}, the API answers {sorted(real)}"
    for key, value in real.items():
        if key == "timestamp":
            assert TIMESTAMP.match(value), f"the API's timestamp {value!r} is not shaped as this test expects"
            assert TIMESTAMP.match(shown[key]), f"README's timestamp {shown[key]!r} is not shaped like {value!r}"
        else:
            assert shown[key] == value, f"README shows {key}={shown[key]!r}, the API answers {value!r}"
