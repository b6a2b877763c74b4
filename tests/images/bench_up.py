#!/usr/bin/env python3
"""`make bench-up`: how long `make up` takes as a new user meets it. Figures, never pass/fail.

In a fresh clone of this tree (imagetest_util.fresh_clone: no target/, dist/, .venv), under a
private compose project, tag and free ports:

1. `make up STACK=app` to "api and worker healthy": everything a first run does (the build
   tools into .venv, the host's release build, the images, compose up, health);
2. the same again, warm: nothing to build, the same image loaded, containers kept;
3. `make up` (full stack) on this machine's engine: with no registry reachable it stops
   before building anything, and this is how long the answer takes. Where a registry
   answers, the full stack comes up instead and the line says so.

The shared cargo registry cache (~/.cargo/registry) and pip's cache are used as they are: a
machine that has never fetched the crates or wheels adds their download time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from imagetest_util import RUN_ID, free_port, fresh_clone, run  # noqa: E402


def make(clone: Path, env: dict[str, str], *args: str) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.monotonic()
    r = subprocess.run(["make", "--no-print-directory", *args], cwd=clone, env=env, capture_output=True, text=True,
                       timeout=3600)
    return time.monotonic() - t0, r


def containers(project: str) -> list[str]:
    return sorted(run("docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}").stdout.split())


def main() -> int:
    tag, project = f"bench-up-{RUN_ID[-6:]}", f"{RUN_ID}-bench-up"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MAKE", "MFLAGS", "ORION_", "UP_")) and k not in ("STACK", "TAG", "CARGO_TARGET_DIR")}
    env.update(COMPOSE_PROJECT_NAME=project, BIND_ADDR="127.0.0.1", API_PORT=str(free_port()),
               WORKER_PORT=str(free_port()), PROMETHEUS_PORT=str(free_port()), ALERTMANAGER_PORT=str(free_port()),
               GRAFANA_PORT=str(free_port()))
    rows = []
    with tempfile.TemporaryDirectory(prefix="orion-bench-up-") as tmp:
        clone = Path(tmp) / "orion"
        fresh_clone(clone)
        try:
            fresh, r = make(clone, env, "up", "STACK=app", f"TAG={tag}")
            if r.returncode != 0:
                print(r.stdout[-3000:], r.stderr[-3000:], file=sys.stderr)
                return 1
            before = containers(project)
            rows.append(("fresh clone: `make up STACK=app` to api and worker healthy", f"{fresh:.0f} s"))
            warm, r = make(clone, env, "up", "STACK=app", f"TAG={tag}")
            kept = "containers kept" if containers(project) == before else "containers recreated"
            rows.append(("warm re-run: `make up STACK=app`", f"{warm:.1f} s ({kept})" if r.returncode == 0 else "FAILED"))
            make(clone, env, "down", f"TAG={tag}")
            full, r = make(clone, env, "up", f"TAG={tag}")
            if r.returncode != 0 and "make up STACK=app" in r.stderr:
                first = next((line for line in r.stderr.splitlines() if "cannot pull" in line), "")
                rows.append(("`make up` (full stack), no registry: until it stops naming STACK=app",
                             f"{full:.1f} s ({first.strip()[:90]})"))
            else:
                rows.append(("`make up` (full stack)", f"{full:.0f} s, exit {r.returncode} (a registry answered)"))
        finally:
            make(clone, env, "down", f"TAG={tag}")
            run("docker", "rmi", f"orion-api:{tag}", f"orion-worker:{tag}", check=False)
    engine = run("docker", "version", "--format", "{{.Server.Version}}", check=False).stdout.strip()
    print(f"bench-up: Docker {engine}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}\n")
    print("| | |\n|---|---|")
    for what, figure in rows:
        print(f"| {what} | {figure} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
