"""What zizmor and the JSON schema cannot see in .github/: the pipeline's own promises.

Each test reads the workflow files that ship (and runs the scripts they call), so editing
a workflow into breaking a promise fails here.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from conftest import MAPPING, ROOT, SHA, VENV_BIN, WORKFLOWS, kv, load_yaml, run, tool_env

# The one reader of the repository's Markdown (section markers, anchors), shared by the suites.
sys.path.insert(0, str(ROOT / "tests" / "docs"))
from doctext import section_text as docs_section  # noqa: E402

WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.y*ml"))
GITHUB_FILES = sorted(p for p in (ROOT / ".github").rglob("*") if p.is_file())
USES_RE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?P<rest>.*)$")
PINNED_RE = re.compile(r"^(?P<action>[\w.-]+/[\w.-]+(?:/[\w./-]+)?)@(?P<sha>[0-9a-f]{40})$")
VERSION_COMMENT_RE = re.compile(r"^\s+#\s+v\d+\.\d+\.\d+\s*$")
RUNNER = "ubuntu-24.04"
PINNED_FACTS = Path(__file__).resolve().parent / "pinned-actions.yaml"
# GitHub's runners run Node 24 only (Node 20 was removed); composite actions run no Node
# of their own (what they nest is listed in the facts file and pinned by SHA there).
RUNTIMES = {"node24", "composite"}


def pinned_facts() -> dict:
    return {a["action"]: a for a in yaml.safe_load(PINNED_FACTS.read_text())["actions"]}


def pinned_uses():
    """(file, line number, action, sha, tag, step) for every `uses:` of every workflow."""
    for path in WORKFLOW_FILES:
        lines = path.read_text().splitlines()
        doc = load_yaml(path)
        steps_by_uses = {}
        for job in doc["jobs"].values():
            for step in job.get("steps", []):
                if "uses" in step:
                    steps_by_uses.setdefault(step["uses"], []).append(step)
        for lineno, line in enumerate(lines, 1):
            m = USES_RE.match(line)
            if m:
                pinned = PINNED_RE.match(m.group("ref"))
                tag = m.group("rest").strip().lstrip("#").strip()
                if pinned:
                    for step in steps_by_uses.get(m.group("ref"), []):
                        yield path, lineno, pinned.group("action"), pinned.group("sha"), tag, step


def steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def step_named(job: dict, name: str) -> dict:
    found = [s for s in steps(job) if s.get("name") == name]
    assert len(found) == 1, f"expected one step named {name!r}, found {len(found)}"
    return found[0]


def uses_steps(doc: dict, prefix: str):
    for job_id, job in doc["jobs"].items():
        for step in steps(job):
            if step.get("uses", "").startswith(prefix):
                yield job_id, step


def test_there_are_workflows():
    names = {p.name for p in WORKFLOW_FILES}
    assert {"ci.yml", "rerun.yml"} <= names, names


def test_triggers_branches_and_concurrency(ci):
    on = ci["on"]
    assert sorted(on["push"]["branches"]) == sorted(MAPPING), "push must trigger on dev, uat and main only"
    assert on["pull_request"]["branches"] == ["main"]
    assert "workflow_dispatch" in on
    group = ci["concurrency"]["group"]
    assert "github.ref" in group, "one run per ref"
    # Superseded PR runs are cancelled; deploy branches queue (never kill a deploy halfway).
    assert ci["concurrency"]["cancel-in-progress"] == "${{ github.event_name == 'pull_request' }}"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_permissions_empty_at_top_and_explicit_per_job(path):
    doc = load_yaml(path)
    assert doc.get("permissions") == {}, f"{path.name}: top-level permissions must be {{}}"
    for job_id, job in doc["jobs"].items():
        perms = job.get("permissions")
        assert isinstance(perms, dict), f"{path.name}:{job_id} needs its own permissions block"
        assert all(v in ("read", "write") for v in perms.values()), (job_id, perms)
        assert "timeout-minutes" in job, f"{path.name}:{job_id} has no timeout-minutes"


def test_least_privilege_per_job(ci, rerun):
    expected = {
        "lint": {"contents": "read"},
        "test": {"contents": "read"},
        "audit": {"contents": "read"},
        "build": {"contents": "read", "packages": "write", "id-token": "write"},
        "scan": {"contents": "read", "packages": "read", "security-events": "write", "actions": "read"},
        "validate": {"contents": "read"},
        "deploy": {"contents": "read", "packages": "read", "id-token": "write"},
    }
    assert {j: ci["jobs"][j]["permissions"] for j in ci["jobs"]} == expected
    assert rerun["jobs"]["rerun"]["permissions"] == {"actions": "write", "checks": "read", "contents": "read"}


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_every_job_names_a_fixed_runner_image(path):
    """ubuntu-latest moved to 26.04 (Docker 29, containerd image store, Python 3.14) in
    October-November 2026; a job must say which image it was made for (docs/ci-cd.md)."""
    doc = load_yaml(path)
    for job_id, job in doc["jobs"].items():
        assert job.get("runs-on") == RUNNER, f"{path.name}:{job_id}: runs-on {job.get('runs-on')!r}, want {RUNNER}"
    code = [l.split("#")[0] for l in path.read_text().splitlines()]
    assert not [l for l in code if "-latest" in l], f"{path.name}: no *-latest runner label anywhere"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_every_action_pinned_by_full_sha_with_version_comment(path):
    pins: dict[str, tuple[str, str]] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        m = USES_RE.match(line)
        if not m:
            continue
        ref = m.group("ref")
        assert not ref.startswith(("./", "docker://")), f"{path.name}:{lineno}: only pinned remote actions here"
        pinned = PINNED_RE.match(ref)
        assert pinned, f"{path.name}:{lineno}: {ref} is not pinned to a 40-hex commit"
        assert VERSION_COMMENT_RE.match(m.group("rest")), f"{path.name}:{lineno}: needs a '# vX.Y.Z' comment"
        version = m.group("rest").strip().lstrip("#").strip()
        action, sha = pinned.group("action"), pinned.group("sha")
        repo = "/".join(action.split("/")[:2])
        # One version of an action per workflow: two SHAs for the same action is a half-done bump.
        if repo in pins:
            assert pins[repo] == (sha, version), f"{path.name}:{lineno}: {repo} pinned twice differently"
        pins[repo] = (sha, version)


def test_every_pin_is_a_verified_node24_release_and_every_input_exists():
    """tests/ci/pinned-actions.yaml holds what was checked in each action's repository (tag ->
    commit, runs.using, the inputs of action.yml at that commit); the workflows must match it."""
    facts = pinned_facts()
    seen = 0
    for path, lineno, action, sha, tag, step in pinned_uses():
        seen += 1
        where = f"{path.name}:{lineno} {action}"
        assert action in facts, f"{where}: not in {PINNED_FACTS.name}; run tests/ci/refresh_pinned_actions.py"
        fact = facts[action]
        assert (sha, tag) == (fact["sha"], fact["tag"]), \
            f"{where}@{sha} # {tag}: verified is {fact['sha']} # {fact['tag']} (refresh the facts file)"
        assert fact["runs_using"] in RUNTIMES, f"{where} {tag} runs on {fact['runs_using']}"
        unknown = set(step.get("with", {})) - set(fact["inputs"])
        assert not unknown, f"{where} {tag} has no input(s) {sorted(unknown)}"
        for nested in fact["nested"]:
            assert PINNED_RE.match(nested), f"{action} {tag} nests {nested}, not pinned by SHA"
    assert seen >= 10


def test_facts_file_records_node24_for_the_actions_that_were_node20():
    facts = pinned_facts()
    for action, first_node24 in (("actions/checkout", 5), ("docker/setup-buildx-action", 4),
                                 ("docker/login-action", 4)):
        if action in facts:
            assert int(facts[action]["tag"].lstrip("v").split(".")[0]) >= first_node24, action
    assert tuple(int(x) for x in facts["helm/kind-action"]["tag"].lstrip("v").split(".")[:2]) >= (1, 13)


def test_same_action_same_pin_across_workflows():
    seen: dict[str, str] = {}
    for path in WORKFLOW_FILES:
        for line in path.read_text().splitlines():
            m = USES_RE.match(line)
            if m:
                repo_at = m.group("ref")
                repo = "/".join(repo_at.split("@")[0].split("/")[:2])
                assert seen.setdefault(repo, repo_at.split("@")[1]) == repo_at.split("@")[1], repo


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_checkout_never_persists_credentials(path):
    doc = load_yaml(path)
    for job_id, step in uses_steps(doc, "actions/checkout@"):
        assert step.get("with", {}).get("persist-credentials") is False, f"{path.name}:{job_id}"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_no_expressions_inside_run(path):
    """Untrusted input (branch names, PR titles, outputs) reaches shell only through env:."""
    doc = load_yaml(path)
    for job_id, job in doc["jobs"].items():
        for step in steps(job):
            assert "${{" not in step.get("run", ""), f"{path.name}:{job_id}:{step.get('name')}: use env:"


def test_emulation_is_only_the_arm64_smoke_test_of_the_test_job(ci):
    """Nothing is built under QEMU: no setup-qemu-action, no binfmt, no RUN for arm64. The one
    use of emulation is tests/images running dist/arm64/* under qemu-aarch64, inside the test
    job's `make test`; the docs and the workflow's comments must say so (not "no QEMU anywhere")."""
    for path in GITHUB_FILES + sorted((ROOT / "scripts").glob("ci-*")):
        code = "\n".join(l.split(" #")[0] for l in path.read_text().lower().splitlines()
                         if not l.strip().startswith("#"))
        if path.name == "ci-rerun.py":
            continue  # it matches qemu's error messages in logs, as data
        for word in ("qemu", "binfmt", "setup-qemu-action"):
            assert word not in code, f"{path}: {word}"
    instructions = [
        l.split()[0].upper()
        for l in (ROOT / "Dockerfile.scratch").read_text().splitlines()
        if l.strip() and not l.lstrip().startswith("#") and not l.startswith((" ", "\t"))
    ]
    assert "RUN" not in instructions, "Dockerfile.scratch must only COPY (a RUN would need QEMU for arm64)"
    assert instructions[0] == "FROM" and "COPY" in instructions
    # Where emulation does happen, it is said.
    assert "qemu" in (ROOT / "tests" / "images" / "test_binaries.py").read_text()
    ci_text = (WORKFLOWS / "ci.yml").read_text()
    assert "no QEMU anywhere" not in ci_text and "qemu-aarch64" in ci_text
    cicd = docs_section("cicd")
    assert "qemu-aarch64" in cicd and "no QEMU anywhere" not in cicd


def test_job_graph(ci):
    jobs = ci["jobs"]
    assert set(jobs) == {"lint", "test", "audit", "build", "scan", "validate", "deploy"}
    assert sorted(jobs["build"]["needs"]) == ["lint", "test"]
    assert jobs["scan"]["needs"] == "build"
    assert jobs["validate"]["needs"] == "build"
    # Nothing is deployed that was not scanned, validated and audited.
    assert sorted(jobs["deploy"]["needs"]) == ["audit", "build", "scan", "validate"]
    assert jobs["deploy"]["if"] == "needs.build.outputs.deploy == 'true'"
    assert jobs["scan"]["if"] == "needs.build.outputs.push == 'true'"


def test_stages_call_make_targets_that_exist(ci):
    expected = {
        "lint": ["make lint"],
        "test": ["make test"],
        "audit": ["make audit"],
        "validate": ["make ci-validate"],
    }
    for job_id, cmds in expected.items():
        assert [s["run"].strip() for s in steps(ci["jobs"][job_id]) if "run" in s] == cmds, job_id
    build_runs = [s["run"].strip() for s in steps(ci["jobs"]["build"]) if "run" in s]
    assert build_runs[:2] == ["make ci-env", "make build"]
    deploy_runs = [s.get("run", "").strip() for s in steps(ci["jobs"]["deploy"])]
    assert "make deploy-kind" in deploy_runs and "make deploy-eks" in deploy_runs
    targets = {c.split()[1] for job in ci["jobs"].values() for s in steps(job)
               for c in s.get("run", "").splitlines() if c.strip().startswith("make ")}
    for target in sorted(targets):
        res = run(["make", "-n", target], timeout=60)
        assert res.returncode == 0 and "No rule to make target" not in res.stderr, (target, res.stderr)


def test_pull_requests_build_but_never_push(ci):
    build = ci["jobs"]["build"]
    push_gate = "steps.ci.outputs.push == 'true'"
    assert step_named(build, "Log in to GHCR")["if"] == push_gate
    assert step_named(build, "Install cosign")["if"] == push_gate
    assert step_named(build, "Sign images by digest")["if"] == push_gate
    for name in ("Build + push orion-api", "Build + push orion-worker"):
        assert step_named(build, name)["env"]["PUSH"] == "${{ steps.ci.outputs.push }}"
    # ... and the value is false for every pull request, whatever its target branch.
    for base in ("main", "dev", "feature"):
        res = run(["scripts/deploy-kind.sh", "ci-env"], env=tool_env(
            GITHUB_EVENT_NAME="pull_request", GITHUB_REF_NAME="7/merge", GITHUB_BASE_REF=base, GITHUB_SHA=SHA))
        assert res.returncode == 0, res.stderr
        out = kv(res.stdout)
        assert out["push"] == "false" and out["deploy"] == "false", (base, out)


@pytest.mark.parametrize("branch", sorted(MAPPING))
def test_branch_maps_to_env_tag_and_namespace(branch):
    want = MAPPING[branch]
    for event in ("push", "workflow_dispatch"):
        res = run(["scripts/deploy-kind.sh", "ci-env"], env=tool_env(
            GITHUB_EVENT_NAME=event, GITHUB_REF_NAME=branch, GITHUB_SHA=SHA))
        assert res.returncode == 0, res.stderr
        out = kv(res.stdout)
        assert out["env"] == want["env"]
        assert out["tag"] == want["tag"]
        assert out["namespace"] == want["namespace"]
        assert out["overlay"] == f"k8s/overlays/{want['env']}"
        assert out["sha_tag"] == "sha-0123456"
        assert out["push"] == out["deploy"] == "true"
        assert out["api_repo"] == "ghcr.io/orionlynn19/orion-api"
        assert out["worker_repo"] == "ghcr.io/orionlynn19/orion-worker"


def test_ci_env_writes_github_output_and_ignores_other_branches(tmp_path):
    out_file = tmp_path / "github_output"
    res = run(["scripts/deploy-kind.sh", "ci-env"], env=tool_env(
        GITHUB_EVENT_NAME="push", GITHUB_REF_NAME="feature/x", GITHUB_SHA=SHA, GITHUB_OUTPUT=str(out_file)))
    assert res.returncode == 0, res.stderr
    out = kv(out_file.read_text())
    assert out["push"] == "false" and out["deploy"] == "false" and out["env"] == "dev"
    bad = run(["scripts/deploy-kind.sh", "ci-env"], env=tool_env(
        GITHUB_EVENT_NAME="push", GITHUB_REF_NAME="dev", GITHUB_SHA="not-a-sha"))
    assert bad.returncode != 0


def test_image_tags_are_env_tag_plus_sha(ci):
    build = ci["jobs"]["build"]
    for svc in ("api", "worker"):
        # Folded YAML joins the two lines with one space; split between the two references.
        tags = re.split(r"(?<=\}\})\s+(?=\$\{\{)", step_named(build, f"Build + push orion-{svc}")["env"]["TAGS"])
        assert tags == [
            f"${{{{ steps.ci.outputs.{svc}_repo }}}}:${{{{ steps.ci.outputs.tag }}}}",
            f"${{{{ steps.ci.outputs.{svc}_repo }}}}:${{{{ steps.ci.outputs.sha_tag }}}}",
        ]
        assert step_named(build, f"Build + push orion-{svc}")["run"].strip() == f"scripts/ci-build-image.sh {svc}"


def test_signing_is_keyless_and_by_digest(ci):
    step = step_named(ci["jobs"]["build"], "Sign images by digest")
    assert step["env"] == {"API_IMAGE": "${{ steps.api.outputs.image }}",
                           "WORKER_IMAGE": "${{ steps.worker.outputs.image }}"}
    assert "cosign sign --yes" in step["run"] and "--key" not in step["run"]
    verify = step_named(ci["jobs"]["deploy"], "Verify signatures")["run"]
    assert "cosign verify" in verify and "token.actions.githubusercontent.com" in verify


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.lstrip("v").split("."))


def test_cosign_is_a_current_v3_that_verifies_with_the_tuf_trusted_root(ci):
    """cosign v2.4.x predates verification with the TUF trusted_root.json (v2.5); v3 makes it,
    and the Sigstore bundle, the default for sign/attest/verify (sigstore/cosign CHANGELOG,
    v3.0.0). Both jobs install the same cosign; never older than what the pinned installer
    itself bootstraps and checks by sha256 (its cosign-release default, in the facts file); no
    flag v3.1 deprecated (--new-bundle-format is the default now), no key: keyless only."""
    facts = pinned_facts()["sigstore/cosign-installer"]
    assert version_tuple(facts["tag"])[0] >= 4, facts["tag"]
    installs = [s for job in ci["jobs"].values() for s in steps(job)
                if s.get("uses", "").startswith("sigstore/cosign-installer@")]
    assert len(installs) == 2, "build (sign, attest) and deploy (verify)"
    releases = {s["with"]["cosign-release"] for s in installs}
    assert len(releases) == 1, releases
    (release,) = releases
    assert version_tuple(release) >= (3, 0, 0) and version_tuple(release) >= version_tuple(facts["defaults"]["cosign-release"])
    runs = [s["run"] for job in ci["jobs"].values() for s in steps(job) if "cosign " in s.get("run", "")]
    runs.append((ROOT / "scripts" / "release-attest.sh").read_text())
    for text in runs:
        for flag in ("--new-bundle-format", "--key", "--offline", "--tlog-upload", "--payload"):
            assert flag not in text, f"{flag} in {text[:80]!r}"


def test_eks_credentials_come_from_github_oidc_and_keys_are_only_a_fallback(ci):
    """configure-aws-credentials assumes `role-to-assume` with GitHub's OIDC token when no
    access key is given and the job may request one (aws-actions/configure-aws-credentials
    v6.2.3, src/index.ts useGitHubOIDCProvider; `id-token: write`), and exports AWS_* to the
    steps after. `id-token: write` is asked for by the jobs that need a token: build (cosign
    keyless) and deploy (AWS), nobody else."""
    deploy = ci["jobs"]["deploy"]
    with_token = sorted(j for j, job in ci["jobs"].items() if job["permissions"].get("id-token") == "write")
    assert with_token == ["build", "deploy"]
    names = [s.get("name") for s in steps(deploy)]
    oidc = step_named(deploy, "AWS credentials (GitHub OIDC, role-to-assume)")
    keys = step_named(deploy, "AWS credentials (long-lived keys, fallback)")
    assert names.index(oidc["name"]) < names.index(keys["name"]) < names.index("Deploy to EKS")
    for s in (oidc, keys):
        assert s["uses"].startswith("aws-actions/configure-aws-credentials@")
        assert "vars.EKS_CLUSTER_NAME != ''" in s["if"]
    assert oidc["with"]["role-to-assume"] == "${{ vars.AWS_ROLE_ARN }}" and "vars.AWS_ROLE_ARN != ''" in oidc["if"]
    assert not {"aws-access-key-id", "aws-secret-access-key"} & set(oidc["with"]), "keys would turn OIDC off"
    assert "vars.AWS_ROLE_ARN == ''" in keys["if"], "the keys only when no role is configured"
    assert keys["with"]["aws-access-key-id"] == "${{ secrets.AWS_ACCESS_KEY_ID }}"
    # A step's env wins over what an earlier step exported: setting AWS_* here would replace
    # the role's short-lived credentials (with empty strings when the secrets are unset).
    eks_env = step_named(deploy, "Deploy to EKS")["env"]
    assert not [k for k in eks_env if k.startswith("AWS_")], eks_env
    text = (WORKFLOWS / "ci.yml").read_text()
    assert text.count("secrets.AWS_ACCESS_KEY_ID") == 2, "the fallback step and the is-it-configured flag only"


def test_trivy_gates_on_critical_and_high_of_the_pushed_digest(ci):
    scan = ci["jobs"]["scan"]
    images = {i["service"]: i["image"] for i in scan["strategy"]["matrix"]["include"]}
    assert images == {"api": "${{ needs.build.outputs.api_image }}",
                      "worker": "${{ needs.build.outputs.worker_image }}"}
    assert scan["env"]["IMAGE"] == "${{ matrix.image }}"
    trivy = [s for s in steps(scan) if s.get("uses", "").startswith("aquasecurity/trivy-action@")]
    assert len(trivy) == 2
    for step in trivy:
        w = step["with"]
        assert w["image-ref"] == "${{ env.IMAGE }}"
        assert w["severity"] == "CRITICAL,HIGH"
        assert w["ignore-unfixed"] is True
    # The original pipeline's defect was exit-code 0 on its only run: it never blocked.
    gates = [s for s in trivy if str(s["with"]["exit-code"]) == "1"]
    assert len(gates) == 1 and gates[0]["with"]["format"] == "table", "exactly one gating Trivy run"
    sarif = [s for s in trivy if s["with"]["format"] == "sarif"]
    assert len(sarif) == 1
    assert sarif[0]["with"]["limit-severities-for-sarif"] is True
    upload = [s for s in steps(scan) if s.get("uses", "").startswith("github/codeql-action/upload-sarif@")]
    assert len(upload) == 1
    assert upload[0]["with"]["sarif_file"] == sarif[0]["with"]["output"]
    assert "!cancelled()" in upload[0]["if"], "findings must be uploaded even when the gate fails"
    assert steps(scan).index(sarif[0]) < steps(scan).index(upload[0])
    # Reporting only: a repository without code scanning answers 403, which must not fail
    # the scan job (and skip deploy). The table run above stays the only gate.
    assert upload[0].get("continue-on-error") is True
    assert all(s.get("continue-on-error") is not True for s in trivy)


def test_the_only_zizmor_ignore_is_the_documented_workflow_run():
    ignores = [(p.name, l) for p in GITHUB_FILES for l in p.read_text().splitlines() if "zizmor: ignore" in l]
    assert len(ignores) == 1, ignores
    name, line = ignores[0]
    assert name == "rerun.yml" and "ignore[dangerous-triggers]" in line and "workflow_run:" in line


def test_retries_around_network_steps():
    for path in (ROOT / "scripts" / "ci-build-image.sh", ROOT / "scripts" / "deploy-kind.sh"):
        assert "ci-retry.sh" in path.read_text(), path
    ci_text = (WORKFLOWS / "ci.yml").read_text()
    assert ci_text.count("scripts/ci-retry.sh 3 cosign") == 2


def test_deploy_uses_pinned_kind_and_github_environment(ci):
    deploy = ci["jobs"]["deploy"]
    assert deploy["environment"] == "${{ needs.build.outputs.env }}"
    kind = [s for s in steps(deploy) if s.get("uses", "").startswith("helm/kind-action@")]
    assert len(kind) == 1 and kind[0]["with"]["install_only"] is True
    script = (ROOT / "scripts" / "deploy-kind.sh").read_text()
    assert f'KIND_VERSION_EXPECTED="{kind[0]["with"]["version"]}"' in script
    assert re.search(r'KIND_NODE_IMAGE:-kindest/node:v[\d.]+@sha256:[0-9a-f]{64}\}', script), \
        "the kind node image must be pinned by digest"
    env = deploy["env"]
    assert env["ORION_API_IMAGE"] == "${{ needs.build.outputs.api_image }}"
    assert env["ORION_EXPECT_MANIFEST_SHA256"] == "${{ needs.validate.outputs.manifest_sha256 }}"
    eks = step_named(deploy, "Deploy to EKS")["env"]
    assert eks["EKS_CLUSTER_NAME"] == "${{ vars.EKS_CLUSTER_NAME }}"
    summary = step_named(deploy, "Deployment summary")
    assert summary["if"] == "${{ !cancelled() }}" and summary["run"] == "make deploy-summary"


def test_dependabot_covers_actions_and_cargo():
    doc = load_yaml(ROOT / ".github" / "dependabot.yml")
    ecosystems = {u["package-ecosystem"]: u for u in doc["updates"]}
    assert {"github-actions", "cargo"} <= set(ecosystems)
    assert ecosystems["cargo"]["directory"] == "/"


def test_docs_list_every_pinned_action_as_pinned():
    cicd = docs_section("cicd")
    for _path, _lineno, action, sha, tag, _step in pinned_uses():
        row = next((l for l in cicd.splitlines() if l.startswith(f"| {action} ")), None)
        assert row, f"docs/ci-cd.md has no row for {action}"
        assert f"| {tag} " in row and f"`{sha}`" in row, f"docs/ci-cd.md row for {action} is not {tag} {sha}: {row}"
    assert "ubuntu-24.04" in cicd and "refresh_pinned_actions.py" in cicd


def test_actionlint_is_real_and_runs_shellcheck_on_run_blocks(tmp_path):
    """`make lint-ci` runs actionlint over .github/workflows with 0 findings; this shows the
    pinned binary does find things (a job graph error and a shellcheck warning in `run:`)."""
    wf = tmp_path / ".github" / "workflows" / "bad.yml"
    wf.parent.mkdir(parents=True)
    wf.write_text("on: push\npermissions: {}\njobs:\n  a:\n    needs: [nope]\n    runs-on: ubuntu-24.04\n"
                  "    steps:\n      - run: echo $HOME/$1\n")
    res = run([str(VENV_BIN / "actionlint"), "-no-color", f"-shellcheck={VENV_BIN / 'shellcheck'}", str(wf)],
              cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert '"nope"' in res.stdout and "SC2086" in res.stdout, res.stdout
    clean = run([str(VENV_BIN / "actionlint"), "-no-color", f"-shellcheck={VENV_BIN / 'shellcheck'}",
                 *map(str, WORKFLOW_FILES)])
    assert clean.returncode == 0, clean.stdout + clean.stderr
