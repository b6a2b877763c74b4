"""Deployments give up before the deploy stops waiting for them.

scripts/deploy-lib.sh waits ROLLOUT_TIMEOUT (its default below) for each rollout and undoes the
deploy when one fails. A Deployment without progressDeadlineSeconds keeps the default 600 s
(apps/v1 DeploymentSpec), so after the job had given up and undone it, it would still be
"progressing"; with a deadline inside the wait, `kubectl rollout status` ends with
`deployment "x" exceeded its progress deadline` while the deploy is still watching.
"""
from __future__ import annotations

import re

import pytest

from conftest import OVERLAYS, REPO

DEPLOY_LIB = REPO / "scripts" / "deploy-lib.sh"


def rollout_wait_seconds() -> int:
    m = re.search(r'^ROLLOUT_TIMEOUT="\$\{ROLLOUT_TIMEOUT:-(\d+)s\}"$', DEPLOY_LIB.read_text(), re.M)
    assert m, "scripts/deploy-lib.sh no longer sets ROLLOUT_TIMEOUT's default in seconds"
    return int(m.group(1))


@pytest.mark.parametrize("render", [*OVERLAYS, "monitoring"])
def test_progress_deadline_is_inside_the_deploys_wait(renders, render):
    wait = rollout_wait_seconds()
    deployments = [d for d in renders[render] if d["kind"] == "Deployment"]
    assert deployments
    for d in deployments:
        deadline = d["spec"].get("progressDeadlineSeconds")
        name = d["metadata"]["name"]
        assert deadline is not None, f"{render}/{name}: no progressDeadlineSeconds (the default is 600 s)"
        # 10 s for kubectl to see the condition before its own --timeout.
        assert d["spec"].get("minReadySeconds", 0) < deadline <= wait - 10, (render, name, deadline, wait)
