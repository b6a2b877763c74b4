#!/usr/bin/env python3
"""Rewrite tests/ci/pinned-actions.yaml from the actions' own repositories.

  python3 tests/ci/refresh_pinned_actions.py GIT_DIR_OR_CLONE...

Each argument is a local clone (or bare git directory) of one action's repository, e.g.
`git clone --bare https://github.com/actions/checkout`, named <owner>+<name> or with a
`remote.origin.url` git can tell. For every `uses: owner/name[/path]@SHA # vX.Y.Z` in
.github/workflows, it checks in that clone that tag vX.Y.Z points at SHA (the commit, also
through an annotated tag) and reads `runs.using` and the input names of path/action.yml at
that commit, and the default of every input the workflows set (what the `with:` overrides,
e.g. the cosign release cosign-installer would install); it writes those facts, which
tests/ci/test_workflows.py then holds the workflows to (node24 or composite, every `with:`
key an input, no pin older than the action's own default). Run it after Dependabot (or
you) moved a pin; if a tag does not point at the pinned SHA it stops and says so.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "pinned-actions.yaml"
USES_RE = re.compile(r"^\s*(?:-\s+)?uses:\s*([\w.-]+/[\w.-]+)((?:/[\w./-]+)?)@([0-9a-f]{40})\s+#\s+(v\S+)\s*$")


def git(gitdir: Path, *args: str) -> str:
    return subprocess.run(["git", f"--git-dir={gitdir}", *args], check=True, capture_output=True,
                          text=True).stdout


def gitdir_of(path: Path) -> Path:
    return path / ".git" if (path / ".git").exists() else path


def repo_name(gitdir: Path) -> str:
    try:
        url = git(gitdir, "config", "remote.origin.url").strip()
        m = re.search(r"([\w.-]+)/([\w.-]+?)(?:\.git)?$", url)
        if m:
            return f"{m.group(1)}/{m.group(2)}"
    except subprocess.CalledProcessError:
        pass
    for part in gitdir.resolve().parts[::-1]:
        if "+" in part:
            return part.replace("+", "/", 1)
    raise SystemExit(f"cannot tell which repository {gitdir} is")


def main(argv: list[str]) -> int:
    clones = {repo_name(gitdir_of(Path(a))): gitdir_of(Path(a)) for a in argv}
    pins = {}
    set_inputs: dict[str, set[str]] = {}
    for wf in sorted((ROOT / ".github" / "workflows").glob("*.yml")):
        for job in (yaml.safe_load(wf.read_text()).get("jobs") or {}).values():
            for step in job.get("steps", []):
                if "@" in step.get("uses", ""):
                    set_inputs.setdefault(step["uses"].split("@")[0], set()).update(step.get("with") or {})
        for line in wf.read_text().splitlines():
            m = USES_RE.match(line)
            if m:
                repo, sub, sha, tag = m.group(1), m.group(2).strip("/"), m.group(3), m.group(4)
                pins[f"{repo}/{sub}".rstrip("/")] = (repo, sub, sha, tag)
    facts = []
    for action, (repo, sub, sha, tag) in sorted(pins.items()):
        gitdir = clones.get(repo)
        if gitdir is None:
            raise SystemExit(f"no clone of {repo} given (needed for {action}@{tag})")
        tagged = git(gitdir, "rev-parse", f"refs/tags/{tag}^{{commit}}").strip()
        if tagged != sha:
            raise SystemExit(f"{action}: tag {tag} is {tagged}, the workflows pin {sha}")
        meta = None
        for name in ("action.yml", "action.yaml"):
            try:
                meta = yaml.safe_load(git(gitdir, "show", f"{sha}:{sub + '/' if sub else ''}{name}"))
                break
            except subprocess.CalledProcessError:
                continue
        if meta is None:
            raise SystemExit(f"{action}: no action.yml at {sha}")
        facts.append({
            "action": action, "tag": tag, "sha": sha,
            "date": git(gitdir, "log", "-1", "--format=%cs", sha).strip(),
            "runs_using": str(meta["runs"]["using"]),
            "inputs": sorted((meta.get("inputs") or {}).keys()),
            "nested": sorted(s["uses"] for s in meta["runs"].get("steps", []) if "uses" in s),
            "defaults": {k: (str(v["default"]).lower() if isinstance(v["default"], bool) else str(v["default"]))
                         for k, v in sorted((meta.get("inputs") or {}).items())
                         if k in set_inputs.get(action, ()) and isinstance(v, dict) and v.get("default") is not None},
        })
    header = ("# Verified facts about every action the workflows pin, written by\n"
              "# tests/ci/refresh_pinned_actions.py from the actions' repositories (tag -> commit,\n"
              "# runs.using, input names and the defaults of the inputs the workflows set, of action.yml at\n"
              "# that commit). tests/ci/test_workflows.py\n"
              "# compares .github/workflows/*.yml against this file; do not edit it by hand.\n")
    OUT.write_text(header + yaml.safe_dump({"actions": facts}, sort_keys=False, width=110, default_flow_style=None))
    print(f"refresh_pinned_actions: {len(facts)} actions -> {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
