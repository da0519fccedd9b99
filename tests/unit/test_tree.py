"""The tree stands alone and its map is true: no file names a path outside the repository, and
docs/architecture.md names every module of the agent."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import ROOT

SRC = ROOT / "src/tetragon"
GENERATED = ("api/gen/", "k8s/gen/", "_bpfobj/")
# a path that leaves the repository: the workspace's shared folder or an absolute workspace path
OUTSIDE = re.compile(r"\.\./shared\b|/work/(?:shared|main)\b")


def _tracked_text_files() -> list[Path]:
    files: list[Path] = []
    for top in ("src", "tests", "bench", "docs"):
        for path in (ROOT / top).rglob("*"):
            rel = path.relative_to(ROOT).as_posix()
            if not path.is_file() or "__pycache__" in rel or any(g in rel for g in GENERATED):
                continue
            if path.suffix in {".py", ".md", ".sh", ".c", ".h", ".yaml", ".yml", ".json", ".txt", ".proto"}:
                files.append(path)
    files.append(ROOT / "Makefile")
    return files


def test_no_file_names_a_path_outside_the_repository() -> None:
    offenders = []
    this = Path(__file__).resolve()
    for path in _tracked_text_files():
        if path.resolve() == this:
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not offenders, "\n".join(offenders)


def _modules() -> list[str]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if path.name == "__init__.py" or any(rel.startswith(g) for g in GENERATED):
            continue
        out.append(rel)
    assert len(out) > 50
    return out


def test_architecture_names_every_module() -> None:
    doc = (ROOT / "docs/architecture.md").read_text()
    # a module is named as `dir/name.py`, `dir/name` or, inside its package's row, `name.py`
    missing = [
        rel
        for rel in _modules()
        if f"`{rel}`" not in doc and f"`{rel[:-3]}`" not in doc and f"{Path(rel).name}" not in doc
    ]
    assert not missing, "docs/architecture.md does not name: " + ", ".join(missing)
