"""Every repository path and every `pilaf_exp` module the docs, scripts and code comments cite
exists: a renamed or deleted file fails here, not in a newcomer's hands."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Where paths are cited: the top-level docs, docs/, CI, the Makefile, the scripts, and the code
# (docstrings, comments and help texts alike), its configs and the tests.
SOURCES = [
    *ROOT.glob("*.md"),
    *ROOT.glob("docs/**/*.md"),
    ROOT / ".ci" / "run",
    ROOT / "Makefile",
    *ROOT.glob("scripts/*.sh"),
    *ROOT.glob("pilaf_exp/**/*.py"),
    *(path for path in ROOT.glob("tests/**/*.py") if path != Path(__file__).resolve()),  # not its own examples
    *ROOT.glob("conf/**/*.yaml"),
    *ROOT.glob("sweeps/*.yaml"),
]
# The repository's own folders; what runs write (outputs/, multirun/, results/runs/) is not held, so not checked.
TOP = r"(?:pilaf_exp|tests|conf|sweeps|docs|scripts|\.ci)"
PATH = re.compile(rf"(?<![\w./-])(?:{TOP}/[\w./-]*|[A-Z][A-Z_]+\.md\b)")  # a path, or a top-level doc
MODULE = re.compile(r"(?<![\w./-])pilaf_exp(?:\.\w+)+")
TEMPLATE = "<{*$["  # a path cut at one of these is a pattern: only the part before it must exist


def cited_paths(text: str) -> list[str]:
    """Each cited path as far as it is literal: a template ('conf/sampler/<name>.yaml') down to its folder."""
    found = []
    for match in PATH.finditer(text):
        path = match.group().rstrip(".-/")
        following = text[match.end() : match.end() + 1]
        if following and following in TEMPLATE:
            path = match.group().rsplit("/", 1)[0]
        found.append(path)
    return found


def module_exists(dotted: str) -> bool:
    """pilaf_exp.a.b[.name]: a module or package, or a name a module defines."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:end])
        module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if module.is_file():
            rest = parts[end:]
            if not rest:
                return True
            defines = rf"^\s*(?:def|class)\s+{rest[0]}\b|^{rest[0]}\b[^=\n]*="
            return len(rest) == 1 and re.search(defines, module.read_text(), re.MULTILINE) is not None
    return False


def missing_in(source: Path) -> list[str]:
    text = source.read_text()
    paths = [p for p in cited_paths(text) if not (ROOT / p).exists()]
    modules = [m for m in MODULE.findall(text) if not module_exists(m.rstrip("."))]
    return sorted(set(paths + modules))


def test_every_cited_path_exists():
    assert len(SOURCES) > 100  # the globs found the tree
    missing = {str(source.relative_to(ROOT)): cited for source in SOURCES if (cited := missing_in(source))}
    assert missing == {}, "cited but not in the repository"


def test_the_check_catches_a_missing_path_and_module(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "See `tests/test_slurm.py`, `pilaf_exp/report/run_outputs.py`, `python -m pilaf_exp.report.results`, "
        "HISTORY.md;\nfine: `conf/sampler/<name>.yaml`, `pilaf_exp.report.tables.write_report`, README.md, "
        "`tests/infra/test_slurm.py`.\n"
    )
    missing = ["HISTORY.md", "pilaf_exp.report.results", "pilaf_exp/report/run_outputs.py", "tests/test_slurm.py"]
    assert missing_in(doc) == missing
