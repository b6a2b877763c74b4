"""What makes README a front door and ARCHITECTURE a map, kept true as they are edited:
their length, the quick start on README's first screen, a vocabulary of this project (not of the
documents it was built from), and `make` targets that exist."""

from __future__ import annotations

import re

import pytest

from doctext import REPO, code_blocks, headings, links, markdown_files

README = REPO / "README.md"
ARCHITECTURE = REPO / "ARCHITECTURE.md"
README_MAX_LINES = 300
ARCHITECTURE_MAX_LINES = 200
FIRST_SCREEN = 60  # lines


def lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def test_readme_is_a_page_not_a_manual():
    n = len(lines(README))
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}): move detail to docs/"


def test_architecture_is_a_map():
    n = len(lines(ARCHITECTURE))
    assert n <= ARCHITECTURE_MAX_LINES, (
        f"ARCHITECTURE.md has {n} lines (at most {ARCHITECTURE_MAX_LINES}): history and figures go to docs/decisions/"
    )


def test_quick_start_is_on_the_first_screen():
    """A newcomer goes from clone to a curl answer reading only the first screen."""
    first = "\n".join(lines(README)[:FIRST_SCREEN])
    for needle in ("make up", "make up STACK=app", "curl", "http://localhost:8000/health", "make test",
                   "<!-- prerequisites:start -->", "<!-- prerequisites:end -->"):
        assert needle in first, f"README's first {FIRST_SCREEN} lines lack {needle!r}"


def test_readme_has_one_rendered_picture():
    """One diagram GitHub renders (Mermaid), not ASCII art."""
    kinds = [info.strip() for info, _ in code_blocks(README.read_text(encoding="utf-8"))]
    assert kinds.count("mermaid") == 1, f"README's code blocks: {kinds}"


def test_readme_says_the_job_is_a_stub_and_where_a_real_one_goes():
    text = README.read_text(encoding="utf-8")
    assert re.search(r"\bstub\b", text), "README must say the worker's job is a stub"
    assert "worker/src/job.rs" in text and "`Job`" in text, "README must say where a real job plugs in"


# Words of the documents Orion was built from, not of Orion. Comparisons belong in docs/.
FOREIGN = [
    (re.compile(r"\bspec(ification)?s?\b", re.I), "the specification"),
    (re.compile(r"design card", re.I), "the design card"),
    (re.compile(r"\bNode(\.js)?\b"), "the Node version"),
]


def test_readme_describes_this_project():
    for n, line in enumerate(lines(README), 1):
        for pattern, what in FOREIGN:
            assert not pattern.search(line), f"README.md:{n} speaks of {what}: {line.strip()!r}"


def make_targets() -> set[str]:
    targets = set()
    for mf in [REPO / "Makefile", *sorted((REPO / "mk").glob("*.mk"))]:
        targets |= set(re.findall(r"^([A-Za-z0-9_-]+)\s*:(?!=)", mf.read_text(), re.M))
    return targets


def make_commands(text: str) -> list[str]:
    """Targets of `make ...` commands in code: inline code spans and fenced shell blocks."""
    found = []
    spans = re.findall(r"`([^`\n]+)`", text)
    blocks = [b for info, b in code_blocks(text) if info.strip() in ("", "bash", "sh", "shell", "console")]
    for chunk in spans + [ln for b in blocks for ln in b.splitlines()]:
        for m in re.finditer(r"(?:^|&&\s*|;\s*|\$\s+|\|\s*)(?:[A-Z_]+=\S+\s+)*make\s+((?:[A-Z_]+=\S+\s+)*)([a-z][a-z0-9-]*)", chunk.strip()):
            found.append(m.group(2))
    return found


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_make_target_named_exists(doc):
    targets = make_targets()
    missing = sorted({t for t in make_commands(doc.read_text(encoding="utf-8")) if t not in targets})
    assert not missing, f"{doc.relative_to(REPO)} names make targets that no makefile defines: {missing}"


def test_make_command_finder_finds_commands():
    """The finder above is not vacuous."""
    assert make_commands("run `make up STACK=app` then `make bench-api`") == ["up", "bench-api"]
    assert make_commands("```bash\nmake test   # all\nTAG=x make images && make down\n```\n") == ["test", "images", "down"]
    assert make_commands("make sure of it") == []


def test_figures_name_the_target_that_prints_them():
    """Each benchmark section says which `make` target produces its figures."""
    text = (REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    sections = [t for level, t in headings(text) if level == 2]
    assert sections, "docs/benchmarks.md has no sections"
    for title in sections:
        m = re.search(r"`make ([a-z0-9-]+)`", title)
        assert m, f"docs/benchmarks.md section {title!r} does not name the make target that prints it"
        assert m.group(1) in make_targets(), f"{title!r}: no target {m.group(1)}"


def test_decision_records_are_indexed():
    index = REPO / "docs" / "decisions" / "README.md"
    linked = {(index.parent / t.partition("#")[0]).resolve() for _, t in links(index) if t.partition("#")[0]}
    for record in (REPO / "docs" / "decisions").glob("*.md"):
        if record.name != "README.md":
            assert record.resolve() in linked, f"docs/decisions/README.md does not list {record.name}"


def test_section_markers_are_unique_and_closed():
    """Other suites find a block by its `<!-- section:NAME -->` marker, in whichever page holds it:
    a name used twice, or a block left open, would make them read the wrong text."""
    seen: dict[str, str] = {}
    for doc in markdown_files():
        text = doc.read_text(encoding="utf-8")
        rel = str(doc.relative_to(REPO))
        for name in re.findall(r"<!-- section:([a-z0-9-]+) -->", text):
            assert name not in seen, f"section {name!r} is in both {seen[name]} and {rel}"
            seen[name] = rel
            assert text.count(f"<!-- /section:{name} -->") == 1, f"{rel}: section {name!r} is not closed once"
            assert text.index(f"<!-- section:{name} -->") < text.index(f"<!-- /section:{name} -->"), rel
    assert {"failure-scenarios", "monitoring", "metrics", "kubernetes", "cicd"} <= set(seen), sorted(seen)


UPSTREAM_IMAGE = re.compile(r"\b(prom/prometheus|prom/alertmanager|grafana/grafana):([A-Za-z0-9][\w.-]*)")


def compose_tags() -> dict[str, str]:
    """docker-compose.yml's tag of each upstream monitoring image: the one place they are written
    (k8s/render-monitoring.sh gives Kubernetes the same ones; Dependabot updates them there)."""
    text = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    return {m.group(1): m.group(2) for m in UPSTREAM_IMAGE.finditer(text)}


@pytest.mark.parametrize("doc", [d for d in markdown_files() if "decisions" not in d.parts],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_docs_name_the_monitoring_images_compose_runs(doc):
    """A page that names an upstream image names the tag that runs, not an older one.
    (Decision records are history and keep the versions of their day.)"""
    tags = compose_tags()
    assert set(tags) == {"prom/prometheus", "prom/alertmanager", "grafana/grafana"}, tags
    for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        for m in UPSTREAM_IMAGE.finditer(line):
            assert m.group(2) == tags[m.group(1)], (
                f"{doc.relative_to(REPO)}:{n} names {m.group(0)}; docker-compose.yml runs {m.group(1)}:{tags[m.group(1)]}")
