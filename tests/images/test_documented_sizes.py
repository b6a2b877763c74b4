"""The sizes docs/images.md states are the sizes of what was built.

The table between `<!-- sizes:start -->` and `<!-- sizes:end -->` gives, per service, the amd64
and arm64 binaries (`make build`'s dist/), the image as `docker image inspect` reports it, and
`docker save | gzip` of it (level 6, as `make bench-images` measures). Each must be within
TOLERANCE of the artefact, so a figure that drifts turns this test red instead of misleading a
reader; the failure message prints the line to write.
"""

from __future__ import annotations

import gzip
import re
import subprocess

import pytest

from imagetest_util import REPO, SERVICES, image, inspect

DOC = REPO / "docs" / "images.md"
TOLERANCE = 0.03  # relative
MB = 1_000_000
ROWS = {
    "amd64 binary": "amd64",
    "arm64 binary": "arm64",
    "image, uncompressed": "image",
    "image, compressed": "compressed",
}


def documented() -> dict[tuple[str, str], float]:
    """(what, service) -> MB, from the marked table."""
    text = DOC.read_text(encoding="utf-8")
    m = re.search(r"<!-- sizes:start -->\n(.*?)<!-- sizes:end -->", text, re.S)
    assert m, f"{DOC.relative_to(REPO)} has no <!-- sizes:start --> ... <!-- sizes:end --> table"
    rows = [ln for ln in m.group(1).splitlines() if ln.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    services = [h.removeprefix("orion-") for h in header[1:]]
    assert services == list(SERVICES), f"size table columns {header[1:]}, want orion-{list(SERVICES)}"
    out = {}
    for row in rows[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))]
        what = next((key for label, key in ROWS.items() if cells[0].startswith(label)), None)
        assert what, f"unknown size row {cells[0]!r} (known: {list(ROWS)})"
        for svc, cell in zip(services, cells[1:]):
            v = re.fullmatch(r"(\d+(?:\.\d+)?) MB", cell)
            assert v, f"size cell {cell!r} (row {cells[0]!r}) is not 'N.NN MB'"
            out[(what, svc)] = float(v.group(1))
    assert set(out) == {(w, s) for w in ROWS.values() for s in SERVICES}, f"size table rows: {sorted(out)}"
    return out


def check(what: str, svc: str, actual_bytes: int) -> None:
    stated = documented()[(what, svc)]
    actual = actual_bytes / MB
    assert abs(actual - stated) <= TOLERANCE * actual, (
        f"{DOC.relative_to(REPO)} says the {what} size of orion-{svc} is {stated:.2f} MB; "
        f"it is {actual:.2f} MB ({actual_bytes} bytes): write {actual:.2f} MB"
    )


def test_the_table_is_read():
    assert len(documented()) == len(ROWS) * len(SERVICES)


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
@pytest.mark.parametrize("svc", SERVICES)
def test_binary_size_is_documented(arch, svc):
    path = REPO / "dist" / arch / f"orion-{svc}"
    assert path.exists(), f"{path} is missing: run `make build`"
    check(arch, svc, path.stat().st_size)


@pytest.mark.parametrize("svc", SERVICES)
def test_image_size_is_documented(docker, svc):
    check("image", svc, int(inspect(image(svc), "{{.Size}}")))


@pytest.mark.parametrize("svc", SERVICES)
def test_compressed_image_size_is_documented(docker, svc):
    saved = subprocess.run(["docker", "save", image(svc)], capture_output=True, check=True, timeout=60).stdout
    check("compressed", svc, len(gzip.compress(saved, compresslevel=6)))
