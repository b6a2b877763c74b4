"""Every relative link in README.md, ARCHITECTURE.md and docs/**/*.md resolves, anchors included,
and every alert's runbook_url names a heading that exists.

A link is what GitHub renders: inline links and images, reference definitions; code spans and
fenced blocks are not links. A relative target must exist in the repository (file or folder);
`#fragment` must be an anchor of the file it points into (doctext.anchors: GitHub's slugs).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from doctext import REPO, anchors, is_external, links, markdown_files

# Where alerts send a reader: the file on GitHub's default branch.
BLOB = "https://github.com/OrionLynn19/orionPL/blob/main/"


def check_target(source: Path, target: str) -> str | None:
    """Why `target`, linked from `source`, does not resolve (None when it does)."""
    path, _, fragment = target.partition("#")
    dest = source if not path else (source.parent / path).resolve()
    if not path and not fragment:
        return "empty link"
    try:
        dest.relative_to(REPO)
    except ValueError:
        return f"{path} leaves the repository"
    if not dest.exists():
        return f"{path} does not exist"
    if fragment:
        if dest.is_dir() or dest.suffix != ".md":
            return f"#{fragment} on {path}, which is not a Markdown file"
        if fragment not in anchors(dest):
            return f"{dest.relative_to(REPO)} has no heading with anchor #{fragment}"
    return None


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(doc):
    broken = []
    for line, target in links(doc):
        if is_external(target):
            continue
        why = check_target(doc, target)
        if why:
            broken.append(f"{doc.relative_to(REPO)}:{line}: ({target}): {why}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_manual_is_reachable_from_the_front_door():
    """Every page of docs/ is linked from README.md or docs/README.md (the index), so no page is
    written that nobody can find."""
    linked = set()
    for index in (REPO / "README.md", REPO / "docs" / "README.md"):
        for _, target in links(index):
            if not is_external(target) and target.partition("#")[0]:
                linked.add((index.parent / target.partition("#")[0]).resolve())
    pages = [p for p in (REPO / "docs").glob("*.md") if p.name != "README.md"]
    assert pages, "docs/ has no pages"
    orphans = [str(p.relative_to(REPO)) for p in pages if p.resolve() not in linked]
    assert not orphans, f"docs pages that neither README.md nor docs/README.md link: {orphans}"
    records = [r for r in (REPO / "docs" / "decisions").glob("*.md") if r.name != "README.md"]
    for record in records:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}-[a-z0-9-]+\.md", record.name), (
            f"{record.name}: decision records are named YYYY-MM-DD-topic.md"
        )


def runbook_urls() -> list[tuple[str, str]]:
    """(file, url) for every runbook_url in the shipped rules and their promtool tests."""
    out = []
    for path in sorted((REPO / "monitoring").glob("*.y*ml")):
        for url in re.findall(r"runbook_url:\s*['\"]?(\S+?)['\"]?\s*$", path.read_text(), re.M):
            out.append((path.name, url))
    return out


def test_rule_files_are_found():
    files = {f for f, _ in runbook_urls()}
    assert {"alerts.yaml", "slo.yaml"} <= files, files


@pytest.mark.parametrize("where,url", runbook_urls(), ids=lambda v: v if "://" not in v else v.rsplit("/", 1)[-1])
def test_runbook_url_names_an_existing_heading(where, url):
    assert url.startswith(BLOB), f"{where}: runbook_url {url} is not a file of this repository's default branch"
    target = url[len(BLOB):]
    assert "#" in target, f"{where}: runbook_url {url} names no heading"
    why = check_target(REPO / "README.md", target)  # README sits at the repository root
    assert why is None, f"{where}: runbook_url {url}: {why}"


def test_every_alert_has_a_runbook_url():
    """The shipped rules (not the tests) are what reaches a person: each alert says where to go."""
    for name in ("alerts.yaml", "slo.yaml"):
        doc = yaml.safe_load((REPO / "monitoring" / name).read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    assert rule.get("annotations", {}).get("runbook_url"), f"{name}: {rule['alert']} has no runbook_url"
