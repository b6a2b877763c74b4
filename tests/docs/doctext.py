"""Reading the repository's Markdown as GitHub renders it: headings and their anchors, links, the
`<!-- section:NAME -->` blocks other suites test, and code.

One copy for every suite that reads the docs (tests/docs, tests/monitoring, tests/k8s, tests/ci
import it by path): the slug rules and the section lookup must not drift between them.

GitHub's anchor for a heading, as Flet/github-slugger (v1.5 README and test/fixtures.json)
emulates it: the heading's plain text, lower-cased; every character that is not a letter
(Unicode letters included), digit, `-`, `_` or space dropped; each space turned into `-`, one
by one (`😄 emoji` -> `-emoji`). A repeated slug in one file gets `-1`, `-2`, ... in order.
Inline code and emphasis marks are not text (dropped as punctuation), a link contributes its
text only, and an HTML tag contributes nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# The Markdown a reader meets: the front door, the map, and the manual.
def markdown_files() -> list[Path]:
    return [REPO / "README.md", REPO / "ARCHITECTURE.md", *sorted((REPO / "docs").rglob("*.md"))]


_FENCE = re.compile(r"^\s{0,3}(```|~~~)")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out, fence = [], None
    for n, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if m:
            if fence is None:
                fence = m.group(1)
            elif line.strip().startswith(fence):
                fence = None
            continue
        if fence is None:
            out.append((n, line))
    return out


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(info string, body) of every fenced code block."""
    return re.findall(r"^\s{0,3}```([^\n`]*)\n(.*?)^\s{0,3}```\s*$", text, re.S | re.M)


def github_slug(heading: str) -> str:
    text = re.sub(r"<[^>]+>", "", heading)  # HTML tags
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links and images: their text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def headings(text: str) -> list[tuple[int, str]]:
    """(level, heading text) of every ATX heading outside code."""
    return [(len(m.group(1)), m.group(2)) for _, line in prose_lines(text) if (m := _HEADING.match(line))]


def anchors(path: Path) -> set[str]:
    """Every fragment a link into `path` may name: heading slugs (duplicates suffixed as GitHub
    does) and explicit `<a id>`/`<a name>` anchors."""
    text = path.read_text(encoding="utf-8")
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, title in headings(text):
        slug = github_slug(title)
        if slug in seen:
            seen[slug] += 1
            found.add(f"{slug}-{seen[slug]}")
        else:
            seen[slug] = 0
            found.add(slug)
    found |= set(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", text))
    return found


_INLINE_CODE = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s+<?(\S+?)>?(?:\s|$)")


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every inline link, image and reference definition outside code."""
    out = []
    for n, line in prose_lines(path.read_text(encoding="utf-8")):
        line = _INLINE_CODE.sub("", line)
        out += [(n, t) for t in _LINK.findall(line)]
        if m := _REF_DEF.match(line):
            out.append((n, m.group(1)))
    return out


def is_external(target: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I)) or target.startswith("//")


def section(name: str) -> tuple[Path, str]:
    """The one `<!-- section:NAME -->` ... `<!-- /section:NAME -->` block among the Markdown files,
    and the file it is in. Other suites test what these blocks say, wherever a page keeps them."""
    start, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    hits = []
    for path in markdown_files():
        text = path.read_text(encoding="utf-8")
        if start in text:
            assert end in text, f"{path.relative_to(REPO)}: section {name!r} is not closed"
            hits.append((path, text[text.index(start) + len(start) : text.index(end)]))
    assert hits, f"no Markdown file has <!-- section:{name} -->"
    assert len(hits) == 1, f"section {name!r} is in {[str(p.relative_to(REPO)) for p, _ in hits]}: one place only"
    return hits[0]


def section_text(name: str) -> str:
    return section(name)[1]
